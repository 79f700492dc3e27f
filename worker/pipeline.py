"""One cycle: scan -> ingest -> enrich -> publish, under the cycle lock; returns the run report."""

from __future__ import annotations

import gc
import importlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from worker.config import Config
from worker.enrich import ENRICH_COUNTS
from worker.ingest.scanner import Scan, Source, scan
from worker.publish.settings import FeedSettings
from worker.publish.writer import FeedWriteError
from worker.store import quick
from worker.store.errors import StoreError
from worker.store.files import guard_emptied_sources, plan_reads
from worker.store.lock import cycle_lock, held_lock_descriptors

if TYPE_CHECKING:  # the full cycle's modules load when it runs: a no-change run never needs them
    from concurrent.futures import Future, ProcessPoolExecutor

    from sqlalchemy.engine import Engine

    from worker.ingest.frontmatter import ParseLimits
    from worker.store import articles as store

__all__ = [
    "CycleError",
    "RunReport",
    "parse_limits",
    "read_article",
    "run_cycle",
    "start_parser_server",
    "unreadable_sources",
    "utcnow",
]

log = structlog.get_logger("worker.pipeline")

BATCH = 500  # files per transaction
INLINE_BELOW = 64  # fewer files than this are parsed without a process pool
CHUNK = 32  # files per task sent to a parser process
# What read_article needs, loaded before parser processes start so that none imports it again.
_PARSER_MODULES = ("worker.ingest.frontmatter", "worker.ingest.read", "worker.store.articles")
DEFER_INDEXES_FROM = 2000  # files a first run reads, from which it builds its indexes at the end
_Task = tuple[str, int, "str | None", str]  # path, max_bytes, known hash, real path of its source folder


def utcnow() -> datetime:
    return datetime.now(UTC)


class CycleError(Exception):
    """The cycle could not complete (unusable database, unwritable feeds folder); carries the report."""

    def __init__(self, message: str, report: RunReport):
        super().__init__(message)
        self.report = report


@dataclass(slots=True)
class RunReport:
    status: str = "ok"
    files: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("seen", "new", "changed", "unchanged", "deleted", "quarantined"), 0)
    )
    articles: dict[str, int] = field(default_factory=lambda: {"total": 0, "published": 0})
    feeds: dict[str, int] = field(default_factory=lambda: {"written": 0, "unchanged": 0, "removed": 0})
    enrich: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENRICH_COUNTS, 0))
    # Each source folder in config order: {"path", "state": "ok" | "missing" | "unreadable", "files"}.
    sources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    run_id: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    waited_s: float = 0.0
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)


