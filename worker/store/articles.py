"""Bulk writes of ingested files and articles, the related view changes they make, removing orphans."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.model import Article, Ingested, KnownFile
from worker.store import files as file_store
from worker.store import keys
from worker.store import meta as meta_store
from worker.store import orphans as orphan_store
from worker.store import topics as topic_store
from worker.store.db import bulk_insert, in_chunks
from worker.store.schema import (
    ARTICLE,
    ARTICLE_CONTENT,
    ARTICLE_IMAGE,
    ARTICLE_TOPIC,
    META,
    ORPHAN_CANDIDATE,
    RELATED_ITEM,
    SOURCE_FILE,
)
from worker.topics import topic_key
from worker.urls import entry_id, given_entry_id, page_cut

__all__ = ["article_counts", "link_view", "remove_orphans", "take_view_changes", "write_batch"]


def write_batch(
    conn: Connection,
    items: Sequence[Ingested],
    known: dict[str, KnownFile],
    topics: topic_store.TopicRegistry,
    now: datetime,
) -> None:
    """Store one batch of read files in the caller's transaction. A URL a file no longer carries
    becomes an orphan candidate in the same transaction (see remove_orphans)."""
    by_url: dict[str, Ingested] = {}
    for item in items:  # the caller orders items oldest edit first: the newest edit of a URL wins
        if item.article is not None:
            by_url[item.article.url] = item
    # The URL each file carried before, where it now carries another: the new article keeps
    # the entry id (and first-seen time) of the one the file moved on from.
    moved_from = {
        item.article.url: previous.article_url
        for item in items
        if item.article is not None
        and (previous := known.get(item.path)) is not None
        and previous.article_url
        and previous.article_url != item.article.url
    }
    in_feeds, view_changed = _write_articles(conn, by_url, topics, now, moved_from)
    file_store.write_files(conn, items, known, now)
    orphans = set()
    for item in items:
        previous = known.get(item.path)
        if previous and previous.article_url and item.article and previous.article_url != item.article.url:
            orphans.add(previous.article_url)
    orphan_store.add_orphan_candidates(conn, orphans)
    _note_view_changes(conn, view_changed)
    if in_feeds:  # a draft that stays one changes no feed
        topic_store.mark_all_dirty(conn)


def link_view(fields: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """What another entry shows of this article (a row or a row's mapping): as its related
    link, its title and provider, and its date (reverse links are newest first); nothing at
    all (None) of a draft or a removed article."""
    if fields["removed"] or not fields["is_published"]:
        return None
    return fields["title"], fields["provider_name"], fields["provider_domain"], fields["published_at"]


def _note_view_changes(conn: Connection, ids: Collection[int]) -> None:
    """Remember, in the caller's transaction, that these articles' link views changed: the
    next spreading of changes moves the entries showing them (and only for those)."""
    if not ids or meta_store.meta_value(conn, keys.RELATED_PROPAGATED) is None:
        return  # nothing spread yet: the first spreading takes every article, touching none
    key = f"{keys.RELATED_VIEW_CHANGED}{min(ids)}"
    known = meta_store.meta_value(conn, key)
    merged = set(ids) | set(orjson.loads(known) if known else ())
    meta_store.set_meta_value(conn, key, orjson.dumps(sorted(merged)).decode())


def take_view_changes(conn: Connection) -> set[int]:
    """The articles whose link views changed since the last call (see link_view); forgets them."""
    noted = meta_store.meta_values(conn, keys.RELATED_VIEW_CHANGED)
    for chunk in in_chunks(sorted(noted)):
        conn.execute(sa.delete(META).where(META.c.key.in_(chunk)))
    return {article_id for value in noted.values() for article_id in orjson.loads(value)}


def _write_articles(
    conn: Connection,
    by_url: dict[str, Ingested],
    topics: topic_store.TopicRegistry,
    now: datetime,
    moved_from: dict[str, str] | None = None,
) -> tuple[list[int], list[int]]:
    """Insert or update the articles; returns the ids of those in a feed before or after (a
    draft that stays one is in none), and of those whose link view changed."""
    existing: dict[str, Any] = {}
    columns = (
        ARTICLE.c.id,
        ARTICLE.c.url,
        ARTICLE.c.entry_id,
        ARTICLE.c.first_seen,
        ARTICLE.c.content_hash,
        ARTICLE.c.removed,
        ARTICLE.c.is_published,
        ARTICLE.c.title,
        ARTICLE.c.provider_name,
        ARTICLE.c.provider_domain,
        ARTICLE.c.published_at,
    )
    for chunk in in_chunks(list(by_url)):
        query = sa.select(*columns).where(ARTICLE.c.url.in_(chunk))
        existing.update((row.url, row) for row in conn.execute(query))
    minted = _entry_ids(conn, by_url, existing, moved_from or {})
    inserts, updates = [], []
    view_changed: list[int] = []
    was_shown: list[int] = []  # updated articles that were in feeds: their old topics change
    for url, item in by_url.items():
        old = existing.get(url)
        if old is not None and old.content_hash == item.hash and not old.removed:
            continue  # the same bytes through another file: nothing to do
        entry, first_seen = minted[url]
        row = _article_row(item, now, first_seen=old.first_seen if old is not None else first_seen or now)
        row["entry_id"] = entry
        if old is None:
            inserts.append(row)
        else:
            row["b_id"] = old.id
            updates.append(row)
            if link_view(old._mapping) != link_view(row):
                view_changed.append(old.id)
            if not old.removed and old.is_published:
                was_shown.append(old.id)
    bulk_insert(conn, ARTICLE, inserts)
    if updates:
        conn.execute(sa.update(ARTICLE).where(ARTICLE.c.id == sa.bindparam("b_id")), updates)
    ids = {row["url"]: row["b_id"] for row in updates}
    inserted: dict[str, int] = {}
    for chunk in in_chunks([row["url"] for row in inserts]):
        inserted.update(
            (row.url, row.id)
            for row in conn.execute(sa.select(ARTICLE.c.url, ARTICLE.c.id).where(ARTICLE.c.url.in_(chunk)))
        )
    # New articles in URL order, whatever order the database returned them in: a topic new in
    # this batch is named as the first of them writes it, the same on every database.
    ids.update(sorted(inserted.items()))
    if not ids:
        return [], []
    in_feeds = set(was_shown)
    in_feeds.update(ids[row["url"]] for row in (*inserts, *updates) if row["is_published"])
    view_changed.extend(ids[row["url"]] for row in inserts if link_view(row) is not None)
    if updates:
        conn.execute(
            sa.update(ARTICLE_CONTENT).where(ARTICLE_CONTENT.c.article_id == sa.bindparam("b_id")),
            [_content_row(by_url[row["url"]]) | {"b_id": row["b_id"]} for row in updates],
        )
    bulk_insert(
        conn, ARTICLE_CONTENT, [_content_row(by_url[row["url"]]) | {"article_id": ids[row["url"]]} for row in inserts]
    )
    updated_ids = [row["b_id"] for row in updates]
    rows_by_url = {row["url"]: row for row in (*inserts, *updates)}
    dirty_topic_ids: set[int] = set()
    for chunk in in_chunks(was_shown):
        dirty_topic_ids.update(
            conn.execute(sa.select(ARTICLE_TOPIC.c.topic_id).where(ARTICLE_TOPIC.c.article_id.in_(chunk))).scalars()
        )
    for chunk in in_chunks(updated_ids):
        for table in (ARTICLE_TOPIC, ARTICLE_IMAGE, RELATED_ITEM):
            conn.execute(sa.delete(table).where(table.c.article_id.in_(chunk)))
    topic_ids = topics.ids(conn, (name for url in ids for name in _article_of(by_url[url]).topics), now)
    links: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    related: list[dict[str, Any]] = []
    for url, article_id in ids.items():
        item = by_url[url]
        article = _article_of(item)
        row = rows_by_url[url]
        for topic_id in dict.fromkeys(topic_ids[topic_key(name)] for name in article.topics):
            # The article's place in its topics' feeds, copied (schema.ArticleTopic).
            links.append(
                {
                    "article_id": article_id,
                    "topic_id": topic_id,
                    "shown": row["is_published"],
                    "published_at": row["published_at"],
                    "url": url,
                    "cut": page_cut(url),
                }
            )
            if article.is_published:
                dirty_topic_ids.add(topic_id)
        images.extend(
            {"article_id": article_id, "position": n, "url": image.url, "width": image.width, "height": image.height}
            for n, image in enumerate(article.images)
        )
        related.extend(
            {"article_id": article_id, "position": n, "url": link, "wants_page": wants, "shows_page": shows}
            for n, (link, wants, shows) in enumerate(item.related_links)
        )
    for table, rows in ((ARTICLE_TOPIC, links), (ARTICLE_IMAGE, images), (RELATED_ITEM, related)):
        bulk_insert(conn, table, rows)
    topic_store.mark_topics_dirty(conn, dirty_topic_ids)
    return sorted(in_feeds), view_changed


def _entry_ids(
    conn: Connection, by_url: dict[str, Ingested], existing: dict[str, Any], moved_from: dict[str, str]
) -> dict[str, tuple[str, datetime | None]]:
    """Each article's entry id, and the first-seen time a new one takes over (None: now).

    Minted once: a stored article keeps its own (from its URL when stored before entry ids
    were); a new one takes the file's own `id` (given_entry_id) when it has one, else that of
    the article its file carried before (its URL edited: a new slug, https, tracking
    parameters), else its URL's. An article taking over another's entry id takes its
    first-seen time too, so its entry says "updated" and keeps its publication time."""
    given = {
        url: given_entry_id(item.article.given_id)
        for url, item in by_url.items()
        if item.article and item.article.given_id
    }
    wanted_urls = [old for url, old in moved_from.items() if url in by_url and url not in existing]
    before: dict[str, tuple[str, datetime]] = {}  # entry id -> (it, first seen) of articles handing one on
    for chunk in in_chunks(sorted(set(wanted_urls))):
        query = sa.select(ARTICLE.c.url, ARTICLE.c.entry_id, ARTICLE.c.first_seen).where(ARTICLE.c.url.in_(chunk))
        for row in conn.execute(query):
            before[row.url] = (row.entry_id or entry_id(row.url), row.first_seen)
    seen_given: dict[str, datetime] = {}
    for chunk in in_chunks(sorted(set(given.values()))):
        query = sa.select(ARTICLE.c.entry_id, sa.func.min(ARTICLE.c.first_seen)).where(ARTICLE.c.entry_id.in_(chunk))
        seen_given.update((row[0], row[1]) for row in conn.execute(query.group_by(ARTICLE.c.entry_id)))
    minted: dict[str, tuple[str, datetime | None]] = {}
    for url in by_url:
        old = existing.get(url)
        if url in given:
            minted[url] = (given[url], seen_given.get(given[url]))
        elif old is not None:
            minted[url] = (old.entry_id or entry_id(url), None)
        elif moved_from.get(url) in before:
            minted[url] = before[moved_from[url]]
        else:
            minted[url] = (entry_id(url), None)
    return minted


def _article_of(item: Ingested) -> Article:
    """The article of a file read as one (the callers hold no quarantined file)."""
    if item.article is None:
        raise ValueError(f"{item.path}: read as no article ({item.error})")
    return item.article


def _article_row(item: Ingested, now: datetime, first_seen: datetime) -> dict[str, Any]:
    article = _article_of(item)
    return {
        "url": article.url,
        "web_url": article.web_url,
        "title": article.title,
        "excerpt": article.excerpt,
        "published_at": article.published_at or first_seen,
        "date_given": article.published_at is not None,
        "first_seen": first_seen,
        "updated_at": now,
        "content_at": now,
        "category": article.category,
        "type": article.type,
        "original_url": article.original_url,
        "quality": article.quality,
        "heat": article.heat,
        "is_published": article.is_published,
        "removed": False,
        "provider_name": article.provider_name,
        "provider_domain": article.provider_domain,
        "content_hash": item.hash,
    }


def _content_row(item: Ingested) -> dict[str, Any]:
    article = _article_of(item)
    return {
        "body": article.body,
        "extra_json": item.extra_json,
        "related_json": item.related_json,
    }


def remove_orphans(conn: Connection, now: datetime) -> list[str]:
    """Mark removed the articles of the orphan candidates that no file carries any more, and
    settle every candidate; returns the URLs of the articles removed."""
    removed: list[str] = []
    urls = orphan_store.orphan_candidates(conn)
    for chunk in in_chunks(urls):
        conn.execute(sa.delete(ORPHAN_CANDIDATE).where(ORPHAN_CANDIDATE.c.url.in_(chunk)))
        carried = set(
            conn.execute(sa.select(SOURCE_FILE.c.article_url).where(SOURCE_FILE.c.article_url.in_(chunk))).scalars()
        )
        gone = [url for url in chunk if url not in carried]
        if not gone:
            continue
        query = sa.select(ARTICLE.c.id, ARTICLE.c.url, ARTICLE.c.is_published).where(
            ARTICLE.c.url.in_(gone), ARTICLE.c.removed.is_(False)
        )
        rows = conn.execute(query).all()
        if not rows:
            continue
        ids = [row.id for row in rows]
        conn.execute(
            sa.update(ARTICLE).where(ARTICLE.c.id.in_(ids)).values(removed=True, updated_at=now, content_at=now)
        )
        conn.execute(sa.update(ARTICLE_TOPIC).where(ARTICLE_TOPIC.c.article_id.in_(ids)).values(shown=False))
        shown = [row.id for row in rows if row.is_published]  # a draft was in no feed, and shown nowhere
        _note_view_changes(conn, shown)
        if shown:
            topic_ids = set(
                conn.execute(sa.select(ARTICLE_TOPIC.c.topic_id).where(ARTICLE_TOPIC.c.article_id.in_(shown))).scalars()
            )
            topic_store.mark_topics_dirty(conn, topic_ids)
            topic_store.mark_all_dirty(conn)
        removed.extend(row.url for row in rows)
    return removed


def article_counts(conn: Connection) -> dict[str, int]:
    published = sa.func.coalesce(sa.func.sum(sa.case((ARTICLE.c.is_published.is_(True), 1), else_=0)), 0)
    total, published_count = conn.execute(
        sa.select(sa.func.count(), published).where(ARTICLE.c.removed.is_(False))
    ).one()
    return {"total": total, "published": published_count}
