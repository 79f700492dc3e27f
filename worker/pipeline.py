"""One cycle, phase by phase: snapshot -> plan -> ingest -> enrich -> publish -> record, under the cycle lock."""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from worker.config import Config
from worker.ingest.scanner import scan, scan_paths
from worker.model import (
    ArticleCounts,
    FeedFiles,
    FeedSettings,
    Ingested,
    KnownFile,
    Scan,
    Source,
    StoreSnapshot,
    Touched,
)
from worker.plan import CyclePlan, FetchSettings, plan_cycle
from worker.publish.writer import FeedWriteError, feed_files
from worker.report import CycleError, RunReport, interrupted_report, unreadable_sources
from worker.store import keys
from worker.store import snapshot as store_snapshot
from worker.store.errors import StoreError
from worker.store.lock import cycle_lock, held_lock_descriptors
from worker.store.postgres import is_postgres

if TYPE_CHECKING:  # the working cycle's modules load when it runs: a cycle with nothing to do never needs them
    from sqlalchemy.engine import Engine

    from worker.ingest.frontmatter import ParseLimits
    from worker.ingest.parsers import ReadTask
    from worker.store.topics import TopicRegistry

__all__ = [
    "BATCH",
    "DEFER_INDEXES_FROM",
    "CycleContext",
    "CycleError",
    "RunReport",
    "feed_settings",
    "parse_limits",
    "replica_name",
    "run_cycle",
    "utcnow",
]

log = structlog.get_logger("worker.pipeline")

BATCH = 500  # files per transaction
DEFER_INDEXES_FROM = 2000  # files a first run reads, from which it builds its indexes at the end


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class CycleContext:
    """What every phase of one cycle works with."""

    config: Config
    clock: Callable[[], datetime]
    should_stop: Callable[[], bool]
    started: float  # time.monotonic() when the work began (the lock held)
    report: RunReport
    now: datetime = field(default_factory=utcnow)  # the cycle's time: its changes are stamped with it
    log: Any = log
    replica: str | None = None  # who runs it (run.replica)
    fence: int | None = None  # the cycle lock's fencing token (PostgreSQL), checked by every write
    locked_at: datetime | None = None  # wall-clock time the lock was taken: run requests made before are served
    on_read: Callable[[int], None] | None = None  # told how many files this process read for a shared ingest
    on_progress: Callable[[int, int], None] | None = None  # told files read so far, of those to read
    paths: tuple[str, ...] | None = None  # an incremental cycle's changed paths (None: scan everything)
    # A run started at or after `now` before this one (FEEDWORKER_CLOCK pinned, a clock set back):
    # the versions (`updated_at`, `content_at`) of what changes now tell nothing (publish.feeds).
    clock_stalled: bool = False

    def finish_report(self) -> datetime:
        self.report.duration_s = round(time.monotonic() - self.started, 3)
        finished = self.clock()
        self.report.finished_at = finished.isoformat()
        return finished

    @property
    def feed_settings(self) -> FeedSettings:
        return feed_settings(self.config)


def feed_settings(config: Config) -> FeedSettings:
    """What the feeds are rendered with, from the config's `feeds` and `websub` sections."""
    feeds = config.feeds
    return FeedSettings(
        feeds.dir,
        feeds.base_url,
        feeds.title,
        feeds.max_entries,
        feeds.opml_format,
        feeds.content,
        config.websub.hubs,
    )


def warm_entries(config: Config, should_stop: Callable[[], bool]) -> int:
    """The current feeds' entries built into this process's memos (publish.feeds.warm_entries):
    `serve` does it after its first cycle when it watches. Reads only; how many feeds."""
    from worker.publish.feeds import warm_entries as warm
    from worker.store.db import check_schema, connect

    engine = connect(config.database_url, busy_timeout_s=config.busy_timeout_s, readonly=True)
    try:
        if not check_schema(engine):
            return 0
        return warm(engine, feed_settings(config), should_stop)
    finally:
        engine.dispose()