def run_cycle(
    config: Config,
    *,
    clock: Callable[[], datetime] = utcnow,
    on_wait: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RunReport:
    """Run one whole cycle. Waits for a cycle already running against the same database.

    Raises CycleError (with a failed report) when the cycle cannot complete; quarantined
    files are not a failure, nor are some source folders that cannot be read (all of them
    is: then nothing is stored or written). `should_stop` is asked between batches: when it
    says yes, the cycle stops at that safe point (stored batches kept, feeds left as they
    were) and fails. `duration_s` is the work alone; the wait for the lock is `waited_s`.
    """
    started = work_started = time.monotonic()
    report = RunReport()
    try:
        with cycle_lock(config.database_url, on_wait):
            work_started = time.monotonic()
            report.waited_s = round(work_started - started, 3)
            done, found, stats = _quick_cycle(config, clock, work_started, report.waited_s, should_stop)
            if done is not None:
                return done
            _full_cycle(config, clock, work_started, report, should_stop, found, stats)
    except StoreError as exc:
        report.status = "failed"
        report.message = _one_line(exc)
        report.duration_s = round(time.monotonic() - work_started, 3)
        log.error("run.failed", reason=report.message)
    if report.status != "ok":
        raise CycleError(report.message or "the cycle failed", report)
    return report


def _quick_cycle(
    config: Config,
    clock: Callable[[], datetime],
    started: float,
    waited_s: float,
    should_stop: Callable[[], bool] | None,
) -> tuple[RunReport | None, Scan | None, dict[str, tuple[int, int]] | None]:
    """The whole run when nothing changed: checked and recorded with sqlite3 alone (see
    worker.store.quick). Otherwise (None, the scan and the stored stats read on the way, if
    any), and the full cycle runs."""
    if config.enrich.fetch and config.enrich.max_fetches > 0:
        return None, None, None  # fetching related pages is work on every run
    store = quick.open_store(config.database_url, config.busy_timeout_s)
    if store is None:
        return None, None, None
    with _collection_paused(), store:
        return _quick_run(store, config, clock, started, waited_s, should_stop)


def _quick_run(
    store: quick.QuickStore,
    config: Config,
    clock: Callable[[], datetime],
    started: float,
    waited_s: float,
    should_stop: Callable[[], bool] | None,
) -> tuple[RunReport | None, Scan | None, dict[str, tuple[int, int]] | None]:
    now = clock()
    answer = store.check(_feed_settings(config), now, lambda: _scan(config))
    facts, found = answer.facts, answer.found
    if facts is None or found is None or (should_stop is not None and should_stop()):
        return None, found, answer.stats
    if _no_source_readable(found):
        return None, found, answer.stats  # a failed run: the full cycle records it
    report = RunReport(waited_s=waited_s, started_at=now.isoformat())
    report.files.update(facts.plan.counts, quarantined=len(facts.quarantined))
    report.articles.update(facts.articles)
    report.sources = _source_report(found)
    report.errors.extend({"path": path, "message": problem} for path, problem in found.problems)
    report.errors.extend(facts.quarantined)

    def finish(run_id: int) -> tuple[datetime, str]:
        report.run_id = run_id
        report.duration_s = round(time.monotonic() - started, 3)
        finished = clock()
        report.finished_at = finished.isoformat()
        return finished, report.to_json().decode()

    if not store.record_run(now, finish):
        return None, found, answer.stats
    bound = log.bind(run_id=report.run_id)
    for path, problem in found.problems:
        bound.warning("source.unreadable", path=path, reason=problem)
    _log_finished(bound, report, quick=True)
    # The scan is not handed on: freed here, while collection is still paused, it is never
    # traversed by the collector at all.
    return report, None, None


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection for a while: the no-change check builds some 200,000
    objects (scan, stored stats) that live until it ends and hold no cycles; collecting
    among them again and again costs a tenth of the check."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _full_cycle(
    config: Config,
    clock: Callable[[], datetime],
    started: float,
    report: RunReport,
    should_stop: Callable[[], bool] | None,
    found: Scan | None,
    stats: dict[str, tuple[int, int]] | None = None,
) -> None:
    """The cycle through SQLAlchemy: creates or migrates the schema, ingests, enriches, publishes."""
    from worker.store import runs
    from worker.store.db import connect, transaction

    engine = connect(config.database_url, busy_timeout_s=config.busy_timeout_s)
    try:
        now = clock()
        report.started_at = now.isoformat()
        with transaction(engine) as conn:
            # Under the cycle lock, a run still marked running died (kill -9, power loss).
            for run_id, run_started in runs.unfinished(conn):
                runs.finish(conn, run_id, "interrupted", _interrupted_report(run_id, run_started), None)
                log.warning("run.interrupted", interrupted_run_id=run_id, started_at=run_started.isoformat())
            report.run_id = runs.start(conn, now)
        bound = log.bind(run_id=report.run_id)
        try:
            # Events of the modules the cycle calls (feeds written, pages fetched) carry the run too.
            with structlog.contextvars.bound_contextvars(run_id=report.run_id):
                _cycle(engine, config, now, report, bound, should_stop, found, stats)
        except (StoreError, FeedWriteError, OSError) as exc:
            report.status = "failed"
            report.message = _one_line(exc)
            _count_stored_if_possible(engine, report)  # what the batches before the failure stored
        except BaseException as exc:  # interrupted, or a bug: the run row must not stay "running"
            report.status = "failed"
            report.message = f"interrupted: {type(exc).__name__}: {_one_line(exc)}"
            _count_stored_if_possible(engine, report)
            report.duration_s = round(time.monotonic() - started, 3)
            finished = clock()
            report.finished_at = finished.isoformat()
            _finish(engine, report, bound, finished)
            raise
        report.duration_s = round(time.monotonic() - started, 3)
        finished = clock()
        report.finished_at = finished.isoformat()
        _finish(engine, report, bound, finished)
    finally:
        engine.dispose()


INTERRUPTED_MESSAGE = "the process running this cycle ended before it finished (killed?); the next cycle took over its work"


def _interrupted_report(run_id: int, started_at: datetime) -> str:
    report = RunReport(status="interrupted", run_id=run_id, started_at=started_at.isoformat())
    report.message = INTERRUPTED_MESSAGE
    return report.to_json().decode()


