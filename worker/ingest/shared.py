"""Reading files across replicas (PostgreSQL): the cycle holder offers them, every replica claims, reads and posts."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING

import structlog

from worker.ingest.parsers import ReadTask, read_as_claimed
from worker.model import FoundFile, Ingested, Touched, decode_read, encode_read
from worker.store import postgres
from worker.store.db import connect, transaction

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.ingest.frontmatter import ParseLimits

__all__ = ["CLAIM_CHUNK", "POLL_S", "help_read", "read_shared"]

log = structlog.get_logger("worker.ingest")

CLAIM_CHUNK = 32  # files a claim takes: one parser task
POLL_S = 0.05  # how often the holder looks for results it still waits for


def read_shared(
    engine: Engine,
    tasks: Sequence[ReadTask],
    found: dict[str, FoundFile],
    limits: ParseLimits,
    claimant: str,
    *,
    batch: int,
    held_locks: Callable[[], Iterable[int]] = tuple,
    should_stop: Callable[[], bool] = lambda: False,
    on_read: Callable[[int], None] | None = None,
) -> Generator[Ingested | Touched, None, None]:
    """The cycle holder's read_all on PostgreSQL: offer `tasks` to every replica, read with this
    process's pool too, and yield the results in task order, `batch` files at a time. Every
    write goes through `engine` (fenced by the cycle lock's token)."""
    # Read under other limits, a file is another claim: a result a killed cycle left is only kept for the same ones.
    limits_key = hashlib.blake2b(repr(limits).encode(), digest_size=6).hexdigest()
    offers = [
        (path, size_max, known, root, f"{_version(found[path], known)}:{size_max}:{limits_key}")
        for path, size_max, known, root in tasks
    ]
    with transaction(engine) as conn:
        postgres.offer_reads(conn, offers)
    log.info("reads.offered", files=len(offers))
    done = threading.Event()
    failure: list[BaseException] = []

    def waiting() -> bool:
        return not done.wait(POLL_S)  # until the holder has every result: claims of a dead replica free up

    def help_here() -> None:
        try:
            url = engine.url.render_as_string(hide_password=False)
            read = help_read(url, limits, claimant, held_locks, done.is_set, idle=waiting)
            if on_read is not None:
                on_read(read)
        except BaseException as exc:  # noqa: BLE001  (the holder raises it)
            failure.append(exc)

    helper = threading.Thread(target=help_here, name="feedworker-reads", daemon=True)
    helper.start()
    try:
        paths = [task[0] for task in tasks]
        for start in range(0, len(paths), batch):
            wanted = paths[start : start + batch]
            results = _collect(engine, wanted, failure, should_stop)
            if results is None:
                return  # asked to stop while waiting: the caller stops at this batch boundary
            for path in wanted:
                result = decode_read(results[path])
                if result is not None:
                    yield result
    finally:
        done.set()
        helper.join()
    with transaction(engine) as conn:
        postgres.clear_claims(conn)


def _collect(
    engine: Engine, paths: list[str], failure: list[BaseException], should_stop: Callable[[], bool]
) -> dict[str, str] | None:
    """The posted results of `paths`, once every one is there; None when asked to stop first."""
    results: dict[str, str] = {}
    while not should_stop():
        with engine.connect() as conn:
            results.update(postgres.results_of(conn, [path for path in paths if path not in results]))
        if len(results) == len(paths):
            return results
        if failure:
            raise failure[0]
        time.sleep(POLL_S)
    return None


def help_read(
    url: str,
    limits: ParseLimits,
    claimant: str,
    held_locks: Callable[[], Iterable[int]] = tuple,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    idle: Callable[[], bool] = lambda: False,
) -> int:
    """Claim, read and post offered files until none is left to claim (or `should_stop`;
    `idle`: see read_as_claimed); how many this replica read."""
    engine = connect(url)
    postgres.end_idle_transactions(engine)
    read = 0
    try:

        def claim() -> Sequence[ReadTask]:
            if should_stop():
                return []
            with transaction(engine) as conn:
                claims = postgres.claim_reads(conn, claimant, CLAIM_CHUNK)
            versions.update((path, version) for path, _, _, _, version in claims)
            return [(path, max_bytes, known, root) for path, max_bytes, known, root, _ in claims]

        versions: dict[str, str] = {}
        for chunk, results in read_as_claimed(claim, limits, held_locks, idle):
            posted = [
                (task[0], versions.pop(task[0]), encode_read(result))
                for task, result in zip(chunk, results, strict=True)
            ]
            with transaction(engine) as conn:
                postgres.post_results(conn, posted)
            read += len(posted)
    finally:
        engine.dispose()
    if read:
        log.info("reads.helped", files=read, claimant=claimant)
    return read


def _version(file: FoundFile, known_hash: str | None) -> str:
    """A file as offered: another stat, or another stored hash to compare with, is another claim."""
    return f"{file.size}:{file.mtime_ns}:{known_hash or ''}"