def replica_name() -> str:
    """This process as the runs it makes name it: host and process id (a container's host
    name is its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_cycle(
    config: Config,
    *,
    clock: Callable[[], datetime] = utcnow,
    on_wait: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    request_id: str | None = None,
    on_locked: Callable[[], None] | None = None,
    on_read: Callable[[int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    paths: Iterable[str] | None = None,
    watch: dict[str, Any] | None = None,
) -> RunReport:
    """Run one whole cycle. Waits for a cycle already running against the same database.

    With `paths` (files and folders the watcher saw change) it is an incremental cycle: only
    those paths are looked at, under the same rules, and no other file is taken as deleted;
    a store with no schema, or an older one, gets a full cycle instead. `watch` (the
    watcher's state) goes into the report as it is.

    Raises CycleError (with a failed report) when the cycle cannot complete; quarantined
    files are not a failure, nor are some source folders that cannot be read (all of them
    is: then nothing is stored or written). `should_stop` is asked between batches: when it
    says yes, the cycle stops at that safe point (stored batches kept, feeds left as they
    were) and fails. `duration_s` is the work alone; the wait for the lock is `waited_s`.
    """
    asked = time.monotonic()
    report = RunReport(watch=watch)
    context = None
    replica = replica_name()
    try:
        with cycle_lock(config.database_url, on_wait, replica) as fence:
            if on_locked is not None:
                on_locked()
            context = CycleContext(config, clock, should_stop or _never, time.monotonic(), report, clock())
            context.replica, context.fence, context.locked_at = replica, fence, datetime.now(UTC)
            context.on_read, context.on_progress = on_read, on_progress
            context.paths = tuple(sorted(set(paths))) if paths is not None else None
            report.waited_s = round(context.started - asked, 3)
            if request_id is None or not _served_already(context, request_id):
                _cycle(context)
    except StoreError as exc:
        report.fail(_one_line(exc))
        report.duration_s = round(time.monotonic() - (context.started if context else asked), 3)
        log.error("run.failed", reason=report.message)
    if report.status != "ok":
        raise CycleError(report.message or "the cycle failed", report)
    return report


def _never() -> bool:
    return False


def _served_already(context: CycleContext, request_id: str) -> bool:
    """Whether a run another replica started after `request_id` was asked for served it: then
    that run's report is this one's, and no second run follows (one run for the group)."""
    reader = store_snapshot.open_reader(context.config.database_url, context.config.busy_timeout_s)
    if reader is None:
        return False
    try:
        served = store_snapshot.served_by(reader[0], reader[1], request_id)
    except Exception:  # noqa: BLE001  (no such table yet: the cycle runs)
        return False
    finally:
        reader[0].close()
    if served is None:
        return False
    run_id, report_json = served
    stored = RunReport.from_json(report_json) if report_json else RunReport(status="running", run_id=run_id)
    _reset(context.report, stored)
    context.report.run_id = run_id
    log.info("run.served_by_another", run_id=run_id, request_id=request_id)
    return True


def _cycle(context: CycleContext) -> None:
    """Snapshot and plan; a cycle with an empty plan records itself and ends, any other works."""
    config = context.config
    reader = store_snapshot.open_reader(config.database_url, config.busy_timeout_s)
    try:
        with _collection_paused():
            snapshot, found, plan, counts = _snapshot_and_plan(context, reader)
            if plan.empty and not _no_source_readable(found) and not context.should_stop():
                assert reader is not None and counts is not None
                if _record_idle(context, reader, found, plan, snapshot, counts):
                    return
    finally:
        if reader is not None:
            reader[0].close()
    _work(context, snapshot, found, plan)


def _snapshot_and_plan(
    context: CycleContext, reader: tuple[Any, store_snapshot.Dialect] | None
) -> tuple[StoreSnapshot | None, Scan, CyclePlan, ArticleCounts | None]:
    config = context.config
    # An incremental cycle looks at its paths first: the snapshot reads only what they touch.
    found: Scan | None = _scan_paths(config, context.paths) if context.paths is not None and reader else None
    snapshot = _read_snapshot(reader, found)
    if found is not None and (snapshot is None or not snapshot.current_schema):
        found, snapshot = None, _read_snapshot(reader, None)  # a new or older store: a full cycle
    settled = snapshot is not None and snapshot.current_schema
    # The article counts are one long SQLite step that runs without the GIL: beside the scan,
    # which waits on the disk, they come for free; only an idle cycle reports them from here.
    counting = _Counting(config) if settled else None
    if counting is not None:
        counting.start()
    try:
        if found is None:
            found = _scan(config)
    finally:
        if counting is not None:
            counting.join()
    context.report.scan = "full" if found.scope is None else "paths"
    plan = plan_cycle(
        snapshot, found, _feeds_now(config, snapshot), context.feed_settings, _fetch_settings(config), context.now
    )
    if snapshot is not None and snapshot.partial:
        _count_partial_sources(found, snapshot, plan)
    if snapshot is None or counting is None or counting.articles is None:
        return snapshot, found, plan if not plan.empty else _not_idle(plan), None
    return snapshot, found, plan, counting.articles


def _read_snapshot(reader: tuple[Any, store_snapshot.Dialect] | None, found: Scan | None) -> StoreSnapshot | None:
    """The store's snapshot (of `found`'s scope when it is a partial scan); None when there
    is no store or it cannot be read here (the working cycle opens it properly and says why)."""
    if reader is None:
        return None
    conn, dialect = reader
    try:
        if found is None or found.scope is None:
            return store_snapshot.read_snapshot(conn)
        roots = tuple(source.path for source in found.sources)
        return store_snapshot.read_snapshot(conn, found.scope, roots, dialect.mark)
    except Exception:  # noqa: BLE001
        return None


def _count_partial_sources(found: Scan, snapshot: StoreSnapshot, plan: CyclePlan) -> None:
    """Each source folder's file count after a partial scan, as a full one would find it:
    the stored files under it, with the new ones and without the deleted."""
    for index, source in enumerate(found.sources):
        if source.state != "ok":
            continue
        inside = source.path.rstrip(os.sep) + os.sep
        new = sum(1 for path in found.files if path not in snapshot.files and path.startswith(inside))
        gone = sum(1 for path in plan.files.deleted if path.startswith(inside))
        found.sources[index] = replace(source, files=snapshot.files_under.get(source.path, 0) + new - gone)


def _not_idle(plan: CyclePlan) -> CyclePlan:
    return CyclePlan(
        plan.files, (*plan.pending, "the store could not be read without SQLAlchemy"), plan.emptied, plan.feeds
    )


class _Counting(threading.Thread):
    """The article counts an idle cycle reports, on a connection of its own."""

    def __init__(self, config: Config):
        super().__init__(name="feedworker-counts", daemon=True)
        self._config = config
        self.articles: ArticleCounts | None = None  # None: the store could not be read

    def run(self) -> None:
        reader = store_snapshot.open_reader(self._config.database_url, self._config.busy_timeout_s)
        if reader is None:
            return
        try:
            self.articles = store_snapshot.article_counts(reader[0])
        except Exception:  # noqa: BLE001  (then the working cycle counts, and says what is wrong)
            return
        finally:
            reader[0].close()


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection for a while: the snapshot and the scan build some 200,000
    objects that live until the plan is made and hold no cycles; collecting among them again
    and again costs a tenth of an idle cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _record_idle(
    context: CycleContext,
    reader: tuple[Any, store_snapshot.Dialect],
    found: Scan,
    plan: CyclePlan,
    snapshot: StoreSnapshot | None,
    counts: ArticleCounts,
) -> bool:
    """The run row of a cycle with nothing to do; False when the store refused it (then the
    working cycle runs and reports why)."""
    assert snapshot is not None
    report = context.report
    report.started_at = context.now.isoformat()
    report.files = plan.files.counts
    report.articles = counts
    report.show_sources(found)
    report.errors.extend({"path": path, "message": problem} for path, problem in [*found.problems, *plan.emptied])
    report.add_quarantined(snapshot.quarantined)

    def finish(run_id: int) -> tuple[datetime, str]:
        report.run_id = run_id
        finished = context.finish_report()
        return finished, report.to_json().decode()

    conn, dialect = reader
    if not store_snapshot.record_idle_run(
        conn,
        dialect,
        context.now,
        finish,
        replica=context.replica,
        fence=context.fence,
        locked_at=context.locked_at,
        serves_requests=found.scope is None,
    ):
        _reset(report, RunReport(waited_s=report.waited_s))  # the working cycle fills it again
        return False
    bound = log.bind(run_id=report.run_id)
    for path, problem in found.problems:
        bound.warning("source.unreadable", path=path, reason=problem)
    for path, problem in plan.emptied:
        bound.warning("source.emptied", path=path, reason=problem)
    _log_finished(bound, report, idle=True)
    return True


def _reset(report: RunReport, fresh: RunReport) -> None:
    """Empty `report` in place (the caller holds it) as `fresh`."""
    for name in RunReport.__dataclass_fields__:
        setattr(report, name, getattr(fresh, name))


def _work(context: CycleContext, snapshot: StoreSnapshot | None, found: Scan, plan: CyclePlan) -> None:
    """The cycle through SQLAlchemy: creates or migrates the schema, ingests, enriches, publishes."""
    from worker.store import runs
    from worker.store.db import connect, migrate, transaction

    config, report = context.config, context.report
    engine = connect(config.database_url, busy_timeout_s=config.busy_timeout_s)
    try:
        migrate(engine)  # creates or upgrades the schema: only here, under the cycle lock, and `feedworker migrate`
        _fence(context, engine)
        from worker.publish.feeds import cycle_at

        cycle_at(engine, context.now)  # before anything is written: the entries kept may go
        if snapshot is None or not snapshot.current_schema:
            # Planned before the schema was there: plan again from what it holds now.
            snapshot, plan = _replan(context, engine, found)
        report.started_at = context.now.isoformat()
        with transaction(engine) as conn:
            # Under the cycle lock, a run still marked running died (kill -9, power loss).
            for run_id, run_started in runs.unfinished(conn):
                runs.finish(conn, run_id, "interrupted", interrupted_report(run_id, run_started.isoformat()), None)
                runs.release_requests(conn, run_id)  # served by the run this one starts now
                log.warning("run.interrupted", interrupted_run_id=run_id, started_at=run_started.isoformat())
            context.clock_stalled = runs.started_since(conn, context.now)
            report.run_id = runs.start(
                conn, context.now, context.replica, context.locked_at, serves_requests=found.scope is None
            )
        context.log = log.bind(run_id=report.run_id)
        try:
            # Events of the modules the cycle calls (feeds written, pages fetched) carry the run too.
            with structlog.contextvars.bound_contextvars(run_id=report.run_id):
                _phases(context, engine, snapshot, found, plan)
        except (StoreError, FeedWriteError, OSError) as exc:
            report.fail(_one_line(exc))
            _count_stored_if_possible(engine, report)  # what the batches before the failure stored
        except BaseException as exc:  # interrupted, or a bug: the run row must not stay "running"
            report.fail(f"interrupted: {type(exc).__name__}: {_one_line(exc)}")
            _count_stored_if_possible(engine, report)
            _finish(context, engine)
            raise
        _finish(context, engine)
    finally:
        engine.dispose()


def _fence(context: CycleContext, engine: Engine) -> None:
    """On PostgreSQL, every transaction of this cycle first checks that its lock was not lost."""
    if engine.dialect.name != "postgresql":
        return
    from worker.store import postgres
    from worker.store.db import transaction

    if context.fence is None:  # the lock was taken before the schema existed
        with transaction(engine) as conn:
            context.fence = postgres.raise_fence(conn, context.replica or "")
    postgres.fence_writes(engine, context.fence)


def _replan(context: CycleContext, engine: Engine, found: Scan) -> tuple[StoreSnapshot, CyclePlan]:
    config = context.config
    raw = engine.raw_connection()
    try:
        snapshot = store_snapshot.read_snapshot(raw.driver_connection)
    finally:
        raw.close()
    assert snapshot is not None
    fetch = _fetch_settings(config)
    return snapshot, plan_cycle(
        snapshot, found, _feeds_now(config, snapshot), context.feed_settings, fetch, context.now
    )


def _shared(config: Config) -> bool:
    """Several replicas may share this store (PostgreSQL): feeds are documents in it."""
    return is_postgres(config.database_url)


def _feeds_now(config: Config, snapshot: StoreSnapshot | None) -> FeedFiles:
    """The feeds there are: the folder's files; when replicas share the store, those of them the
    store keeps too (a feed missing from either is due: the store serves it, the folder is
    still written)."""
    on_disk = feed_files(config.feeds.dir)
    if not _shared(config):
        return on_disk
    stored = FeedFiles.of_paths(snapshot.documents if snapshot is not None else ())
    return FeedFiles(
        stored.index & on_disk.index,
        stored.topics & on_disk.topics,
        on_disk.temp_left,
        stored.archives & on_disk.archives,
    )


def _finish(context: CycleContext, engine: Engine) -> None:
    from worker.store import runs
    from worker.store.db import transaction

    report = context.report
    finished = context.finish_report()
    try:
        with transaction(engine) as conn:
            runs.finish(conn, report.run_id, report.status, report.to_json().decode(), finished)
    except StoreError as exc:
        report.status = "failed"
        report.message = report.message or _one_line(exc)
    _log_finished(context.log, report, idle=False)


def _log_finished(bound: Any, report: RunReport, *, idle: bool) -> None:
    event = bound.info if report.status == "ok" else bound.error
    shown = report.to_dict()
    event(
        "run.finished" if report.status == "ok" else "run.failed",
        status=report.status,
        reason=report.message,
        files=shown["files"],
        articles=shown["articles"],
        feeds=shown["feeds"],
        duration_s=report.duration_s,
        idle=idle,  # nothing to do: recorded without SQLAlchemy
    )


def _scan(config: Config) -> Scan:
    return scan(_sources(config), time.time_ns())


def _scan_paths(config: Config, paths: tuple[str, ...]) -> Scan:
    return scan_paths(_sources(config), paths, time.time_ns())


def _sources(config: Config) -> list[Source]:
    return [Source(s.path, s.include, s.max_bytes, s.settle_s) for s in config.sources]


def _fetch_settings(config: Config) -> FetchSettings:
    """Whether this cycle's enrich step fetches pages at all (so pages due make work)."""
    enrich = config.enrich
    return FetchSettings(enrich.fetch and enrich.max_fetches > 0 and enrich.max_seconds > 0, enrich.ttl)


