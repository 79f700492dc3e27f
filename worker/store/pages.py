"""The page table: the queue and cache of related pages to fetch, their metadata, and their counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.model import PageRecord
from worker.store import keys
from worker.store.db import in_chunks
from worker.store.meta import meta_value, set_meta_value
from worker.store.schema import ARTICLE, PAGE, RELATED_ITEM

__all__ = [
    "PENDING",
    "SUCCESS",
    "due_urls",
    "enqueue",
    "enqueue_all",
    "note_next_due",
    "page_counts",
    "pages_by_url",
    "pending_count",
    "prune",
    "queue_stale",
    "save_pages",
    "set_queue_stale",
]

# A page queued when an article listing it was written, and not fetched yet.
PENDING = "pending"
# Statuses whose metadata is the page's current one.
SUCCESS = ("ok", "not_modified")
# Meta key: "1" while the queue lacks the pages of articles written with fetching off.


def _visible(table: sa.FromClause) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.removed.is_(False), table.c.is_published.is_(True))


def _wanted(url: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """The related item row `R` asks for its page: the item lacks something, and `url` is no stored article."""
    stored = ARTICLE.alias("stored")
    is_stored = sa.exists(sa.select(stored.c.id).where(stored.c.url == url, _visible(stored)))
    return sa.and_(RELATED_ITEM.c.wants_page.is_(True), ~is_stored)


def _due(now: datetime, ttl_s: float) -> sa.ColumnElement[bool]:
    # A success is due by the ttl configured now (so changing enrich.ttl takes effect at
    # once); a failure by its backoff; a queued page at once.
    return sa.or_(
        sa.and_(PAGE.c.status.in_(SUCCESS), PAGE.c.fetched_at <= now - timedelta(seconds=ttl_s)),
        sa.and_(PAGE.c.status.not_in(SUCCESS), PAGE.c.next_fetch_at <= now),
    )


_QUEUED_COLUMNS = ["url", "status", "next_fetch_at", "failures"]


def _missing_pages(now: datetime) -> sa.Select[str, str, datetime, int]:
    """Page rows to queue: URLs a published article's items ask for that have no page row yet."""
    listing = ARTICLE.alias("listing")
    has_page = sa.exists(sa.select(PAGE.c.id).where(PAGE.c.url == RELATED_ITEM.c.url))
    return (
        sa.select(RELATED_ITEM.c.url, sa.literal(PENDING), sa.literal(now, PAGE.c.next_fetch_at.type), sa.literal(0))
        .select_from(RELATED_ITEM.join(listing, listing.c.id == RELATED_ITEM.c.article_id))
        .where(_visible(listing), _wanted(RELATED_ITEM.c.url), ~has_page)
        .distinct()
    )


def enqueue(conn: Connection, article_ids: Sequence[int], gone_urls: Sequence[str], now: datetime) -> int:
    """Queue the pages asked for by the related items of these articles, and by the items
    pointing at these URLs (articles gone, so no stored article any more). Returns how many."""
    rows = _missing_pages(now)
    queued = 0
    for column, values in ((RELATED_ITEM.c.article_id, list(article_ids)), (RELATED_ITEM.c.url, list(gone_urls))):
        for chunk in in_chunks(values):
            queued += conn.execute(sa.insert(PAGE).from_select(_QUEUED_COLUMNS, rows.where(column.in_(chunk)))).rowcount
    return queued


def enqueue_all(conn: Connection, now: datetime) -> int:
    """Queue every page the stored articles ask for, in one statement (a first run, or fetching
    switched on after articles were written with it off). Returns how many."""
    queued = conn.execute(sa.insert(PAGE).from_select(_QUEUED_COLUMNS, _missing_pages(now))).rowcount
    set_meta_value(conn, keys.PAGE_QUEUE_STALE, "0")
    return queued


def queue_stale(conn: Connection) -> bool:
    """True when articles changed while fetching was off, so the queue lacks their pages."""
    return meta_value(conn, keys.PAGE_QUEUE_STALE) == "1"


def set_queue_stale(conn: Connection) -> None:
    set_meta_value(conn, keys.PAGE_QUEUE_STALE, "1")


def _qualifying_due(now: datetime, ttl_s: float) -> sa.Select[str, datetime]:
    """Due pages still asked for by a published article, with that article's publication time."""
    return (
        sa.select(PAGE.c.url, ARTICLE.c.published_at)
        .select_from(
            PAGE.join(RELATED_ITEM, RELATED_ITEM.c.url == PAGE.c.url).join(
                ARTICLE, ARTICLE.c.id == RELATED_ITEM.c.article_id
            )
        )
        .where(_due(now, ttl_s), _visible(ARTICLE), _wanted(PAGE.c.url))
    )


