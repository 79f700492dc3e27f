"""The enrich step of a cycle: spread this run's changes along related links, then fetch missing page metadata."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.engine import Engine

from worker.config import EnrichConfig
from worker.model import EnrichCounts, PageRecord
from worker.store import pages as page_store
from worker.store import related as related_store
from worker.store.db import transaction

if TYPE_CHECKING:  # httpx and the HTML parser load only when something is fetched
    from worker.enrich.fetcher import FetchPolicy, FetchResult

__all__ = ["enrich_related", "fetch_budget", "next_page_record", "run_on_own_loop"]

# Backoff doubles with each failure in a row, up to retry_after * 2**6.
_MAX_BACKOFF_DOUBLINGS = 6
# The smallest per-page time worth starting a fetch for.
_MIN_PAGE_S = 0.1


def enrich_related(
    engine: Engine, config: EnrichConfig, now: datetime, log: Any = None, *, shared_as: str | None = None
) -> EnrichCounts:
    """Run the enrich step; returns the run report's `enrich` counts. `shared_as`: this
    replica's name when replicas share the store (PostgreSQL): the pages are then fetched by
    every replica, a host at a time (enrich.shared)."""
    log = log or structlog.get_logger("worker.enrich")
    counts = EnrichCounts()
    with transaction(engine) as conn:
        changed = related_store.changed_articles(conn, now)
        touched = related_store.propagate_changes(conn, changed, now)
        queued = 0
        if not config.fetch:
            # Nothing will fetch: the queue is brought up to date, whole, when fetching is switched on.
            if changed.ids:
                page_store.set_queue_stale(conn)
        elif changed.everything or page_store.queue_stale(conn):
            queued = page_store.enqueue_all(conn, now)
        else:
            queued = page_store.enqueue(conn, changed.ids, changed.gone_urls, now)
    if touched or queued:
        log.info("enrich.linked", articles_changed=len(changed.ids), neighbours_updated=touched, pages_queued=queued)
    if config.fetch and config.max_fetches > 0:
        _fetch(engine, config, now, log, counts, prune=bool(changed.ids), shared_as=shared_as)
    elif config.fetch:
        # Fetching is on but fetches nothing now (max_fetches 0): the pages queued here must
        # still be due for the cycle's plan once it may fetch again.
        with transaction(engine) as conn:
            page_store.note_next_due(conn, config.ttl)
    return counts


def fetch_budget(config: EnrichConfig) -> tuple[FetchPolicy, float]:
    """Fetch policy and start deadline that keep the whole fetch step within `max_seconds`.

    A page gets at most min(timeout_s, max_seconds / 2), and no fetch starts after
    max_seconds minus that, so the last one to start still ends within the budget.
    """
    from worker.enrich.fetcher import FetchPolicy

    per_page = max(_MIN_PAGE_S, min(config.timeout_s, config.max_seconds / 2))
    policy = FetchPolicy(
        connect_timeout=per_page,
        read_timeout=per_page,
        total_timeout=per_page,
        max_bytes=config.max_bytes,
        concurrency=config.concurrency,
        per_host=config.per_host,
        allow_private_networks=config.allow_private_networks,
    )
    return policy, max(0.0, config.max_seconds - per_page)


def next_page_record(
    previous: PageRecord | None, result: FetchResult, now: datetime, config: EnrichConfig
) -> PageRecord:
    """The page row after a fetch: fresh metadata, kept metadata (304), or a failure with backoff."""
    from worker.model import PageMetadata

    if result.status == "ok":
        metadata = result.metadata or PageMetadata()
        return PageRecord(
            url=result.url,
            status="ok",
            next_fetch_at=now + timedelta(seconds=config.ttl),
            http_status=result.http_status,
            fetched_at=now,
            etag=result.etag,
            last_modified=result.last_modified,
            title=metadata.title,
            description=metadata.description,
            image=metadata.image,
            canonical=metadata.canonical,
            site_name=metadata.site_name,
        )
    base = previous or PageRecord(url=result.url, status=result.status, next_fetch_at=now)
    if result.status == "not_modified":
        return replace(
            base,
            status="not_modified",
            next_fetch_at=now + timedelta(seconds=config.ttl),
            http_status=result.http_status,
            fetched_at=now,
            etag=result.etag or base.etag,
            last_modified=result.last_modified or base.last_modified,
            failures=0,
            error=None,
        )
    # Metadata and validators of an earlier success are kept: better a known title than none.
    delay = config.retry_after * 2 ** min(base.failures, _MAX_BACKOFF_DOUBLINGS)
    return replace(
        base,
        status=result.status,
        next_fetch_at=now + timedelta(seconds=delay),
        http_status=result.http_status,
        fetched_at=now,
        failures=base.failures + 1,
        error=result.error,
    )


def _fetch(
    engine: Engine,
    config: EnrichConfig,
    now: datetime,
    log: Any,
    counts: EnrichCounts,
    *,
    prune: bool,
    shared_as: str | None = None,
) -> None:
    started = time.monotonic()
    with transaction(engine) as conn:
        if prune:  # only an article change can make a page unwanted
            page_store.prune(conn, now, config.ttl)
        urls = page_store.due_urls(conn, now, config.ttl, config.max_fetches)
        previous = page_store.pages_by_url(conn, urls)
    results: list[FetchResult] = []
    if urls and config.max_seconds > 0:
        from worker.enrich.fetcher import FetchRequest, fetch_many

        requests = [
            FetchRequest(url, previous[url].etag, previous[url].last_modified) if url in previous else FetchRequest(url)
            for url in urls
        ]
        policy, deadline_s = fetch_budget(config)
        if shared_as is not None:
            from worker.enrich.shared import fetch_shared

            results = fetch_shared(engine, requests, policy, deadline_s, shared_as, run_on_own_loop)
        else:
            results = run_on_own_loop(lambda: fetch_many(requests, policy, deadline_s=deadline_s))
    records = []
    changed: list[str] = []
    for result in results:
        log.info(
            "enrich.fetched", url=result.url, status=result.status, http_status=result.http_status, error=result.error
        )
        key = result.status if result.status in ("ok", "not_modified", "refused") else "failed"
        name = "fetched" if key == "ok" else key
        setattr(counts, name, getattr(counts, name) + 1)
        record = next_page_record(previous.get(result.url), result, now, config)
        records.append(record)
        old = previous.get(result.url)
        if _shown(record) != (_shown(old) if old is not None else (None, None)):
            changed.append(result.url)
    with transaction(engine) as conn:
        page_store.save_pages(conn, records, previous)
        touched = related_store.touch_listing(conn, changed, now)
        counts.pending = page_store.pending_count(conn, now, config.ttl)
        # What the next cycle's plan compares with its clock: no page due, no fetch step to run.
        page_store.note_next_due(conn, config.ttl)
    log.info(
        "enrich.finished", **asdict(counts), articles_updated=touched, duration_s=round(time.monotonic() - started, 3)
    )


def _shown(record: PageRecord) -> tuple[str | None, str | None]:
    # What a related link shows of a page; a change elsewhere (image, description) is not news.
    return record.title, record.site_name


def run_on_own_loop(make: Callable[[], Any]) -> list[FetchResult]:
    """Run the fetches on a loop of their own, whose name lookups never hold the run up.

    asyncio.run would wait, at its end, for every resolver thread, and a lookup that a
    timeout gave up on may hang for as long as the system resolver pleases.
    """
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_DaemonThreads())
    try:
        return loop.run_until_complete(make())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class _DaemonThreads(ThreadPoolExecutor):
    """An executor running each call on its own daemon thread: nothing waits for it at exit."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                future.set_exception(exc)

        threading.Thread(target=work, name="feedworker-resolve", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass  # no pool to stop; a hung lookup ends with its thread