def _no_source_readable(found: Scan) -> bool:
    return bool(found.sources) and all(source.state != "ok" for source in found.sources)


def _phases(context: CycleContext, engine: Engine, snapshot: StoreSnapshot, found: Scan, plan: CyclePlan) -> None:
    """The working cycle: ingest what the plan names, spread and fetch, render, count."""
    from worker.enrich.stage import enrich_related
    from worker.ingest.parsers import process_pool_of_one
    from worker.publish.feeds import publish
    from worker.store import articles as article_store
    from worker.store import topics as topic_store

    report, bound = context.report, context.log
    report.show_sources(found)
    for path, problem in found.problems:
        bound.warning("source.unreadable", path=path, reason=problem)
        report.errors.append({"path": path, "message": problem})
    for path, problem in plan.emptied:
        bound.warning("source.emptied", path=path, reason=problem)
        report.errors.append({"path": path, "message": problem})
    if _no_source_readable(found):
        # Nothing to go by: no file is taken as deleted, no feed is touched.
        report.fail(f"no source folder could be read: {unreadable_sources(report.sources, report.errors)}")
        _count_stored(engine, report)
        return
    report.files = plan.files.counts
    _remember_devices(engine, snapshot, found)
    if not _ingest(context, engine, snapshot, found, plan):
        # Orphan candidates stay for the next run: a moved file not read yet still carries its article.
        # Files not read yet are seen as new or changed next run; the feeds are rebuilt then.
        report.fail("stopped at a safe point before the end of the cycle (shutting down)")
        _count_stored(engine, report)  # what the batches stored so far
        return
    from worker.store.db import transaction

    with transaction(engine) as conn:
        for url in article_store.remove_orphans(conn, context.now):
            bound.info("article.removed", url=url)
        # Dirty now: the topics of the articles this cycle stored or removed. Enrichment adds
        # their neighbours' topics; the feeds of these come first.
        first = frozenset(row.id for row in topic_store.dirty_topics(conn))
    shared_as = (context.replica or replica_name()) if _shared(context.config) else None
    report.enrich = enrich_related(engine, context.config.enrich, context.now, bound, shared_as=shared_as)
    _keep_statistics(engine)  # the related graph may have grown by as much as the articles

    def helper() -> Any:
        return process_pool_of_one(held_lock_descriptors)

    changed: list[str] = []
    report.feeds = publish(
        engine,
        context.feed_settings,
        context.now,
        changed=changed,
        on_disk=plan.feeds,  # as the plan saw them: the feeds it found missing are due
        helper=helper if (os.cpu_count() or 1) > 1 else None,
        to_store=_shared(context.config),
        fence=context.fence,
        first=first,
        clock_stalled=context.clock_stalled,
    )
    _count_stored(engine, report)
    if context.config.websub.hubs and changed:
        from worker.publish.websub import ping_hubs

        report.websub = ping_hubs(
            context.config.websub.hubs, [context.feed_settings.base_url + path for path in changed]
        )