def _finish(engine: Engine, report: RunReport, bound: Any, finished: datetime) -> None:
    from worker.store import runs
    from worker.store.db import transaction

    try:
        with transaction(engine) as conn:
            runs.finish(conn, report.run_id, report.status, report.to_json().decode(), finished)
    except StoreError as exc:
        report.status = "failed"
        report.message = report.message or _one_line(exc)
    _log_finished(bound, report, quick=False)


def _log_finished(bound: Any, report: RunReport, *, quick: bool) -> None:
    event = bound.info if report.status == "ok" else bound.error
    event(
        "run.finished" if report.status == "ok" else "run.failed",
        status=report.status,
        reason=report.message,
        files=report.files,
        articles=report.articles,
        feeds=report.feeds,
        duration_s=report.duration_s,
        quick=quick,  # recorded by the no-change check alone
    )


def _scan(config: Config) -> Scan:
    sources = [Source(s.path, s.include, s.max_bytes, s.settle_s) for s in config.sources]
    return scan(sources, time.time_ns())


def _source_report(found: Scan) -> list[dict[str, Any]]:
    return [{"path": source.path, "state": source.state, "files": source.files} for source in found.sources]


def _no_source_readable(found: Scan) -> bool:
    return bool(found.sources) and all(source.state != "ok" for source in found.sources)


def unreadable_sources(sources: Iterable[dict[str, Any]], errors: Iterable[dict[str, str]]) -> str:
    """The source folders of a run report that could not be read, with the reason of each:
    `/data/inbox2 (No such file or directory), ...`; empty when every one was read."""
    reasons = {error.get("path"): error.get("message", "") for error in errors}
    shown = []
    for source in sources:
        if source.get("state") == "ok":
            continue
        reason = reasons.get(source.get("path"), "").rpartition("cannot be read: ")[2] or source.get("state")
        shown.append(f"{source.get('path')} ({reason})")
    return ", ".join(shown)


# Meta key prefix: the device each source folder was on when it last held files.
_DEVICE_KEY = "source_device:"


def _feed_settings(config: Config) -> FeedSettings:
    feeds = config.feeds
    return FeedSettings(feeds.dir, feeds.base_url, feeds.title, feeds.max_entries, feeds.opml_format)


