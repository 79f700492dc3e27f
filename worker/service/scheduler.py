"""The run queue and the schedule: one cycle at a time in this process, started by time or by hand."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from worker.config import Config, ScheduleConfig
from worker.pipeline import replica_name, run_cycle
from worker.report import CycleError, RunReport
from worker.service import FINISHED
from worker.service.metrics import ServiceMetrics
from worker.service.replica import ReplicaState
from worker.service.watch import WatchState
from worker.store.errors import StoreError
from worker.store.postgres import is_postgres

__all__ = [
    "RunRequest",
    "Runner",
    "RunnerStopped",
    "ServiceScheduler",
    "build_trigger",
    "cron_weekdays",
]

log = structlog.get_logger("worker.service")

JOB_ID = "cycle"
KEEP_REQUESTS = 256  # finished requests remembered for GET /runs/<id>
SCHEDULE = "schedule"  # the source of the scheduler's requests
WATCH = "watch"  # the source of the watcher's requests
# Recording a run request in a PostgreSQL store happens while POST /runs waits: a database
# that does not answer must not hold it for the kernel's TCP timeout.
RECORD_CONNECT_TIMEOUT_S = 5


class RunnerStopped(Exception):
    """The service is shutting down: no new runs."""


@dataclass(slots=True)
class RunRequest:
    """One requested run: queued, then running, then ok, failed or cancelled."""

    id: str
    source: str
    requested_at: float
    status: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    store_run_id: int | None = None
    report: dict[str, Any] | None = None
    message: str | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    paths: set[str] | None = None  # the watcher's: an incremental cycle of these paths (None: a full one)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "status": self.status,
            "source": self.source,
            "requested_at": _iso(self.requested_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "store_run_id": self.store_run_id,
            "message": self.message,
            "report": self.report,
        }


@dataclass(frozen=True, slots=True)
class RunnerState:
    """A consistent snapshot for /healthz."""

    accepting: bool
    running: bool
    queued: bool
    last_status: str | None
    last_finished_at: float | None
    last_success_at: float | None
    last_message: str | None


CycleFn = Callable[..., RunReport]
WarmFn = Callable[[Config, Callable[[], bool]], int]


class Runner:
    """Owns "one cycle at a time in this process".

    A request while idle starts a run; a request during a run queues exactly one follow-up,
    and further requests join that queued one (it starts after them, so it sees their
    changes). The cycle itself also takes the cross-process lock, so `feedworker run`
    processes wait for it and it waits for them.

    On PostgreSQL (several replicas may share the store) a request made by hand is also
    recorded in the store (`run_request`) before it is queued: the next run to start on any
    replica serves it, and this replica's cycle for it, once it holds the lock, only takes
    that run's report when another replica's run already served it (one run for the group).
    """

    def __init__(
        self,
        config: Config,
        *,
        metrics: ServiceMetrics | None = None,
        cycle: CycleFn = run_cycle,
        clock: Callable[[], float] = time.time,
        replica: ReplicaState | None = None,
        watch: WatchState | None = None,
        warm: WarmFn | None = None,
    ) -> None:
        self._config = config
        self.watch = watch
        # After the first cycle that works, a watching runner builds the current feeds'
        # entries (pipeline.warm_entries), between cycles, giving way to any request.
        self._warm = warm
        self._warmed = False
        self._metrics = metrics
        self._cycle = cycle
        self._clock = clock
        self.replica = (
            replica if replica is not None else ReplicaState(replica_name(), shared=is_postgres(config.database_url))
        )
        self._cond = threading.Condition()
        # Held by one request() at a time, across the store write of a PostgreSQL request
        # (made outside _cond, so HTTP handlers reading the state never wait for the database).
        self._requesting = threading.Lock()
        self._accepting = True
        self._queued: RunRequest | None = None
        self._current: RunRequest | None = None
        self._requests: OrderedDict[str, RunRequest] = OrderedDict()
        self._abort = threading.Event()
        self._last: RunRequest | None = None
        self._last_success_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="feedworker-runner", daemon=True)

    @property
    def config(self) -> Config:
        with self._cond:
            return self._config

    @config.setter
    def config(self, value: Config) -> None:
        # Takes effect from the next run; the current one keeps the config it started with.
        with self._cond:
            self._config = value

    def start(self) -> None:
        self._thread.start()

    def request(self, source: str) -> tuple[RunRequest, bool]:
        """Ask for a run; returns the request and whether it joined one already queued."""
        with self._requesting:
            with self._cond:
                if not self._accepting:
                    raise RunnerStopped("the service is shutting down")
                if self._queued is not None and self._queued.paths is not None:
                    self._drop_queued_watch()  # the full cycle asked for now covers its paths
                if self._queued is not None:
                    return self._queued, True
                request = RunRequest(id=uuid.uuid4().hex[:16], source=source, requested_at=self._clock())
                config = self._config
                if source == SCHEDULE or not is_postgres(config.database_url):
                    self._enqueue(request)
                    return request, False
            # Recorded before it is queued, so the run that serves it can name it.
            self._record(request, config)
            with self._cond:
                if not self._accepting:
                    # Its row stays: the next run on another replica of the group serves it.
                    raise RunnerStopped("the service is shutting down")
                self._drop_queued_watch()  # only the watcher's can have been queued meanwhile
                self._enqueue(request)  # no other request queued meanwhile: requests take turns
                return request, False

    def request_paths(self, paths: set[str]) -> RunRequest | None:
        """Ask for an incremental cycle of `paths` (the watcher's). Joins the run already
        queued: a full one covers them, an incremental one takes them on. None while shutting down."""
        with self._cond:
            if not self._accepting:
                return None
            queued = self._queued
            if queued is not None:
                if queued.paths is not None:
                    queued.paths |= paths
                return queued
            request = RunRequest(id=uuid.uuid4().hex[:16], source=WATCH, requested_at=self._clock(), paths=set(paths))
            self._enqueue(request)
            return request

    def _drop_queued_watch(self) -> None:
        # Under _cond. Nobody waits on the watcher's requests: it is forgotten, not cancelled.
        queued, self._queued = self._queued, None
        if queued is not None:
            self._requests.pop(queued.id, None)
            queued.status, queued.finished_at, queued.message = "ok", self._clock(), "joined a full run"
            queued.done.set()

    def _enqueue(self, request: RunRequest) -> None:
        self._queued = request
        self._remember(request)
        self._cond.notify_all()

    def _record(self, request: RunRequest, config: Config) -> None:
        """The request in the store, where every replica sees it (GET /runs/<id>) and the next
        run of the group serves it. When that fails (no schema before the first cycle, the
        database unreachable) the request is only this replica's: its own run serves it."""
        from worker.store import runs
        from worker.store.db import connect, transaction

        requested_at = datetime.fromtimestamp(request.requested_at, UTC)
        try:
            engine = connect(_bounded(config.database_url), busy_timeout_s=config.busy_timeout_s)
            try:
                with transaction(engine) as conn:
                    runs.add_request(conn, request.id, request.source, self.replica.name, requested_at)
            finally:
                engine.dispose()
        except (StoreError, sa.exc.SQLAlchemyError) as exc:
            log.warning(
                "run.request_not_recorded",
                request_id=request.id,
                reason=" ".join(str(exc).split())[:300],
                consequence="this replica's own run serves it; the other replicas do not know its id",
            )

    def get(self, request_id: str) -> RunRequest | None:
        with self._cond:
            return self._requests.get(request_id)

    def last_report(self) -> dict[str, Any] | None:
        with self._cond:
            return self._last.report if self._last is not None else None

    def state(self) -> RunnerState:
        with self._cond:
            last = self._last
            return RunnerState(
                accepting=self._accepting,
                running=self._current is not None,
                queued=self._queued is not None,
                last_status=last.status if last else None,
                last_finished_at=last.finished_at if last else None,
                last_success_at=self._last_success_at,
                last_message=last.message if last else None,
            )

    def stop(self, grace_s: float, safe_point_wait_s: float) -> bool:
        """No new runs; cancel the queued one; let the current run finish within `grace_s`,
        then ask it to stop at its next safe point and wait up to `safe_point_wait_s` more.

        Returns True when no run is left going.
        """
        with self._cond:
            self._accepting = False
            queued, self._queued = self._queued, None
            if queued is not None:
                queued.status, queued.message, queued.finished_at = "cancelled", "the service shut down", self._clock()
                queued.done.set()
            self._cond.notify_all()
        if not self._thread.is_alive():
            return True
        self._thread.join(grace_s)
        if self._thread.is_alive():
            log.warning("shutdown.stopping_run", grace_s=grace_s)
            self._abort.set()
            self._thread.join(safe_point_wait_s)
        return not self._thread.is_alive()

    def _remember(self, request: RunRequest) -> None:
        self._requests[request.id] = request
        while len(self._requests) > KEEP_REQUESTS:
            oldest = next(iter(self._requests.values()))
            if oldest.status not in FINISHED:
                break
            self._requests.popitem(last=False)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._queued is None and self._accepting:
                    self._cond.wait()
                if self._queued is None:
                    return
                request, self._queued = self._queued, None
                self._current = request
                request.status, request.started_at = "running", self._clock()
                config = self._config
            try:
                self._execute(request, config)
            finally:
                with self._cond:
                    self._current = None
                    self._last = request
                    if request.status == "ok":
                        self._last_success_at = request.finished_at
                    self._cond.notify_all()
                request.done.set()
            if request.status == "ok" and config.watch and not self._warmed and self._warm is not None:
                self._warmed = True
                self._warm_entries(config)
            self._collect_garbage()

    def _collect_garbage(self) -> None:
        """A full garbage collection between cycles, not during them: over the entries `serve`
        keeps (publish.feeds) one takes some 150 ms at 50,000 articles, and after one here
        the next cycle's allocations rarely set another off before its feeds are out."""
        with self._cond:
            if self._queued is not None or not self._accepting:
                return
        gc.collect()

    def _warm_entries(self, config: Config) -> None:
        def asked() -> bool:
            with self._cond:
                return self._queued is not None or not self._accepting

        started = time.monotonic()
        try:
            assert self._warm is not None
            feeds = self._warm(config, asked)
        except (StoreError, sa.exc.SQLAlchemyError) as exc:  # a cache left cold: nothing fails
            log.warning("entries.warm_failed", reason=str(exc).splitlines()[0])
            return
        log.info("entries.warmed", feeds=feeds, duration_s=round(time.monotonic() - started, 3))

    def _execute(self, request: RunRequest, config: Config) -> None:
        bound = log.bind(request_id=request.id, source=request.source)
        bound.info("run.started")

        def waiting() -> None:
            bound.info("run.waiting", reason="another cycle holds the lock of this database")

        leading = False

        def locked() -> None:
            nonlocal leading
            leading = True
            self.replica.leader_from_now()

        extra: dict[str, Any] = {}
        if request.paths is not None:
            extra["paths"] = request.paths
            bound = bound.bind(paths=len(request.paths))
        if self.watch is not None:
            extra["watch"] = self.watch.snapshot().to_dict()
        try:
            if is_postgres(config.database_url):
                report = self._cycle(
                    config,
                    on_wait=waiting,
                    should_stop=self._abort.is_set,
                    request_id=request.id,
                    on_locked=locked,
                    on_read=self.replica.add_read,
                    **extra,
                )
            else:
                report = self._cycle(config, on_wait=waiting, should_stop=self._abort.is_set, **extra)
        except CycleError as exc:
            report = exc.report
        except BaseException as exc:  # noqa: BLE001
            # Whatever the cycle raises is this run's failure, never the runner's end; that
            # includes a KeyboardInterrupt re-raised from a parser process hit by Ctrl-C.
            bound.error("run.error", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            report = RunReport(status="failed", message=f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            if leading:
                self.replica.done_leading()
        request.finished_at = self._clock()
        request.report = report.to_dict()
        request.store_run_id = report.run_id
        request.message = report.message
        request.status = "ok" if report.status == "ok" else "failed"
        if self._metrics is not None:
            self._metrics.observe_run(request.report, request.finished_at)
        if request.paths is not None and self.watch is not None:
            self.watch.ran_cycle()
        event = bound.info if request.status == "ok" else bound.error
        event(
            "run.completed",
            status=request.status,
            run_id=report.run_id,
            reason=report.message,
            duration_s=report.duration_s,
        )


class ServiceScheduler:
    """APScheduler 3 in a background thread; each firing only asks the runner for a run."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        # Firings only enqueue, so they never overlap; misfire_grace_time=None and coalesce
        # make a late firing (suspend, busy machine) run once instead of being dropped.
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )

    def start(self, schedule: ScheduleConfig) -> None:
        """Start with a run right now, then on the schedule."""
        self._scheduler.add_job(
            self._fire,
            trigger=build_trigger(schedule),
            id=JOB_ID,
            name="feedworker cycle",
            next_run_time=datetime.now(UTC),
            replace_existing=True,
        )
        self._scheduler.start()

    def reschedule(self, schedule: ScheduleConfig) -> None:
        """Apply a new schedule (SIGHUP); raises ValueError when it is unusable."""
        self._scheduler.reschedule_job(JOB_ID, trigger=build_trigger(schedule))

    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID)
        return job.next_run_time if job is not None else None

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _fire(self) -> None:
        try:
            request, joined = self._runner.request(SCHEDULE)
        except RunnerStopped:
            return
        log.info("run.requested", source="schedule", request_id=request.id, joined=joined)


def build_trigger(schedule: ScheduleConfig) -> BaseTrigger:
    """`cron` (five fields, crontab weekdays) when set, else `every` seconds; `jitter_s` on both."""
    jitter = schedule.jitter_s or None  # up to this many seconds added to each firing
    if schedule.cron:
        minute, hour, day, month, weekday = schedule.cron.split()
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=cron_weekdays(weekday),
            timezone=UTC,
            jitter=jitter,
        )
    if schedule.every is None:
        raise ValueError("schedule: set either every or cron")
    return IntervalTrigger(seconds=schedule.every, timezone=UTC, jitter=jitter)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_weekdays(field_text: str) -> str:
    """Crontab's weekday field (0 or 7 = Sunday) as APScheduler 3 day names.

    APScheduler 3 numbers weekdays from Monday = 0, so `CronTrigger.from_crontab("0 9 * * 0")`
    would fire on Mondays; spelling the days out avoids the mismatch.
    """
    if field_text == "*":
        return "*"
    days: set[int] = set()
    for part in field_text.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad weekday step in {field_text!r}")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _weekday(low), _weekday(high)
            if last == 0 and high.strip() in ("7", "sun") and first > 0:
                last = 7  # `5-7` / `fri-sun`: through Sunday
        else:
            first = _weekday(span)
            last = 6 if step_text else first
        if first > last:
            raise ValueError(f"bad weekday range in {field_text!r}")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


def _weekday(text: str) -> int:
    text = text.strip()
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text) % 7
    raise ValueError(f"bad weekday {text!r}: use 0-7 (0 and 7 are Sunday) or sun..sat")


def _bounded(url: str) -> str:
    """`url` with a libpq connect_timeout (RECORD_CONNECT_TIMEOUT_S) unless it sets one."""
    parsed = sa.make_url(url)
    if "connect_timeout" in parsed.query:
        return url
    bounded = parsed.update_query_dict({"connect_timeout": str(RECORD_CONNECT_TIMEOUT_S)})
    return bounded.render_as_string(hide_password=False)


def _iso(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, UTC).isoformat() if value is not None else None
