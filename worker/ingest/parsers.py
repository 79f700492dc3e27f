"""Read and parse article files across all cores: the parser process pool, and one file's read.

A parser process imports the parser and the value types, never the store (SQLAlchemy): the
cycle's import contract checks it. The pool's processes close the cycle lock they inherit,
ignore Ctrl-C (the cycle decides) and die with the process that started them.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from worker.model import Ingested, Touched

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    from worker.ingest.frontmatter import ParseLimits

__all__ = [
    "INLINE_BELOW",
    "ReadTask",
    "process_pool",
    "process_pool_of_one",
    "read_all",
    "read_article",
    "read_as_claimed",
    "start_parser_server",
]

INLINE_BELOW = 64  # fewer files than this are parsed without a process pool
CHUNK = 32  # files per task sent to a parser process
# What read_article needs, loaded before parser processes start so that none imports it again.
_PARSER_MODULES = ("worker.ingest.frontmatter", "worker.ingest.read", "worker.model")
# path, max_bytes, hash stored for it (None: read it whatever it holds), real path of its source folder
ReadTask = tuple[str, int, "str | None", str]


def read_all(
    tasks: Sequence[ReadTask], limits: ParseLimits, held_locks: Callable[[], Iterable[int]] = tuple
) -> Generator[Ingested | Touched, None, None]:
    """Read and parse files across all cores, yielding results in task order, with a bounded
    number of chunks in flight so memory does not grow with the corpus. `held_locks`: the
    descriptors of locks this process holds, which a forked parser must close."""
    if len(tasks) < INLINE_BELOW:
        for task in tasks:
            result = read_article(*task[:3], limits, task[3])
            if result is not None:
                yield result
        return
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    with process_pool(workers, held_locks) as pool:
        pending: deque[Future[list[Any]]] = deque()
        queue = iter(chunks)
        for chunk in _take(queue, workers * 3):
            pending.append(pool.submit(_read_chunk, chunk, limits))
        while pending:
            results = pending.popleft().result()
            for chunk in _take(queue, 1):
                pending.append(pool.submit(_read_chunk, chunk, limits))
            yield from (result for result in results if result is not None)


def read_as_claimed(
    claim: Callable[[], Sequence[ReadTask]],
    limits: ParseLimits,
    held_locks: Callable[[], Iterable[int]] = tuple,
    idle: Callable[[], bool] = lambda: False,
) -> Generator[tuple[Sequence[ReadTask], list[Ingested | Touched | None]], None, None]:
    """Read chunks of files as `claim()` hands them out (an empty one: none now), across all
    cores with one pool, yielding each chunk with its results in task order (None where a
    file vanished since the scan). With nothing claimed and nothing in flight, `idle()` says
    whether to claim again (having waited) or to end."""
    workers = max(1, min(os.cpu_count() or 1, 8))
    with process_pool(workers, held_locks) as pool:
        pending: deque[tuple[Sequence[ReadTask], Future[list[Any]]]] = deque()
        while True:
            while len(pending) < workers * 2:
                chunk = claim()
                if not chunk:
                    break
                pending.append((chunk, pool.submit(_read_chunk, chunk, limits)))
            if not pending:
                if idle():
                    continue
                return
            chunk, future = pending.popleft()
            yield chunk, future.result()


@contextmanager
def process_pool(workers: int, held_locks: Callable[[], Iterable[int]] = tuple) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for parsing and rendering, set up by _parser_init."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for name in _PARSER_MODULES:  # forked processes inherit them
        importlib.import_module(name)
    # fork is fastest, but unsafe once the process has threads (the server, the scheduler):
    # then children come from the fork server, started clean (see start_parser_server).
    single_threaded = threading.active_count() == 1
    context = multiprocessing.get_context("fork") if single_threaded else _parser_context()
    initargs = (tuple(held_locks()), os.getpid()) if single_threaded else ((), None)
    if single_threaded:
        # A forked child shares this process's memory until it writes to it, and the garbage
        # collector writes to every object it visits: frozen objects it leaves alone.
        gc.freeze()
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_parser_init, initargs=initargs) as pool:
            yield pool
    finally:
        if single_threaded:
            gc.unfreeze()


def process_pool_of_one(held_locks: Callable[[], Iterable[int]] = tuple) -> AbstractContextManager[ProcessPoolExecutor]:
    return process_pool(1, held_locks)


def _parser_context() -> Any:
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["worker._forkserver_guard", "worker.ingest.parsers", *_PARSER_MODULES])
    return context


def start_parser_server() -> None:
    """Start the fork server of the parser processes (call from the main thread at start-up).

    It is started with SIGINT ignored, a disposition that survives its exec: so it and every
    parser it forks ignore the Ctrl-C a terminal sends to the whole process group, from
    their first instruction on, and the cycle in the parent decides what to do.
    """
    from multiprocessing import forkserver

    _parser_context()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _parser_init(inherited_locks: tuple[int, ...] = (), parent: int | None = None) -> None:
    """Set up a parser process: no cycle lock, no SIGINT, and die with the parent.

    A forked child closes its copy of the cycle lock, or the lock would outlive a parent
    killed with SIGKILL. Ctrl-C reaches the whole process group: it is the parent's to
    handle (stop at a safe point), not a reason for a parser to die mid-chunk.

    A child of the fork server was tied to the server as it was forked (_forkserver_guard):
    by now the server may be gone and the child adopted by init, so its parent is the
    server's pid, never what getppid() says here.
    """
    import sys

    from worker._parentdeath import die_with_parent

    for fd in inherited_locks:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is None:
        parent = getattr(sys.modules.get("worker._forkserver_guard"), "SERVER_PID", None)
    die_with_parent(parent)


def _take(iterator: Iterator[Any], n: int) -> Iterable[Any]:
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _read_chunk(chunk: Sequence[ReadTask], limits: ParseLimits) -> list[Any]:
    return [read_article(path, max_bytes, known_hash, limits, root) for path, max_bytes, known_hash, root in chunk]


def read_article(
    path: str, max_bytes: int, known_hash: str | None, limits: ParseLimits | None = None, root: str | None = None
) -> Ingested | Touched | None:
    """Read one file and parse it, unless its bytes hash to `known_hash`. Only a regular file
    (inside `root`, the real path of its source folder, when given) is read.

    Returns the ingested file, `(path, size, mtime_ns)` when only the stat changed, or None
    when the file vanished since the scan (it is seen as deleted next run).
    """
    # Imported here, once per file: in this form (no `from`), that costs half a microsecond.
    import hashlib

    import worker.ingest.frontmatter as parsing

    if limits is None:
        limits = parsing.ParseLimits()
    from worker.ingest.read import NotReadable, read_regular_file

    try:
        data, st = read_regular_file(path, max_bytes, root)
    except FileNotFoundError:
        return None
    except NotReadable as exc:
        return Ingested(path, -1, -1, "", error=f"cannot be read: {exc}")
    except OSError as exc:
        # No stat recorded (-1): the file is read again next run, when it may have settled.
        return Ingested(path, -1, -1, "", error=f"cannot be read: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if len(data) > max_bytes:
        return Ingested(path, st.st_size, st.st_mtime_ns, digest, error=f"larger than max_bytes ({max_bytes} bytes)")
    if digest == known_hash:
        return (path, st.st_size, st.st_mtime_ns)
    try:
        article = parsing.parse_article(data, path, limits)
        return Ingested.of_article(path, st.st_size, st.st_mtime_ns, digest, article)
    except parsing.ArticleError as exc:
        return Ingested(path, st.st_size, st.st_mtime_ns, digest, error=exc.detail)
    except Exception as exc:  # noqa: BLE001  (nothing one file holds may fail the run)
        reason = f"cannot be stored: {type(exc).__name__}: {' '.join(str(exc).split()) or type(exc).__name__}"[:500]
        return Ingested(path, st.st_size, st.st_mtime_ns, digest, error=reason)
