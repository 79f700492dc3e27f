"""Fetching related pages across replicas (PostgreSQL): the cycle holder offers them, replicas claim whole hosts."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from worker.model import PageMetadata
from worker.store import postgres
from worker.store.db import connect, transaction

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from worker.enrich.fetcher import FetchPolicy, FetchRequest, FetchResult

__all__ = ["decode_fetch", "encode_fetch", "fetch_shared", "help_fetch"]

log = structlog.get_logger("worker.enrich")

POLL_S = 0.1
# Pages claimed in one go (whole hosts until at least this many): one fetch_many's worth.
_CLAIM_AT_LEAST = 16


def encode_fetch(result: FetchResult) -> str:
    return orjson.dumps(asdict(result)).decode()


def decode_fetch(text: str) -> FetchResult:
    from worker.enrich.fetcher import FetchResult

    data: dict[str, Any] = orjson.loads(text)
    metadata = data.get("metadata")
    return FetchResult(**{**data, "metadata": PageMetadata(**metadata) if metadata is not None else None})


def fetch_shared(
    engine: Engine,
    requests: list[FetchRequest],
    policy: FetchPolicy,
    deadline_s: float,
    claimant: str,
    run: Callable[[Callable[[], Any]], list[FetchResult]],
) -> list[FetchResult]:
    """The cycle holder's fetch_many on PostgreSQL: offer the pages, fetch with this process
    too, and return the outcomes posted by every replica within the budget (a page nobody
    fetched in time has none, as with fetch_many: it stays due)."""
    from worker.enrich.fetcher import host_key

    with transaction(engine) as conn:
        postgres.offer_fetches(conn, [(r.url, host_key(r.url), r.etag, r.last_modified) for r in requests])
    give_up = time.monotonic() + deadline_s + policy.total_timeout + 1.0
    done = threading.Event()
    url = engine.url.render_as_string(hide_password=False)
    helper = threading.Thread(
        target=help_fetch,
        args=(url, policy, deadline_s, claimant, done.is_set, run),
        name="feedworker-fetches",
        daemon=True,
    )
    helper.start()
    try:
        while True:
            with engine.connect() as conn:
                posted = postgres.fetches_of(conn)
            if len(posted) >= len(requests) or time.monotonic() >= give_up:
                break
            time.sleep(POLL_S)
    finally:
        done.set()
        helper.join(policy.total_timeout + 1.0)
    with transaction(engine) as conn:
        postgres.clear_fetches(conn)
    by_url = {request.url: request for request in requests}
    return [decode_fetch(posted[page]) for page in by_url if page in posted]


def help_fetch(
    url: str,
    policy: FetchPolicy,
    deadline_s: float,
    claimant: str,
    should_stop: Callable[[], bool],
    run: Callable[[Callable[[], Any]], list[FetchResult]],
) -> int:
    """Claim hosts, fetch their pages (fetch_many: its global and per-host limits), post the
    outcomes, until no host is free (or `should_stop`); how many pages this replica fetched."""
    from worker.enrich.fetcher import FetchRequest, fetch_many

    engine = connect(url)
    postgres.end_idle_transactions(engine)
    fetched = 0
    started = time.monotonic()
    lease_s = deadline_s + policy.total_timeout + 5.0
    try:
        while not should_stop():
            claimed: list[tuple[str, str | None, str | None]] = []
            with engine.connect() as conn:
                hosts = postgres.free_hosts(conn)
            for host in hosts:
                with transaction(engine) as conn:
                    claimed += postgres.claim_host(conn, host, claimant, lease_s)
                if len(claimed) >= _CLAIM_AT_LEAST:
                    break
            if not claimed:
                return fetched
            requests = [FetchRequest(page, etag, modified) for page, etag, modified in claimed]
            left = max(0.0, deadline_s - (time.monotonic() - started))
            results = run(functools.partial(fetch_many, requests, policy, deadline_s=left))
            with transaction(engine) as conn:
                postgres.post_fetches(conn, [(result.url, encode_fetch(result)) for result in results])
            fetched += len(results)
    finally:
        engine.dispose()
        if fetched:
            log.info("fetches.helped", pages=fetched, claimant=claimant)
    return fetched
