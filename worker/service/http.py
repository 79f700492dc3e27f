"""The HTTP side of `serve`: feeds, health, metrics and run triggers as a Starlette app."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.config import Config
from worker.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from worker.service.metrics import ServiceMetrics
from worker.service.scheduler import Runner, RunnerState, RunnerStopped
from worker.store import runs

__all__ = [
    "CONTENT_TYPES",
    "MAX_RUN_ID",
    "FeedFiles",
    "create_app",
    "health",
    "newest_report",
    "resolve_feed_path",
]

log = structlog.get_logger("worker.service")

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
MAX_FEED_BYTES = 64 * 1024 * 1024  # far above any feed; a guard against serving something huge
MAX_RUN_ID = 2**63 - 1  # the largest SQLite integer: a larger id cannot be stored, so it is no run
# ASCII digits only: str.isdigit() also takes '²' and other digits int() refuses, and 19 digits
# keep int() far from its 4300-digit limit.
_RUN_ID = re.compile(r"[0-9]{1,19}")


def create_app(runner: Runner, metrics: ServiceMetrics, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app; reads the current config from the runner on each request (SIGHUP applies)."""
    files = FeedFiles(lambda: runner.config.feeds.dir)

    async def feed(request: Request) -> Response:
        return await run_in_threadpool(files.respond, request.path_params["path"], request.method, request.headers)

    async def healthz(request: Request) -> Response:
        code, body = health(runner.state(), clock(), runner.config.server.healthy_within)
        return _json(body, code)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def trigger(request: Request) -> Response:
        return _trigger(request, runner, metrics)

    async def latest(request: Request) -> Response:
        config = runner.config
        stored = await run_in_threadpool(_stored_last_report, config)
        report = newest_report(stored, runner.last_report())
        if report is None:
            return _json({"error": "no run yet"}, 404)
        return _json(report)

    async def one_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        found = runner.get(run_id)
        if found is not None:
            return _json(found.to_dict())
        store_id = _store_run_id(run_id)
        if store_id is not None:
            stored = await run_in_threadpool(_stored_run, runner.config, store_id)
            if stored is not None:
                return _json(stored)
        # The id is not echoed: it is whatever the client sent, up to the request line's size.
        return _json({"error": "no such run"}, 404)

    routes = [
        Route("/feeds/{path:path}", _guard(feed), methods=["GET", "HEAD"]),
        Route("/healthz", _guard(healthz), methods=["GET", "HEAD"]),
        Route("/metrics", _guard(metrics_endpoint), methods=["GET"]),
        Route("/runs", _guard(trigger), methods=["POST"]),
        Route("/runs/latest", _guard(latest), methods=["GET"]),
        Route("/runs/{run_id}", _guard(one_run), methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GZipMiddleware, minimum_size=512)])