def _cycle(
    engine: Engine,
    config: Config,
    now: datetime,
    report: RunReport,
    log: Any,
    should_stop: Callable[[], bool] | None = None,
    found: Scan | None = None,
    stats: dict[str, tuple[int, int]] | None = None,
) -> None:
    """`found` and `stats`: the scan and every stored file's (size, mtime_ns), when the
    no-change check already made them; then only the files to act on are read in full."""
    from worker.enrich.stage import enrich_related
    from worker.publish.feeds import publish
    from worker.store import articles as store
    from worker.store.db import indexes_deferred, transaction

    if found is None:
        found = _scan(config)
    report.sources = _source_report(found)
    for path, problem in found.problems:
        log.warning("source.unreadable", path=path, reason=problem)
        report.errors.append({"path": path, "message": problem})
    if _no_source_readable(found):
        # Nothing to go by: no file is taken as deleted, no feed is touched.
        report.status = "failed"
        report.message = f"no source folder could be read: {unreadable_sources(report.sources, report.errors)}"
        _count_stored(engine, report)
        return

    with engine.connect() as conn:
        everything = store.known_files(conn) if stats is None else None
        devices = {key[len(_DEVICE_KEY):]: int(value) for key, value in store.meta_values(conn, _DEVICE_KEY).items()}
    if everything is not None:
        stats = {path: (file.size, file.mtime_ns) for path, file in everything.items()}
    assert stats is not None
    for path, problem in guard_emptied_sources(found, stats, devices):
        log.warning("source.emptied", path=path, reason=problem)
        report.errors.append({"path": path, "message": problem})
    report.sources = _source_report(found)
    if _no_source_readable(found):
        report.status = "failed"
        report.message = f"no source folder could be read: {unreadable_sources(report.sources, report.errors)}"
        _count_stored(engine, report)
        return
    plan = plan_reads(found, stats)
    seen_on = {source.path: source.device for source in found.sources if source.files and source.device is not None}
    if any(devices.get(path) != device for path, device in seen_on.items()):
        with transaction(engine) as conn:
            for path, device in seen_on.items():
                store.set_meta_value(conn, _DEVICE_KEY + path, str(device))
    if everything is not None:
        known = everything
    else:
        with engine.connect() as conn:
            known = store.known_files(conn, plan.read + plan.too_large + plan.deleted)
    counts = report.files
    counts.update(plan.counts)
    to_read: list[_Task] = [
        (path, found.files[path].max_bytes, known[path].hash if path in known else None, found.files[path].root)
        for path in plan.read
    ]
    too_large: list[store.Ingested] = []
    for path in plan.too_large:
        file = found.files[path]
        too_large.append(
            store.Ingested(
                path,
                file.size,
                file.mtime_ns,
                f"size:{file.size}",
                error=file.problem or f"larger than max_bytes ({file.size} > {file.max_bytes} bytes)",
            )
        )
    deleted = plan.deleted
    with transaction(engine) as conn:
        store.delete_files(conn, deleted, known)
        # Another file still carrying a deleted file's article is read again, so the article
        # shows that file's content rather than the deleted one's (candidates a killed run
        # left included).
        again = set(store.files_carrying(conn, store.orphan_candidates(conn))) - {task[0] for task in to_read}
        if everything is None:  # `known` holds only the files to act on
            known.update(store.known_files(conn, list(again)))
        topics = store.TopicRegistry(conn)
        if too_large:
            store.write_batch(conn, too_large, known, topics, now)
    for path in sorted(again):
        carrier = found.files.get(path)
        if carrier is not None and carrier.problem is None and carrier.size <= carrier.max_bytes:
            to_read.append((path, carrier.max_bytes, None, carrier.root))

    # Oldest edit first, so that where two files carry one article the newest edit wins.
    to_read.sort(key=lambda task: (found.files[task[0]].mtime_ns, task[0]))
    limits = parse_limits(config)
    batch: list[store.Ingested] = []
    touched: list[tuple[str, int, int]] = []
    stopped = False
    first_run = not stats  # no file stored yet
    with indexes_deferred(engine, defer=first_run and len(to_read) >= DEFER_INDEXES_FROM):
        results = _read_all(to_read, limits)
        for result in results:
            if isinstance(result, tuple):  # same bytes as stored, only the stat changed
                touched.append(result)
                counts["unchanged"] += 1
                continue
            if result.path in known and result.path not in again:
                counts["changed"] += 1
            if result.error is not None:
                log.warning("file.quarantined", path=result.path, reason=result.error)
            elif result.article is not None and result.article.warnings:
                for warning in result.article.warnings:
                    log.warning("file.warning", path=result.path, reason=warning)
            batch.append(result)
            if len(batch) >= BATCH:
                _store_batch(engine, batch, touched, known, topics, now)
                batch, touched = [], []
                if should_stop is not None and should_stop():
                    stopped = True
                    break
        results.close()  # shuts the parser pool down now when the loop stopped early
        _store_batch(engine, batch, touched, known, topics, now)

    if stopped or (should_stop is not None and should_stop()):
        # Orphan candidates stay for the next run: a moved file not read yet still carries its article.
        # Files not read yet are seen as new or changed next run; the feeds are rebuilt then.
        report.status = "failed"
        report.message = "stopped at a safe point before the end of the cycle (shutting down)"
        _count_stored(engine, report)  # what the batches stored so far
        return
    with transaction(engine) as conn:
        for url in store.remove_orphans(conn, now):
            log.info("article.removed", url=url)
    report.enrich.update(enrich_related(engine, config.enrich, now, log))
    published = publish(
        engine, _feed_settings(config), now, helper=_process_pool_of_one if (os.cpu_count() or 1) > 1 else None
    )
    report.feeds.update(written=published.written, unchanged=published.unchanged, removed=published.removed)
    _count_stored(engine, report)


def _count_stored(engine: Engine, report: RunReport) -> None:
    """The store's articles and quarantine into the report (the cycle's last step: a failure
    in here leaves the report's errors as they were)."""
    from worker.store import articles as store

    with engine.connect() as conn:
        articles = store.article_counts(conn)
        quarantined = store.quarantined_files(conn)
    report.articles.update(articles)
    report.files["quarantined"] = len(quarantined)
    report.errors.extend(quarantined)


def _count_stored_if_possible(engine: Engine, report: RunReport) -> None:
    """After a failure, the counts of what is stored, when the store can still tell."""
    try:
        _count_stored(engine, report)
    except Exception:  # the run already failed; its reason stays the first one
        log.debug("run.counts_unavailable", exc_info=True)


def _store_batch(
    engine: Engine,
    batch: list[store.Ingested],
    touched: list[tuple[str, int, int]],
    known: dict[str, store.KnownFile],
    topics: store.TopicRegistry,
    now: datetime,
) -> None:
    from worker.store import articles as store
    from worker.store.db import transaction

    if not batch and not touched:
        return
    with transaction(engine) as conn:
        store.touch_files(conn, touched)
        store.write_batch(conn, batch, known, topics, now)


