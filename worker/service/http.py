"""The HTTP side of `serve`: feeds, health, metrics and run triggers as a Starlette app."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import hmac
import os
import re
import stat
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from worker.config import Config, ScheduleConfig
from worker.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from worker.service.metrics import ServiceMetrics
from worker.service.replica import ReplicaState
from worker.service.scheduler import Runner, RunnerState, RunnerStopped, build_trigger
from worker.service.status_page import StatusPage, render_status_page
from worker.status import empty_status, source_status, store_status
from worker.store import runs
from worker.store.postgres import is_postgres

__all__ = [
    "CONTENT_TYPES",
    "MAX_AGE_CAP_S",
    "MAX_RUN_ID",
    "FeedDocuments",
    "FeedFiles",
    "StoreReader",
    "StoreUnavailable",
    "create_app",
    "feed_max_age",
    "group_state",
    "health",
    "merge_sources",
    "newest_report",
    "source_states",
    "websub_links",
]

log = structlog.get_logger("worker.service")
_T = TypeVar("_T")
Document = tuple[bytes, str, datetime]  # a stored feed: body, content hash, when it changed

# The documents feedworker writes, and the only files /feeds/ serves: anything else an operator
# or another program leaves in the folder (a database, a config, a temporary file) is 404.
# Set explicitly: Debian's mimetypes says application/x-rss+xml for .rss and knows no .opml.
CONTENT_TYPES = {
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".opml": "text/x-opml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
PAGE = "index.html"  # the feeds page, also answered at / and /feeds/
# The page is static HTML with inline CSS: a browser may run, load or frame nothing of it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}
MAX_FEED_BYTES = 64 * 1024 * 1024  # far above any feed; a guard against serving something huge
MAX_RUN_ID = 2**63 - 1  # the largest SQLite integer: a larger id cannot be stored, so it is no run
# ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses, and 19 digits
# keep int() far from its 4300-digit limit.
_RUN_ID = re.compile(r"[0-9]{1,19}")
_REQUEST_ID = re.compile(r"[0-9a-f]{16}")  # the ids Runner.request gives out, on every replica
GZIP_MIN_BYTES = 512  # smaller feeds go as they are: gzip would save next to nothing
MAX_AGE_CAP_S = 86_400  # Cache-Control max-age never promises more than a day
_GZIP_CACHE_BYTES = 64 * 1024 * 1024  # compressed bodies kept, in all
_QUOTED_TAG = re.compile(r'"([^"]*)"')


def create_app(
    runner: Runner,
    metrics: ServiceMetrics,
    *,
    clock: Callable[[], float] = time.time,
    next_run: Callable[[], datetime | None] | None = None,
    store: StoreReader | None = None,
    replica: ReplicaState | None = None,
) -> Starlette:
    """The ASGI app; reads the current config from the runner on each request (SIGHUP applies).

    `next_run` tells when the scheduler fires next (ServiceScheduler.next_run_time): the feeds'
    Cache-Control max-age runs until then. Without it, the schedule alone decides.
    `store` reads the database for /runs (one engine for every request; its owner closes it).
    `replica` is this process in its group (/healthz, /metrics); by default the runner's.
    """
    reader = store if store is not None else StoreReader()
    replica = replica if replica is not None else runner.replica
    if metrics.replica is None:
        metrics.replica = replica

    def max_age() -> int:
        state = runner.state()
        upcoming = None
        if next_run is not None:
            try:
                upcoming = next_run()
            except Exception:  # noqa: BLE001  (a scheduler shutting down: use the schedule)
                upcoming = None
        return feed_max_age(runner.config.schedule, clock(), upcoming, busy=state.running or state.queued)

    def links(relative: str) -> str | None:
        config = runner.config
        return websub_links(config.websub.hubs, config.feeds.base_url + urllib.parse.quote(relative, safe="/"))

    files = FeedFiles(lambda: runner.config.feeds.dir, clock=clock, max_age=max_age, links=links)

    def stored_document(path: str) -> Document | None:
        return reader.read(runner.config, functools.partial(_stored_document, path), strict=True)

    stored = FeedDocuments(stored_document, clock=clock, max_age=max_age, links=links)

    async def feed(request: Request) -> Response:
        # `/` and `/feeds/` (no path) answer the feeds page, feeds/index.html.
        path, method, headers = request.path_params.get("path") or PAGE, request.method, request.headers
        # Replicas on PostgreSQL serve the feeds the store keeps; one process, its folder's files.
        server = stored if is_postgres(runner.config.database_url) else files
        answer = await run_in_threadpool(server.respond, path, method, headers)
        if path.lower().endswith(".html"):
            answer.headers.update(PAGE_HEADERS)
        return answer

    async def healthz(request: Request) -> Response:
        config = runner.config
        live = await run_in_threadpool(source_states, config)
        shared = is_postgres(config.database_url)
        last = await run_in_threadpool(reader.read, config, functools.partial(runs.last_finished, with_report=shared))
        state, report = runner.state(), runner.last_report()
        if shared:
            # Replicas take turns running the group's cycles: the group's last run decides.
            state, report = group_state(state, report, last)
        sources = merge_sources(live, report)
        code, body = health(state, clock(), config.server.healthy_within, sources=sources)
        body["replica"] = {"name": replica.name, "role": replica.role()}
        body["group_last_run"] = _last_run_view(last)
        return _json(body, code)

    async def livez(request: Request) -> Response:
        # Liveness: the process answers HTTP. Nothing else (a missing volume, a failed run,
        # shutting down) is a reason to restart it; /healthz says whether it is any good.
        return _json({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        config = runner.config
        live = await run_in_threadpool(source_states, config)
        metrics.observe_sources((entry["path"], entry["state"] == "ok") for entry in live)
        last = await run_in_threadpool(reader.read, config, runs.last_finished)
        if last is not None:  # None: no run yet (the gauges say 0), or the store unreadable now (kept)
            metrics.observe_group(last)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def trigger(request: Request) -> Response:
        # In a thread: on PostgreSQL the request is written to the store before it is queued.
        return await run_in_threadpool(_trigger, request, runner, metrics)

    async def latest(request: Request) -> Response:
        config = runner.config
        stored = await run_in_threadpool(reader.read, config, runs.last_report)
        # On PostgreSQL every replica answers the same: the store's last report alone.
        report = stored if is_postgres(config.database_url) else newest_report(stored, runner.last_report())
        if report is None:
            return _json({"error": "no run yet"}, 404)
        return _json(report)

    async def one_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        config = runner.config
        if is_postgres(config.database_url) and _REQUEST_ID.fullmatch(run_id):
            # A request made on any replica of the group, as the store has it: the same answer everywhere.
            viewed = await run_in_threadpool(
                reader.read, config, functools.partial(runs.request_view, request_id=run_id)
            )
            if viewed is not None:
                return _json(viewed)
        found = runner.get(run_id)  # on PostgreSQL: a request this replica could not record
        if found is not None:
            return _json(found.to_dict())
        store_id = _store_run_id(run_id)
        if store_id is not None:
            stored = await run_in_threadpool(reader.read, config, functools.partial(_stored_run, store_id))
            if stored is not None:
                return _json(stored)
        # The id is not echoed: it is whatever the client sent, up to the request line's size.
        return _json({"error": "no such run"}, 404)

    async def status_page(request: Request) -> Response:
        # The operator page: never cached (its figures change with every run and request).
        body = await run_in_threadpool(_status_page, runner.config, reader, runner, metrics, replica, clock())
        return Response(body, headers={**PAGE_HEADERS, "Cache-Control": "no-store"}, media_type="text/html")

    from worker.service.query import query_routes  # it imports this module's helpers: imported here

    routes = [
        # /feeds/query.{rss,atom,json}?topics=...: feeds of a query over the topics, rendered on request.
        *query_routes(lambda: runner.config, reader, clock=clock, max_age=max_age),
        Route("/", _guard(feed), methods=["GET", "HEAD"]),
        Route("/feeds/{path:path}", _guard(feed), methods=["GET", "HEAD"]),
        Route("/healthz", _guard(healthz), methods=["GET", "HEAD"]),
        Route("/livez", _guard(livez), methods=["GET", "HEAD"]),
        Route("/metrics", _guard(metrics_endpoint), methods=["GET"]),
        Route("/status", _guard(status_page), methods=["GET", "HEAD"]),
        Route("/runs", _guard(trigger), methods=["POST"]),
        Route("/runs/latest", _guard(latest), methods=["GET"]),
        Route("/runs/{run_id}", _guard(one_run), methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_GZipUntagged, minimum_size=GZIP_MIN_BYTES)])


class _GZipUntagged:
    """Starlette's GZipMiddleware for responses without an ETag.

    A response with an ETag (a feed) chose its encoding itself and carries the ETag of that
    encoding; compressing it here would send the identity body's strong ETag with gzip bytes.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], minimum_size: int) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def app(scope: Scope, receive: Receive, compressing_send: Send) -> None:
            direct = False

            async def forward(message: Message) -> None:
                nonlocal direct
                if message["type"] == "http.response.start":
                    direct = any(name.lower() == b"etag" for name, _ in message.get("headers", ()))
                await (send if direct else compressing_send)(message)

            await self.app(scope, receive, forward)

        await GZipMiddleware(app, minimum_size=self.minimum_size)(scope, receive, send)