def due_urls(conn: Connection, now: datetime, ttl_s: float, limit: int) -> list[str]:
    """Canonical URLs of the pages to fetch now, those of the newest articles first."""
    due = _qualifying_due(now, ttl_s).subquery()
    newest = sa.func.max(due.c.published_at).label("newest")
    query = sa.select(due.c.url, newest).group_by(due.c.url).order_by(newest.desc(), due.c.url).limit(limit)
    return [row.url for row in conn.execute(query)]


def prune(conn: Connection, now: datetime, ttl_s: float) -> int:
    """Forget due pages nothing asks for any more (items edited, articles gone or now stored)."""
    wanted = sa.select(_qualifying_due(now, ttl_s).subquery().c.url)
    return conn.execute(sa.delete(PAGE).where(_due(now, ttl_s), PAGE.c.url.not_in(wanted))).rowcount


def pending_count(conn: Connection, now: datetime, ttl_s: float) -> int:
    """How many pages wait for a fetch (queued, or due for revalidation or a retry)."""
    due = _qualifying_due(now, ttl_s).subquery()
    return conn.execute(sa.select(sa.func.count(sa.distinct(due.c.url)))).scalar_one()


def note_next_due(conn: Connection, ttl_s: float) -> None:
    """Record when the first page still asked for falls due (for this ttl), for the planner
    (keys.PAGES_NEXT_DUE, read with the store's snapshot)."""
    asked = (
        sa.select(PAGE.c.status, PAGE.c.fetched_at, PAGE.c.next_fetch_at)
        .select_from(
            PAGE.join(RELATED_ITEM, RELATED_ITEM.c.url == PAGE.c.url).join(
                ARTICLE, ARTICLE.c.id == RELATED_ITEM.c.article_id
            )
        )
        .where(_visible(ARTICLE), _wanted(PAGE.c.url))
        .subquery()
    )
    fetched = conn.execute(sa.select(sa.func.min(asked.c.fetched_at)).where(asked.c.status.in_(SUCCESS))).scalar()
    retry = conn.execute(sa.select(sa.func.min(asked.c.next_fetch_at)).where(asked.c.status.not_in(SUCCESS))).scalar()
    moments = [moment for moment in (retry, fetched and fetched + timedelta(seconds=ttl_s)) if moment is not None]
    set_meta_value(conn, keys.PAGES_NEXT_DUE, f"{float(ttl_s)!r}|{min(moments).isoformat() if moments else ''}")


def pages_by_url(conn: Connection, urls: Iterable[str]) -> dict[str, PageRecord]:
    records: dict[str, PageRecord] = {}
    columns = [PAGE.c[name] for name in PageRecord.__dataclass_fields__]
    for chunk in in_chunks(sorted(set(urls))):
        for row in conn.execute(sa.select(*columns).where(PAGE.c.url.in_(chunk))):
            records[row.url] = PageRecord(**row._mapping)
    return records


def save_pages(conn: Connection, records: Sequence[PageRecord], existing: Iterable[str]) -> None:
    """Insert or update page rows; `existing` are the URLs that already have one."""
    known = set(existing)
    inserts = [asdict(record) for record in records if record.url not in known]
    updates = [{**asdict(record), "b_url": record.url} for record in records if record.url in known]
    if inserts:
        conn.execute(sa.insert(PAGE), inserts)
    if updates:
        conn.execute(sa.update(PAGE).where(PAGE.c.url == sa.bindparam("b_url")), updates)


def page_counts(conn: Connection, now: datetime, ttl_s: float) -> dict[str, int]:
    """fetched: pages with current metadata; failed: the last fetch failed; cached: not due
    yet (fresh, or backing off); pending: waiting for a fetch."""
    success = PAGE.c.status.in_(SUCCESS)
    query = sa.select(
        sa.func.count().filter(success),
        sa.func.count().filter(PAGE.c.status.not_in((*SUCCESS, PENDING))),
        sa.func.count().filter(PAGE.c.status != PENDING, ~_due(now, ttl_s)),
    )
    fetched, failed, cached = conn.execute(query).one()
    return {"fetched": fetched, "cached": cached, "failed": failed, "pending": pending_count(conn, now, ttl_s)}