def _remember_devices(engine: Engine, snapshot: StoreSnapshot, found: Scan) -> None:
    """The device each source folder with files is on (see plan.guard_emptied_sources)."""
    from worker.store import meta as meta_store
    from worker.store.db import transaction

    seen_on = {source.path: source.device for source in found.sources if source.files and source.device is not None}
    if all(snapshot.meta.get(keys.SOURCE_DEVICE + path) == str(device) for path, device in seen_on.items()):
        return
    with transaction(engine) as conn:
        for path, device in seen_on.items():
            meta_store.set_meta_value(conn, keys.SOURCE_DEVICE + path, str(device))


def _ingest(context: CycleContext, engine: Engine, snapshot: StoreSnapshot, found: Scan, plan: CyclePlan) -> bool:
    """Forget deleted files, quarantine the unreadable, read and store the rest in batches.
    False when the cycle was asked to stop (at a batch boundary)."""
    from worker.store import articles as article_store
    from worker.store import files as file_store
    from worker.store import orphans as orphan_store
    from worker.store import topics as topic_store
    from worker.store.db import indexes_deferred, transaction

    files, counts, bound = plan.files, context.report.files, context.log
    acting_on = files.read + files.too_large + files.deleted
    with engine.connect() as conn:
        # Most of the store, or only the files to act on, whichever is fewer queries.
        known = (
            file_store.known_files(conn)
            if 2 * len(acting_on) > len(snapshot.files) and not snapshot.partial
            else file_store.known_files(conn, acting_on)
        )
    to_read: list[ReadTask] = [
        (path, found.files[path].max_bytes, known[path].hash if path in known else None, found.files[path].root)
        for path in files.read
    ]
    with transaction(engine) as conn:
        file_store.delete_files(conn, files.deleted, known)
        # Another file still carrying a deleted file's article is read again, so the article
        # shows that file's content rather than the deleted one's (candidates a killed run
        # left included).
        again = set(file_store.files_carrying(conn, orphan_store.orphan_candidates(conn))) - {
            task[0] for task in to_read
        }
        known.update(file_store.known_files(conn, sorted(again - known.keys())))
        topics = topic_store.TopicRegistry(conn)
        too_large = [_quarantined_unread(found, path) for path in files.too_large]
        if too_large:
            article_store.write_batch(conn, too_large, known, topics, context.now)
    for path in sorted(again):
        carrier = found.files.get(path)
        if carrier is not None and carrier.problem is None and carrier.size <= carrier.max_bytes:
            to_read.append((path, carrier.max_bytes, None, carrier.root))

    # Oldest edit first, so that where two files carry one article the newest edit wins.
    to_read.sort(key=lambda task: (found.files[task[0]].mtime_ns, task[0]))
    batch: list[Ingested] = []
    touched: list[Touched] = []
    first_run = not snapshot.files and not snapshot.partial
    with indexes_deferred(engine, defer=first_run and len(to_read) >= DEFER_INDEXES_FROM):
        results = _reader(context, engine, to_read, found)
        progress, total = context.on_progress, len(to_read)
        try:
            for done, result in enumerate(results, start=1):
                if progress is not None:
                    progress(done, total)
                if isinstance(result, tuple):  # same bytes as stored, only the stat changed
                    touched.append(result)
                    counts.unchanged += 1
                    continue
                if result.path in known and result.path not in again:
                    counts.changed += 1
                if result.error is not None:
                    bound.warning("file.quarantined", path=result.path, reason=result.error)
                elif result.article is not None:
                    for warning in result.article.warnings:
                        bound.warning("file.warning", path=result.path, reason=warning)
                batch.append(result)
                if len(batch) >= BATCH:
                    _store_batch(engine, batch, touched, known, topics, context.now)
                    batch, touched = [], []
                    if context.should_stop():
                        return False
        finally:
            results.close()  # shuts the parser pool down now when the loop stopped early
        _store_batch(engine, batch, touched, known, topics, context.now)
    return not context.should_stop()