def _guard(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """One log event per request error, and a JSON 500 instead of a traceback."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:  # noqa: BLE001
            log.exception("request.error", method=request.method, path=request.url.path)
            return _json({"error": "internal error"}, 500)

    return guarded


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
        return _json({"error": "a valid Authorization: Bearer token is required"}, 401,
                     {"WWW-Authenticate": 'Bearer realm="feedworker"'})
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


def health(state: RunnerState, now: float, healthy_within: float) -> tuple[int, dict[str, Any]]:
    """200 when the last run of this server succeeded less than `healthy_within` seconds ago."""
    body: dict[str, Any] = {"running": state.running, "queued": state.queued}
    if state.last_success_at is not None:
        body["last_success_age_s"] = round(now - state.last_success_at, 3)
    if not state.accepting:
        return 503, {"status": "unavailable", "reason": "shutting down", **body}
    if state.last_status is None:
        return 503, {"status": "unavailable", "reason": "no run yet", **body}
    if state.last_status != "ok":
        return 503, {"status": "unavailable", "reason": f"last run failed: {state.last_message}", **body}
    age = now - (state.last_success_at or 0.0)
    if age > healthy_within:
        reason = f"last successful run {age:.0f}s ago, more than server.healthy_within ({healthy_within:.0f}s)"
        return 503, {"status": "unavailable", "reason": reason, **body}
    return 200, {"status": "ok", **body}


def newest_report(stored: dict[str, Any] | None, in_process: dict[str, Any] | None) -> dict[str, Any] | None:
    """The later of the database's last report (any process) and this server's last one.

    A report without a run id failed before it could get one, so it is newer than any stored.
    """
    if in_process is None:
        return stored
    if stored is None or in_process.get("run_id") is None:
        return in_process
    return in_process if in_process["run_id"] >= (stored.get("run_id") or 0) else stored


def _store_run_id(text: str) -> int | None:
    """The database run id `text` spells (plain ASCII decimal, 1..MAX_RUN_ID), else None."""
    if _RUN_ID.fullmatch(text) is None:
        return None
    value = int(text)
    return value if 1 <= value <= MAX_RUN_ID else None


def _stored_last_report(config: Config) -> dict[str, Any] | None:
    return _read_store(config, runs.last_report)


def _stored_run(config: Config, run_id: int) -> dict[str, Any] | None:
    from worker.store.models import Run

    table = Run.__table__

    def read(conn: Any) -> dict[str, Any] | None:
        row = conn.execute(sa.select(table.c.status, table.c.report_json).where(table.c.id == run_id)).first()
        if row is None:
            return None
        report = orjson.loads(row.report_json) if row.report_json else None
        return {"run_id": run_id, "status": row.status, "report": report}

    return _read_store(config, read)


def _read_store(config: Config, read: Callable[[Any], Any]) -> Any:
    from worker.store.db import connect
    from worker.store.errors import StoreError

    path = config.database_path
    if path is not None and not path.exists():
        return None  # never create a database just to answer a GET
    try:
        engine = connect(config.database_url)
    except StoreError as exc:
        log.warning("request.store_unreadable", reason=str(exc))
        return None
    try:
        with engine.connect() as conn:
            return read(conn)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("request.store_unreadable", reason=" ".join(str(exc).split())[:300])
        return None
    finally:
        engine.dispose()


def resolve_feed_path(root: Path, relative: str) -> Path | None:
    """The feed document under `root` that a decoded URL path names, or None when it names anything else.

    Refused: empty, `.`/`..` and hidden segments (the writer's temporary files are hidden),
    backslashes, NUL, anything whose real path (symlinks resolved) leaves `root`, and any name,
    asked for or real, that is hidden or does not end in a suffix of CONTENT_TYPES.
    """
    resolved = _resolve(root, relative)
    return None if resolved is None else Path(resolved[0], *resolved[1])


def _resolve(root: Path, relative: str) -> tuple[str, list[str]] | None:
    """(the real path of `root`, the segments of the real path of the file below it), or None."""
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


class FeedFiles:
    """Serves the files of the feeds folder with strong content-hash ETags and conditional GETs."""

    def __init__(self, root: Callable[[], Path]) -> None:
        self._root = root
        # (device, inode, size, mtime_ns) -> ETag: feeds are replaced atomically (a new
        # inode) whenever their bytes change, so the key changes exactly when they do.
        self._etags: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()

    def respond(self, relative: str, method: str, headers: Any) -> Response:
        resolved = _resolve(self._root(), relative)
        opened = None if resolved is None else _open_feed(*resolved)
        if opened is None:
            return _not_found()
        fd, st = opened
        media_type = CONTENT_TYPES[os.path.splitext(resolved[1][-1])[1].lower()]
        with os.fdopen(fd, "rb") as handle:
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            etag = self._etags.get(key)
            data = None
            if etag is None:
                data = handle.read()
                etag = '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'
                self._remember(key, etag)
            meta = {
                "ETag": etag,
                "Last-Modified": formatdate(st.st_mtime, usegmt=True),
                "Cache-Control": "no-cache",  # always revalidate: cheap with the ETag, and never stale
                "X-Content-Type-Options": "nosniff",
            }
            if _not_modified(headers, etag, st.st_mtime):
                return Response(status_code=304, headers=meta)
            if method == "HEAD":
                return _head(meta, media_type, st.st_size)
            if data is None:
                data = handle.read()
        return Response(data, 200, meta, media_type=media_type)

    def _remember(self, key: tuple[int, int, int, int], etag: str) -> None:
        self._etags[key] = etag
        while len(self._etags) > 4096:
            self._etags.popitem(last=False)


def _head(meta: dict[str, str], media_type: str, length: int) -> Response:
    response = Response(b"", 200, meta, media_type=media_type)
    response.headers["Content-Length"] = str(length)
    return response


def _not_found() -> Response:
    return Response("Not Found", 404, media_type="text/plain; charset=utf-8")


def _not_modified(headers: Any, etag: str, mtime: float) -> bool:
    """RFC 9110: If-None-Match (weak comparison) decides when present; else If-Modified-Since."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False
