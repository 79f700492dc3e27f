"""`GET /feeds/query.{rss,atom,json}?topics=a,b&match=any|all&provider=x`: feeds of a query over the topics.

Rendered on request (publish.query) from the store, in a server thread, and kept per canonical
query until a cycle finishes: the cache is keyed on the store's last finished run, so a cycle
run by any process (another replica on PostgreSQL, `feedworker run`) ends it too. Answered
as the stored feeds are: content-hash ETags per encoding, Last-Modified, 304, gzip,
Cache-Control. Imported by `http.create_app` when it builds the app (it uses that module's helpers).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from worker.config import Config
from worker.model import FEED_FORMATS, FeedSettings
from worker.pipeline import feed_settings
from worker.publish.query import FeedQuery, QueryError, QueryFeed, parse_query, render_query
from worker.service.http import (
    CONTENT_TYPES,
    GZIP_MIN_BYTES,
    FeedFiles,
    StoreReader,
    StoreUnavailable,
    _guard,
    _head,
    _not_modified,
    _prefers_gzip,
    _validators,
)
from worker.store import runs
from worker.store.documents import document_etag

__all__ = ["CACHE_BYTES", "CACHE_ENTRIES", "QueryFeeds", "query_routes"]

_T = TypeVar("_T")
CACHE_ENTRIES = 256  # canonical queries kept (least recently used first out)
CACHE_BYTES = 64 * 1024 * 1024  # their bodies, every format, in all
_Key = tuple[int | None, FeedSettings, str]  # the store's last finished run, the settings, the canonical query
_Cached = tuple[QueryFeed | None, tuple[str, ...]]  # the feed (None: no such topic) and each format's hash


class QueryFeeds(FeedFiles):
    """Answers query feed requests; FeedFiles' gzip cache keeps their compressed bodies."""

    def __init__(
        self,
        settings: Callable[[], FeedSettings],
        read: Callable[[Callable[[Connection], Any]], Any],
        *,
        clock: Callable[[], float] = time.time,
        max_age: Callable[[], int] = lambda: 0,
    ) -> None:
        super().__init__(lambda: Path("."), clock=clock, max_age=max_age)
        self._settings = settings
        self._read = read  # `read(connection)` on the store: None without a store, StoreUnavailable when unreadable
        self._cache: OrderedDict[_Key, _Cached] = OrderedDict()
        self._cache_bytes = 0
        self._generation: int | None = None  # the last finished run the cache holds renderings after
        self._cache_lock = threading.Lock()

    def answer(self, kind: str, raw: bytes, method: str, headers: Any) -> Response:
        """The response to a request for `query.<kind>?<raw>` (`kind` one of FEED_FORMATS)."""
        try:
            # ASCII as the HTTP server passes it; raw UTF-8 (from another server) is redirected to its encoded form.
            raw_query = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _error("the query is not UTF-8", 400)
        try:
            query = parse_query(raw_query)
        except QueryError as exc:
            return _error(str(exc), 400)
        canonical = query.canonical()
        if raw_query != canonical:
            # One URL per feed, so readers and caches do not keep two copies of it.
            return Response(status_code=301, headers={"Location": f"/feeds/query.{kind}?{canonical}"})
        try:
            found = self._feed(query, canonical)
        except StoreUnavailable:
            return Response("Service Unavailable", 503, {"Retry-After": "30"}, media_type="text/plain; charset=utf-8")
        feed, digests = found
        if feed is None:
            return _error("no such topic", 404)  # which one is not said: the input is not echoed
        data, digest = feed.body(kind), digests[FEED_FORMATS.index(kind)]
        modified = int(feed.updated.timestamp())
        dated = modified + 1 <= self._clock()  # a date in the future (a skewed clock) is not sent
        compressed = len(data) >= GZIP_MIN_BYTES and _prefers_gzip(headers.get("accept-encoding"))
        etag, meta = _validators(digest, compressed, modified if dated else None, self._max_age())
        if _not_modified(headers, etag, modified if dated else None):
            return Response(status_code=304, headers=meta)
        body = data
        if compressed:
            body = self._gzip(("query", digest), lambda: data)
            meta["Content-Encoding"] = "gzip"
        media_type = CONTENT_TYPES[f".{kind}"]
        if method == "HEAD":
            return _head(meta, media_type, len(body))
        return Response(body, 200, meta, media_type=media_type)

    def _feed(self, query: FeedQuery, canonical: str) -> _Cached:
        settings = self._settings()
        last = self._read(runs.last_finished)
        key: _Key = (last.run_id if last is not None else None, settings, canonical)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        # Rendered outside the lock: two first requests at once render twice, and keep one.
        feed = self._read(functools.partial(_render, settings=settings, query=query))
        found: _Cached = (feed, tuple(map(document_etag, feed.bodies)) if feed is not None else ())
        with self._cache_lock:
            if key[0] != self._generation:  # a cycle finished: what was kept before it is of no use
                self._cache.clear()
                self._cache_bytes = 0
                self._generation = key[0]
            if key not in self._cache:
                self._cache[key] = found
                self._cache_bytes += _size(found)
                while len(self._cache) > 1 and (len(self._cache) > CACHE_ENTRIES or self._cache_bytes > CACHE_BYTES):
                    self._cache_bytes -= _size(self._cache.popitem(last=False)[1])
        return found


def query_routes(
    config: Callable[[], Config],
    reader: StoreReader,
    *,
    clock: Callable[[], float] = time.time,
    max_age: Callable[[], int] = lambda: 0,
) -> list[Route]:
    """The routes of the query feeds (GET and HEAD), to go before `/feeds/{path:path}`."""

    def read(function: Callable[[Connection], _T]) -> _T | None:
        return reader.read(config(), function, strict=True)

    feeds = QueryFeeds(lambda: feed_settings(config()), read, clock=clock, max_age=max_age)

    async def query_feed(request: Request) -> Response:
        kind = request.url.path.rpartition(".")[2]
        raw_query: bytes = request.scope.get("query_string", b"")
        return await run_in_threadpool(feeds.answer, kind, raw_query, request.method, request.headers)

    endpoint = _guard(query_feed)
    return [Route(f"/feeds/query.{kind}", endpoint, methods=["GET", "HEAD"]) for kind in FEED_FORMATS]


def _render(conn: Connection, *, settings: FeedSettings, query: FeedQuery) -> QueryFeed | None:
    return render_query(conn, settings, query)


def _size(cached: _Cached) -> int:
    feed = cached[0]
    return sum(map(len, feed.bodies)) if feed is not None else 0


def _error(message: str, status_code: int) -> Response:
    return Response(orjson.dumps({"error": message}), status_code, media_type="application/json")