def _reader(
    context: CycleContext, engine: Engine, to_read: list[ReadTask], found: Scan
) -> Generator[Ingested | Touched, None, None]:
    """The files read, in order: by this process's parser pool, or, when replicas share the
    store and there are enough of them, by every replica's (ingest.shared)."""
    from worker.ingest.parsers import INLINE_BELOW, read_all

    limits = parse_limits(context.config)
    if _shared(context.config) and len(to_read) >= INLINE_BELOW:
        from worker.ingest.shared import read_shared

        claimant = context.replica or replica_name()
        return read_shared(
            engine,
            to_read,
            found.files,
            limits,
            claimant,
            batch=BATCH,
            held_locks=held_lock_descriptors,
            should_stop=context.should_stop,
            on_read=context.on_read,
        )
    return read_all(to_read, limits, held_lock_descriptors)


def _quarantined_unread(found: Scan, path: str) -> Ingested:
    file = found.files[path]
    reason = file.problem or f"larger than max_bytes ({file.size} > {file.max_bytes} bytes)"
    return Ingested(path, file.size, file.mtime_ns, f"size:{file.size}", error=reason)


def _store_batch(
    engine: Engine,
    batch: list[Ingested],
    touched: list[Touched],
    known: dict[str, KnownFile],
    topics: TopicRegistry,
    now: datetime,
) -> None:
    from worker.store import articles as article_store
    from worker.store import files as file_store
    from worker.store.db import transaction

    if not batch and not touched:
        return
    with transaction(engine) as conn:
        file_store.touch_files(conn, touched)
        article_store.write_batch(conn, batch, known, topics, now)
    _keep_statistics(engine)


def _keep_statistics(engine: Engine) -> None:
    from worker.store.db import keep_statistics

    analyzed = keep_statistics(engine)
    if analyzed:
        log.info("store.analyzed", tables=analyzed)


def _count_stored(engine: Engine, report: RunReport) -> None:
    """The store's articles and quarantine into the report (the cycle's last step: a failure
    in here leaves the report's errors as they were)."""
    from worker.store import articles as article_store
    from worker.store import files as file_store

    with engine.connect() as conn:
        articles = article_store.article_counts(conn)
        quarantined = file_store.quarantined_files(conn)
    report.articles = ArticleCounts(**articles)
    report.add_quarantined(quarantined)


def _count_stored_if_possible(engine: Engine, report: RunReport) -> None:
    """After a failure, the counts of what is stored, when the store can still tell."""
    try:
        _count_stored(engine, report)
    except Exception:  # the run already failed; its reason stays the first one
        log.debug("run.counts_unavailable", exc_info=True)


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