def _guard(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """One log event per request error, and a JSON 500 instead of a traceback."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:
            log.exception("request.error", method=request.method, path=request.url.path)
            return _json({"error": "internal error"}, 500)

    return guarded


def _status_page(
    config: Config, reader: StoreReader, runner: Runner, metrics: ServiceMetrics, replica: ReplicaState, now: float
) -> bytes:
    """GET /status: `status --json`'s document, read on the server's engine (store_status), this
    process's state and its /metrics counters, and the watcher's state. A store that cannot be
    read leaves what this process knows (its own last run, the folders), with a notice: 200."""
    try:
        stored = reader.read(config, functools.partial(store_status, config=config), strict=True)
        store = "ok" if stored is not None else "none"
    except StoreUnavailable:
        stored, store = None, "unreadable"
    if stored is None:
        own = runner.last_report()  # a run that failed before the store had a schema, or could be read
        stored = {**empty_status(config), "sources": source_status(config, own), "last_run": own}
        if store == "unreadable":
            stored.update(articles=None, topics=None, quarantined=None, enrich=None)
    state = runner.state()

    def counted(outcome: str) -> int:
        return int(metrics.registry.get_sample_value("feedworker_runs_total", {"outcome": outcome}) or 0)

    process = {
        "name": replica.name,
        "role": replica.role(),
        "running": state.running,
        "queued": state.queued,
        "accepting": state.accepting,
        "runs_ok": counted("ok"),
        "runs_failed": counted("failed"),
        "last_success_at": state.last_success_at,
    }
    watch = metrics.watch.snapshot().to_dict() if metrics.watch is not None else {"state": "off"}
    page = StatusPage(datetime.fromtimestamp(now, UTC), store, stored, process, watch)
    return render_status_page(page, secrets=_secrets(config))


def _secrets(config: Config) -> list[str]:
    """What no page may show: the server token and the database password (as given and decoded)."""
    secrets = [config.server.token]
    try:
        password = sa.make_url(config.database_url).password
    except (sa.exc.ArgumentError, ValueError):
        password = None
    if password:
        secrets += [str(password), urllib.parse.quote(str(password), safe="")]
    return [secret for secret in secrets if len(secret) >= 4]  # as config's messages: shorter ones are no secret


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


def _trigger(request: Request, runner: Runner, metrics: ServiceMetrics) -> Response:
    token = runner.config.server.token
    client = request.client.host if request.client else None
    if not token:
        metrics.triggers.labels("forbidden").inc()
        log.warning("trigger.refused", reason="server.token is empty", client=client)
        return _json({"error": "triggers are disabled: server.token is not set"}, 403)
    if not _bearer_matches(request.headers.get("authorization"), token):
        metrics.triggers.labels("unauthorized").inc()
        log.warning("trigger.refused", reason="missing or wrong bearer token", client=client)
        return _json(
            {"error": "a valid Authorization: Bearer token is required"},
            401,
            {"WWW-Authenticate": 'Bearer realm="feedworker"'},
        )
    try:
        run, joined = runner.request("http")
    except RunnerStopped:
        metrics.triggers.labels("unavailable").inc()
        return _json({"error": "shutting down: no new runs"}, 503)
    metrics.triggers.labels("accepted").inc()
    log.info("run.requested", source="http", request_id=run.id, joined=joined, client=client)
    return _json({"run_id": run.id, "status": run.status}, 202, {"Location": f"/runs/{run.id}"})


def _bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time, so the comparison does not tell how much of a guess was right.
    return hmac.compare_digest(given.strip().encode(), token.encode())


def health(
    state: RunnerState, now: float, healthy_within: float, *, sources: Iterable[dict[str, Any]] = ()
) -> tuple[int, dict[str, Any]]:
    """200 when the last run of this server succeeded less than `healthy_within` seconds ago and
    every source folder is there and readable (`sources`: merge_sources' entries)."""
    body: dict[str, Any] = {"running": state.running, "queued": state.queued}
    if state.last_success_at is not None:
        body["last_success_age_s"] = round(now - state.last_success_at, 3)
    sources = list(sources)
    if sources:
        body["sources"] = sources
    if not state.accepting:
        return 503, {"status": "unavailable", "reason": "shutting down", **body}
    for entry in sources:
        if entry.get("state") != "ok":
            return 503, {"status": "unavailable", "reason": f"source folder {entry['state']}: {entry['path']}", **body}
    for entry in sources:
        if entry.get("last_run_state") not in (None, "ok"):
            reason = f"source folder {entry['path']} was {entry['last_run_state']} at the last run"
            return 503, {"status": "unavailable", "reason": reason, **body}
    if state.last_status is None:
        return 503, {"status": "unavailable", "reason": "no run yet", **body}
    if state.last_status != "ok":
        return 503, {"status": "unavailable", "reason": f"last run failed: {state.last_message}", **body}
    age = now - (state.last_success_at or 0.0)
    if age > healthy_within:
        reason = f"last successful run {age:.0f}s ago, more than server.healthy_within ({healthy_within:.0f}s)"
        return 503, {"status": "unavailable", "reason": reason, **body}
    return 200, {"status": "ok", **body}


def source_states(config: Config) -> list[dict[str, Any]]:
    """Each source folder in config order, checked now (one stat and one access call, no scan):
    {"path", "state": "ok" | "missing" | "unreadable"}, as the run report classifies them:
    missing when it or a folder on the way does not exist; unreadable when it is no folder,
    cannot be reached (permissions, a dead network mount) or not listed by this user."""
    states = []
    for source in config.sources:
        path = str(source.path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            state = "missing"
        except OSError:
            state = "unreadable"
        else:
            readable = stat.S_ISDIR(st.st_mode) and os.access(path, os.R_OK | os.X_OK)
            state = "ok" if readable else "unreadable"
        states.append({"path": path, "state": state})
    return states


def merge_sources(live: list[dict[str, Any]], report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The live states with the last run's view of each folder: `files` seen under it and its
    `last_run_state` (read defensively: older reports have no `sources`)."""
    seen: dict[str, dict[str, Any]] = {}
    for entry in (report or {}).get("sources") or []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            seen[entry["path"]] = entry
    merged = []
    for entry in live:
        last = seen.get(entry["path"], {})
        files = last.get("files")
        merged.append(
            {
                **entry,
                "files": files if isinstance(files, int) else None,
                "last_run_state": last.get("state") if isinstance(last.get("state"), str) else None,
            }
        )
    return merged


def feed_max_age(schedule: ScheduleConfig, now: float, next_run: datetime | None, *, busy: bool = False) -> int:
    """Cache-Control max-age of the feeds: the seconds until the next scheduled run, when no
    scheduled run can change them, between 0 and MAX_AGE_CAP_S.

    0 while a run is under way or queued. `next_run` is the scheduler's next firing (jitter
    included); without it, the next cron firing from now, or `every` seconds. Runs nobody
    scheduled (`POST /runs`, `feedworker run`) may change a feed sooner: a cache serves the
    old one until its max-age ends.
    """
    if busy:
        return 0
    if next_run is not None:
        left = next_run.timestamp() - now
    elif schedule.cron:
        trigger = build_trigger(schedule.model_copy(update={"jitter_s": 0.0}))
        fire = trigger.get_next_fire_time(None, datetime.fromtimestamp(now, UTC))
        left = fire.timestamp() - now if fire is not None else MAX_AGE_CAP_S
    else:
        left = schedule.every or 0.0
    return int(max(0.0, min(float(MAX_AGE_CAP_S), left)))


def newest_report(stored: dict[str, Any] | None, in_process: dict[str, Any] | None) -> dict[str, Any] | None:
    """The later of the database's last report (any process) and this server's last one.

    A report without a run id failed before it could get one, so it is newer than any stored.
    """
    if in_process is None:
        return stored
    if stored is None or in_process.get("run_id") is None:
        return in_process
    return in_process if in_process["run_id"] >= (stored.get("run_id") or 0) else stored


def group_state(
    state: RunnerState, report: dict[str, Any] | None, last: runs.LastRun | None
) -> tuple[RunnerState, dict[str, Any] | None]:
    """For /healthz on PostgreSQL: this process's runner state and last report, with the group's
    newest finished run (`last`, any replica's, read with its report) as the last run, so a
    replica whose peers run the cycles is healthy while theirs succeed.

    This process's own last run still decides when it is newer and never reached the store
    (it failed before it had a run id, e.g. the database unreachable from here), and when
    the store has no finished run or cannot be read (`last` None).
    """
    if last is None:
        return state, report
    ended = last.finished_at.timestamp()
    unstored = report is not None and report.get("run_id") is None
    if unstored and state.last_finished_at is not None and state.last_finished_at > ended:
        return state, report
    message = (last.report or {}).get("message")
    grouped = dataclasses.replace(
        state,
        last_status="ok" if last.status == "ok" else "failed",
        last_finished_at=ended,
        last_success_at=last.last_success_at.timestamp() if last.last_success_at is not None else None,
        last_message=message if isinstance(message, str) else None,
    )
    return grouped, last.report


def _last_run_view(last: runs.LastRun | None) -> dict[str, Any] | None:
    """The group's last run as /healthz shows it."""
    if last is None:
        return None
    return {
        "run_id": last.run_id,
        "status": last.status,
        "finished_at": last.finished_at.isoformat(),
        "replica": last.replica,
    }


def _store_run_id(text: str) -> int | None:
    """The database run id `text` spells (plain ASCII decimal, 1..MAX_RUN_ID), else None."""
    if _RUN_ID.fullmatch(text) is None:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_RUN_ID else None


def _stored_run(run_id: int, conn: Connection) -> dict[str, Any] | None:
    from worker.store.schema import RUN

    row = conn.execute(sa.select(RUN.c.status, RUN.c.report_json).where(RUN.c.id == run_id)).first()
    if row is None:
        return None
    report = orjson.loads(row.report_json) if row.report_json else None
    return {"run_id": run_id, "status": row.status, "report": report}


def _stored_document(path: str, conn: Connection) -> Document | None:
    from worker.store.documents import document

    return document(conn, path)


class StoreUnavailable(Exception):
    """The store cannot be read now (the database away, a schema of another version)."""


class StoreReader:
    """The HTTP handlers' one engine on the database: read-only (it never creates, migrates or
    writes the database), made at the first read, made again only when SIGHUP changed
    `database`, and closed by `close` when the server stops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._url: str | None = None

    def read(self, config: Config, read: Callable[[Connection], _T], *, strict: bool = False) -> _T | None:
        """`read(connection)`; None when there is no store yet or it cannot be read (logged).
        `strict`: a store that cannot be read raises StoreUnavailable instead."""
        from worker.store.db import check_schema
        from worker.store.errors import StoreError

        path = config.database_path
        if path is not None and not path.exists():
            return None  # no run yet: never create a database just to answer a GET
        try:
            engine = self._engine_for(config)
            if not check_schema(engine):
                return None  # a first run killed before it made the schema
            with engine.connect() as conn:
                return read(conn)
        except StoreError as exc:
            reason = str(exc)
        except sa.exc.SQLAlchemyError as exc:
            reason = " ".join(str(exc).split())[:300]
        log.warning("request.store_unreadable", reason=reason)
        if strict:
            raise StoreUnavailable(reason)
        return None

    def _engine_for(self, config: Config) -> Engine:
        from worker.store.db import connect

        with self._lock:
            if self._engine is None or self._url != config.database_url:
                if self._engine is not None:
                    self._engine.dispose()
                self._engine = connect(config.database_url, busy_timeout_s=config.busy_timeout_s, readonly=True)
                self._url = config.database_url
            return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = self._url = None


def _resolve(root: Path, relative: str) -> tuple[str, list[str]] | None:
    """The feed document under `root` that a decoded URL path names, as (the real path of
    `root`, the segments of the real path of the file below it); None when it names anything else.

    Refused: empty, `.`/`..` and hidden segments (the writer's temporary files are hidden),
    backslashes, NUL, anything whose real path (symlinks resolved) leaves `root`, and any name,
    asked for or real, that is hidden or does not end in a suffix of CONTENT_TYPES.
    """
    parts = relative.split("/")
    if not relative or any(not part or part.startswith(".") or "\\" in part or "\x00" in part for part in parts):
        return None
    if not _is_feed_name(parts[-1]):
        return None
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, candidate]) != real_root or candidate == real_root:
        return None
    # A symlink inside the folder may point at a hidden or non-feed file inside it too.
    real_parts = os.path.relpath(candidate, real_root).split(os.sep)
    if any(part.startswith(".") for part in real_parts) or not _is_feed_name(real_parts[-1]):
        return None
    return real_root, real_parts


def _is_feed_name(name: str) -> bool:
    stem, dot, suffix = name.rpartition(".")
    return bool(stem) and bool(dot) and f".{suffix.lower()}" in CONTENT_TYPES


def _open_feed(real_root: str, parts: list[str]) -> tuple[int, os.stat_result] | None:
    """A read-only descriptor of the regular file `parts` names below `real_root`, and its stat; or None.

    Each folder below the root is opened in the one above it without following symlinks, so a
    symlink swapped in after _resolve checked the path is refused, not followed. O_NONBLOCK:
    opening a FIFO for reading waits for a writer, which would hold a server thread for good;
    with it the open returns at once, and fstat refuses anything that is not a regular file.
    """
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | cloexec)
    except OSError:
        return None
    try:
        for folder in parts[:-1]:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | cloexec, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | cloexec, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        st = os.fstat(file_fd)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FEED_BYTES:
        os.close(file_fd)
        return None
    return file_fd, st


_Key = tuple[Any, ...]  # (device, inode, size, mtime_ns) of a file; ("document", hash) of a stored feed


# Why not Starlette's StaticFiles / FileResponse (starlette 1.10, read for issue 12): they
# would lose behaviour the tests check (tests/test_http_readers.py, test_service.py,
# test_http_hardening.py):
# - one ETag for every encoding: FileResponse's ETag is md5(mtime-size) of the file, and
#   GZipMiddleware compresses the body and keeps that strong ETag, so the gzip and identity
#   bodies would share a tag (test_gzip_and_identity_bodies_have_their_own_etags);
# - StaticFiles' 304 (NotModifiedResponse) drops Last-Modified
#   (test_vary_max_age_and_a_304_that_repeats_the_validators), and its If-Modified-Since
#   compares `parsedate` tuples, ignoring the zone offset;
# - Last-Modified is always the mtime: none while the second a feed was written in lasts
#   or for a future mtime (test_a_feed_replaced_within_one_second_...,
#   test_a_feed_asked_for_in_the_second_it_was_written_...);
# - FileResponse opens the file again by name when it sends it: a feed replaced in between
#   goes out with the old file's ETag and Content-Length, and a FIFO swapped in blocks a
#   thread; here the checked descriptor (O_NOFOLLOW per folder, O_NONBLOCK) is the one read;
# - StaticFiles follows symlinks and serves any name: no suffix allow-list, no refusal of
#   hidden names or of links to hidden or non-feed files (test_only_feed_documents_are_served),
#   and it answers 500 while the feeds folder does not exist and 401 on a permission error.
# It would also add byte ranges (206) that no reader of feeds needs.
class FeedFiles:
    """Serves the files of the feeds folder with content-hash ETags, gzip and conditional GETs.

    Each encoding is its own representation with its own strong ETag: `"<hash>"` for the
    bytes as they are, `"<hash>-gzip"` for them gzipped (deterministic: fixed level, no name,
    no timestamp), as Apache names them. If-None-Match is compared (weakly) with the ETag of
    the representation the request selects.

    Last-Modified is the file's mtime, to the second. Two versions written within one second
    share that date, so a client revalidating with it alone (If-Modified-Since) could get 304
    for bytes it never saw. So while the second a version was written in lasts (or when its
    mtime is in the future: a skewed clock), it is answered at once with its ETag alone: no
    Last-Modified, and If-Modified-Since is not used for it. Once that second is over, the
    date names exactly one version, the last one written in it (a later write gets a later
    mtime). A new article is served the moment its feed is written (issue 15: the watcher's
    latency), not up to a second later.
    """

    def __init__(
        self,
        root: Callable[[], Path],
        *,
        clock: Callable[[], float] = time.time,
        max_age: Callable[[], int] = lambda: 0,
        links: Callable[[str], str | None] = lambda relative: None,
    ) -> None:
        self._root = root
        self._clock = clock
        self._max_age = max_age
        self._links = links
        self._lock = threading.Lock()
        # (device, inode, size, mtime_ns) -> content hash: feeds are replaced atomically (a new
        # inode) whenever their bytes change, so the key changes exactly when they do.
        self._hashes: OrderedDict[_Key, str] = OrderedDict()
        self._gzipped: OrderedDict[_Key, bytes] = OrderedDict()
        self._gzipped_bytes = 0

    def respond(self, relative: str, method: str, headers: Any) -> Response:
        """The response (without Last-Modified while the second the file was written in lasts)."""
        resolved = _resolve(self._root(), relative)
        opened = None if resolved is None else _open_feed(*resolved)
        if resolved is None or opened is None:
            return _not_found()
        fd, st = opened
        media_type = CONTENT_TYPES[os.path.splitext(resolved[1][-1])[1].lower()]
        modified = st.st_mtime_ns // 1_000_000_000
        dated = modified + 1 <= self._clock()  # that second is over: the date names one version
        with os.fdopen(fd, "rb") as handle:
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                digest = self._hashes.get(key)
            data = None
            if digest is None:
                data = handle.read()
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                self._remember_hash(key, digest)
            compressed = st.st_size >= GZIP_MIN_BYTES and _prefers_gzip(headers.get("accept-encoding"))
            etag, meta = _validators(
                digest, compressed, modified if dated else None, self._max_age(), self._links(relative)
            )
            if _not_modified(headers, etag, modified if dated else None):
                return Response(status_code=304, headers=meta)
            if compressed:
                body = self._gzip(key, lambda: data if data is not None else handle.read())
                meta["Content-Encoding"] = "gzip"
            elif method == "HEAD":
                body = b""
            else:
                body = data if data is not None else handle.read()
        if method == "HEAD":
            return _head(meta, media_type, len(body) if compressed else st.st_size)
        return Response(body, 200, meta, media_type=media_type)

    def _remember_hash(self, key: _Key, digest: str) -> None:
        with self._lock:
            self._hashes[key] = digest
            while len(self._hashes) > 4096:
                self._hashes.popitem(last=False)

    def _gzip(self, key: _Key, read: Callable[[], bytes]) -> bytes:
        with self._lock:
            body = self._gzipped.get(key)
            if body is not None:
                self._gzipped.move_to_end(key)
                return body
        body = gzip.compress(read(), compresslevel=6, mtime=0)
        with self._lock:
            if key not in self._gzipped:
                self._gzipped[key] = body
                self._gzipped_bytes += len(body)
                while self._gzipped_bytes > _GZIP_CACHE_BYTES and len(self._gzipped) > 1:
                    self._gzipped_bytes -= len(self._gzipped.popitem(last=False)[1])
        return body


class FeedDocuments(FeedFiles):
    """Serves the feeds a PostgreSQL store keeps (several replicas: each serves every feed, with
    the same bytes and validators), as FeedFiles serves files: the ETag is the stored content
    hash, Last-Modified the time the stored bytes changed. Only feed paths are looked up."""

    def __init__(
        self,
        document: Callable[[str], Document | None],
        *,
        clock: Callable[[], float] = time.time,
        max_age: Callable[[], int] = lambda: 0,
        links: Callable[[str], str | None] = lambda relative: None,
    ) -> None:
        super().__init__(lambda: Path("."), clock=clock, max_age=max_age, links=links)
        self._document = document

    def respond(self, relative: str, method: str, headers: Any) -> Response:
        parts = relative.split("/")
        shapes = (
            len(parts) == 1 or (len(parts) == 2 and parts[0] == "topics") or (len(parts) == 3 and parts[0] == "archive")
        )
        named = shapes and _is_feed_name(parts[-1])
        if not named or any(part.startswith(".") for part in parts):
            return _not_found()
        try:
            found = self._document(relative)
        except StoreUnavailable:
            # Not "gone": a reader keeps the feed and asks again (the store is back soon, or
            # another replica answers).
            return Response("Service Unavailable", 503, {"Retry-After": "30"}, media_type="text/plain; charset=utf-8")
        if found is None:
            return _not_found()
        data, digest, modified_at = found
        media_type = CONTENT_TYPES[os.path.splitext(parts[-1])[1].lower()]
        modified = int(modified_at.timestamp())
        dated = modified + 1 <= self._clock()
        compressed = len(data) >= GZIP_MIN_BYTES and _prefers_gzip(headers.get("accept-encoding"))
        etag, meta = _validators(
            digest, compressed, modified if dated else None, self._max_age(), self._links(relative)
        )
        if _not_modified(headers, etag, modified if dated else None):
            return Response(status_code=304, headers=meta)
        body = data
        if compressed:
            body = self._gzip(("document", digest), lambda: data)
            meta["Content-Encoding"] = "gzip"
        if method == "HEAD":
            return _head(meta, media_type, len(body))
        return Response(body, 200, meta, media_type=media_type)


def _validators(
    digest: str, compressed: bool, modified: int | None, max_age: int, link: str | None = None
) -> tuple[str, dict[str, str]]:
    """The ETag of the representation chosen, and the headers every feed response carries
    (`link`: the WebSub Link header, when hubs are configured)."""
    etag = f'"{digest}-gzip"' if compressed else f'"{digest}"'
    meta = {
        "ETag": etag,
        "Cache-Control": f"max-age={max_age}",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if modified is not None:
        meta["Last-Modified"] = formatdate(modified, usegmt=True)
    if link is not None:
        meta["Link"] = link
    return etag, meta


def websub_links(hubs: Sequence[str], self_url: str) -> str | None:
    """The Link header of a feed when WebSub hubs are configured: each hub, then the feed itself
    (RFC 8288; a URL holds no `>`, config refuses hubs with one)."""
    if not hubs:
        return None
    return ", ".join([*(f'<{hub}>; rel="hub"' for hub in hubs), f'<{self_url}>; rel="self"'])


def _head(meta: dict[str, str], media_type: str, length: int) -> Response:
    response = Response(b"", 200, meta, media_type=media_type)
    response.headers["Content-Length"] = str(length)
    return response


def _not_found() -> Response:
    return Response("Not Found", 404, media_type="text/plain; charset=utf-8")


def _not_modified(headers: Any, etag: str, last_modified: int | None) -> bool:
    """RFC 9110 13.1.2-13.2.2: If-None-Match, when present, decides by a weak comparison with
    `etag` (`*` and lists included); else If-Modified-Since, compared as a date (a later one
    too), with `last_modified`, None while no date is sent for this version."""
    if_none_match = (
        ", ".join(headers.getlist("if-none-match")) if hasattr(headers, "getlist") else (headers.get("if-none-match"))
    )
    if if_none_match:
        return _etag_matches(if_none_match, etag)
    if last_modified is None:
        return False
    values = headers.getlist("if-modified-since") if hasattr(headers, "getlist") else [headers.get("if-modified-since")]
    if len(values) != 1 or not values[0]:
        return False  # absent, or more than one: ignored
    try:
        since = parsedate_to_datetime(values[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)  # "-0000": UTC too
    return last_modified <= since.timestamp()


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison: W/ on either side is ignored; `*` matches any representation."""
    opaque = etag.removeprefix("W/")
    tags = [f'"{tag}"' for tag in _QUOTED_TAG.findall(header)]
    if not tags:  # unquoted tags, as some clients send them
        tags = [f'"{part.strip().removeprefix("W/").strip(chr(34))}"' for part in header.split(",")]
    return header.strip() == "*" or any(part.strip() == "*" for part in header.split(",")) or opaque in tags


def _prefers_gzip(accept_encoding: str | None) -> bool:
    """Whether Accept-Encoding makes gzip acceptable and not less preferred than identity."""
    if not accept_encoding:
        return False
    q_gzip = q_identity = q_any = None
    for item in accept_encoding.split(","):
        coding, *parameters = item.split(";")
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also nan
                    q = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            q_gzip = max(q, q_gzip or 0.0)
        elif coding == "identity":
            q_identity = q
        elif coding == "*":
            q_any = q
    if q_gzip is None:
        q_gzip = q_any if q_any is not None else 0.0
    if q_identity is None:
        q_identity = 1.0 if q_any is None else max(q_any, 0.001)  # identity stays acceptable
    return q_gzip > 0.0 and q_gzip >= q_identity