def parse_limits(config: Config) -> ParseLimits:
    from worker.ingest.frontmatter import ParseLimits

    limits = config.limits
    return ParseLimits(
        max_topics=limits.max_topics,
        max_related=limits.max_related,
        max_images=limits.max_images,
        max_title_chars=limits.max_title_chars,
        max_excerpt_chars=limits.max_excerpt_chars,
        max_body_chars=limits.max_body_chars,
    )


def _read_all(
    tasks: Sequence[_Task], limits: ParseLimits
) -> Iterator[store.Ingested | tuple[str, int, int]]:
    """Read and parse files across all cores, yielding results in task order, with a bounded
    number of chunks in flight so memory does not grow with the corpus."""
    if len(tasks) < INLINE_BELOW:
        for task in tasks:
            result = read_article(*task[:3], limits, task[3])
            if result is not None:
                yield result
        return
    workers = max(1, min(os.cpu_count() or 1, 8))
    chunks = [tasks[i : i + CHUNK] for i in range(0, len(tasks), CHUNK)]
    with _process_pool(workers) as pool:
        pending: deque[Future[list[Any]]] = deque()
        queue = iter(chunks)
        for chunk in _take(queue, workers * 3):
            pending.append(pool.submit(_read_chunk, chunk, limits))
        while pending:
            results = pending.popleft().result()
            for chunk in _take(queue, 1):
                pending.append(pool.submit(_read_chunk, chunk, limits))
            yield from (result for result in results if result is not None)


@contextmanager
def _process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes for parsing and rendering, set up by _parser_init."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for name in _PARSER_MODULES:  # forked processes inherit them
        importlib.import_module(name)
    # fork is fastest, but unsafe once the process has threads (the server, the scheduler):
    # then children come from the fork server, started clean (see start_parser_server).
    single_threaded = threading.active_count() == 1
    context = multiprocessing.get_context("fork") if single_threaded else _parser_context()
    initargs = (tuple(held_lock_descriptors()), os.getpid()) if single_threaded else ((), None)
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


def _process_pool_of_one() -> AbstractContextManager[ProcessPoolExecutor]:
    return _process_pool(1)


def _parser_context() -> Any:
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["worker._forkserver_guard", "worker.pipeline", *_PARSER_MODULES])
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


def _read_chunk(chunk: Sequence[_Task], limits: ParseLimits) -> list[Any]:
    return [read_article(path, max_bytes, known_hash, limits, root) for path, max_bytes, known_hash, root in chunk]


def read_article(
    path: str, max_bytes: int, known_hash: str | None, limits: ParseLimits | None = None, root: str | None = None
) -> store.Ingested | tuple[str, int, int] | None:
    """Read one file and parse it, unless its bytes hash to `known_hash`. Only a regular file
    (inside `root`, the real path of its source folder, when given) is read.

    Returns the ingested file, `(path, size, mtime_ns)` when only the stat changed, or None
    when the file vanished since the scan (it is seen as deleted next run).
    """
    # Imported here, once per file: in this form (no `from`), that costs half a microsecond.
    import hashlib

    import worker.ingest.frontmatter as parsing
    import worker.store.articles as store

    if limits is None:
        limits = parsing.ParseLimits()
    from worker.ingest.read import NotReadable, read_regular_file

    try:
        data, st = read_regular_file(path, max_bytes, root)
    except FileNotFoundError:
        return None
    except NotReadable as exc:
        return store.Ingested(path, -1, -1, "", error=f"cannot be read: {exc}")
    except OSError as exc:
        # No stat recorded (-1): the file is read again next run, when it may have settled.
        return store.Ingested(path, -1, -1, "", error=f"cannot be read: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if len(data) > max_bytes:
        return store.Ingested(
            path, st.st_size, st.st_mtime_ns, digest, error=f"larger than max_bytes ({max_bytes} bytes)"
        )
    if digest == known_hash:
        return (path, st.st_size, st.st_mtime_ns)
    try:
        article = parsing.parse_article(data, path, limits)
        return store.Ingested.of_article(path, st.st_size, st.st_mtime_ns, digest, article)
    except parsing.ArticleError as exc:
        return store.Ingested(path, st.st_size, st.st_mtime_ns, digest, error=exc.detail)
    except Exception as exc:  # noqa: BLE001  (nothing one file holds may fail the run)
        reason = f"cannot be stored: {type(exc).__name__}: {_one_line(exc)}"[:500]
        return store.Ingested(path, st.st_size, st.st_mtime_ns, digest, error=reason)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
