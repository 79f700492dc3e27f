"""Bulk writes of ingested files and articles, and the queries the feed renderer needs."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from worker import model
from worker.model import Ingested, KnownFile, StoredEntry
from worker.store import keys
from worker.store.db import bulk_insert, in_chunks
from worker.store.schema import (
    Article,
    ArticleContent,
    ArticleImage,
    ArticleTopic,
    Meta,
    OrphanCandidate,
    RelatedItem,
    SourceFile,
    Topic,
)
from worker.topics import topic_key, unique_slug

__all__ = [
    "TopicRegistry",
    "all_feed_dirty",
    "article_counts",
    "articles_by_ids",
    "clear_dirty",
    "delete_files",
    "dirty_topics",
    "feed_window",
    "files_carrying",
    "known_files",
    "link_view",
    "mark_all_dirty",
    "meta_value",
    "meta_values",
    "orphan_candidates",
    "published_topics",
    "quarantined_files",
    "remove_orphans",
    "set_meta_value",
    "take_view_changes",
    "topic_slugs",
    "touch_files",
    "write_batch",
]

A = Article.__table__
C = ArticleContent.__table__
F = SourceFile.__table__
T = Topic.__table__
AT = ArticleTopic.__table__
AI = ArticleImage.__table__
R = RelatedItem.__table__
M = Meta.__table__
O = OrphanCandidate.__table__


def _stored_items(related_json: str | None) -> tuple[model.RelatedItem, ...]:
    return tuple(map(model.RelatedItem.from_json_fields, orjson.loads(related_json))) if related_json else ()


def known_files(conn: Connection, paths: Sequence[str] | None = None) -> dict[str, KnownFile]:
    """The last stat of every stored file, or of those of `paths`: read on every run, so as
    plain tuples, not ORM rows."""
    query = sa.select(F.c.path, F.c.size, F.c.mtime_ns, F.c.hash, F.c.state, F.c.article_url)
    if paths is None:
        return {path: KnownFile(*rest) for path, *rest in conn.execute(query)}
    known: dict[str, KnownFile] = {}
    for chunk in in_chunks(sorted(set(paths))):
        known.update((path, KnownFile(*rest)) for path, *rest in conn.execute(query.where(F.c.path.in_(chunk))))
    return known


class TopicRegistry:
    """Topic key -> id for one run; new topics get their slug here, once and for good."""

    def __init__(self, conn: Connection):
        rows = conn.execute(sa.select(T.c.id, T.c.key, T.c.slug)).all()
        self._ids = {row.key: row.id for row in rows}
        self._slugs = {row.slug for row in rows}

    def ids(self, conn: Connection, names: Iterable[str], now: datetime) -> dict[str, int]:
        """Ids of the topics named, by key, creating the missing ones (sorted, so slugs are deterministic)."""
        named: dict[str, str] = {}
        for name in names:  # a new topic is shown as first written
            named.setdefault(topic_key(name), name)
        missing = sorted(key for key in named if key not in self._ids)
        new_rows = []
        for key in missing:
            slug = unique_slug(key, self._slugs.__contains__)
            self._slugs.add(slug)
            new_rows.append({"key": key, "name": named[key], "slug": slug, "created_at": now, "dirty": True})
        if new_rows:
            conn.execute(sa.insert(T), new_rows)
            for chunk in in_chunks(missing):
                for row in conn.execute(sa.select(T.c.id, T.c.key).where(T.c.key.in_(chunk))):
                    self._ids[row.key] = row.id
        return {key: self._ids[key] for key in named}


def write_batch(
    conn: Connection, items: Sequence[Ingested], known: dict[str, KnownFile], topics: TopicRegistry, now: datetime
) -> None:
    """Store one batch of read files in the caller's transaction. A URL a file no longer carries
    becomes an orphan candidate in the same transaction (see remove_orphans)."""
    by_url: dict[str, Ingested] = {}
    for item in items:  # the caller orders items oldest edit first: the newest edit of a URL wins
        if item.article is not None:
            by_url[item.article.url] = item
    in_feeds, view_changed = _write_articles(conn, by_url, topics, now)
    _write_files(conn, items, known, now)
    orphans = set()
    for item in items:
        previous = known.get(item.path)
        if previous and previous.article_url and item.article and previous.article_url != item.article.url:
            orphans.add(previous.article_url)
    _add_orphan_candidates(conn, orphans)
    _note_view_changes(conn, view_changed)
    if in_feeds:  # a draft that stays one changes no feed
        mark_all_dirty(conn)


def link_view(fields: Any) -> tuple[Any, ...] | None:
    """What another entry shows of this article (a row or a row's mapping): as its related
    link, its title and provider, and its date (reverse links are newest first); nothing at
    all (None) of a draft or a removed article."""
    if fields["removed"] or not fields["is_published"]:
        return None
    return fields["title"], fields["provider_name"], fields["provider_domain"], fields["published_at"]


def _note_view_changes(conn: Connection, ids: Collection[int]) -> None:
    """Remember, in the caller's transaction, that these articles' link views changed: the
    next spreading of changes moves the entries showing them (and only for those)."""
    if not ids or meta_value(conn, keys.RELATED_PROPAGATED) is None:
        return  # nothing spread yet: the first spreading takes every article, touching none
    key = f"{keys.RELATED_VIEW_CHANGED}{min(ids)}"
    known = meta_value(conn, key)
    merged = set(ids) | set(orjson.loads(known) if known else ())
    set_meta_value(conn, key, orjson.dumps(sorted(merged)).decode())


def take_view_changes(conn: Connection) -> set[int]:
    """The articles whose link views changed since the last call (see link_view); forgets them."""
    noted = meta_values(conn, keys.RELATED_VIEW_CHANGED)
    for chunk in in_chunks(sorted(noted)):
        conn.execute(sa.delete(M).where(M.c.key.in_(chunk)))
    return {article_id for value in noted.values() for article_id in orjson.loads(value)}


def _write_articles(
    conn: Connection, by_url: dict[str, Ingested], topics: TopicRegistry, now: datetime
) -> tuple[list[int], list[int]]:
    """Insert or update the articles; returns the ids of those in a feed before or after (a
    draft that stays one is in none), and of those whose link view changed."""
    existing: dict[str, Any] = {}
    columns = (A.c.id, A.c.url, A.c.first_seen, A.c.content_hash, A.c.removed, A.c.is_published, A.c.title,
               A.c.provider_name, A.c.provider_domain, A.c.published_at)
    for chunk in in_chunks(list(by_url)):
        query = sa.select(*columns).where(A.c.url.in_(chunk))
        existing.update((row.url, row) for row in conn.execute(query))
    inserts, updates = [], []
    view_changed: list[int] = []
    was_shown: list[int] = []  # updated articles that were in feeds: their old topics change
    for url, item in by_url.items():
        old = existing.get(url)
        if old is not None and old.content_hash == item.hash and not old.removed:
            continue  # the same bytes through another file: nothing to do
        row = _article_row(item, now, first_seen=old.first_seen if old is not None else now)
        if old is None:
            inserts.append(row)
        else:
            row["b_id"] = old.id
            updates.append(row)
            if link_view(old._mapping) != link_view(row):
                view_changed.append(old.id)
            if not old.removed and old.is_published:
                was_shown.append(old.id)
    bulk_insert(conn, A, inserts)
    if updates:
        conn.execute(sa.update(A).where(A.c.id == sa.bindparam("b_id")), updates)
    ids = {row["url"]: row["b_id"] for row in updates}
    for chunk in in_chunks([row["url"] for row in inserts]):
        ids.update((row.url, row.id) for row in conn.execute(sa.select(A.c.url, A.c.id).where(A.c.url.in_(chunk))))
    if not ids:
        return [], []
    in_feeds = set(was_shown)
    in_feeds.update(ids[row["url"]] for row in (*inserts, *updates) if row["is_published"])
    view_changed.extend(ids[row["url"]] for row in inserts if link_view(row) is not None)
    if updates:
        conn.execute(
            sa.update(C).where(C.c.article_id == sa.bindparam("b_id")),
            [_content_row(by_url[row["url"]]) | {"b_id": row["b_id"]} for row in updates],
        )
    bulk_insert(conn, C, [_content_row(by_url[row["url"]]) | {"article_id": ids[row["url"]]} for row in inserts])
    updated_ids = [row["b_id"] for row in updates]
    dirty_topic_ids: set[int] = set()
    for chunk in in_chunks(was_shown):
        dirty_topic_ids.update(conn.execute(sa.select(AT.c.topic_id).where(AT.c.article_id.in_(chunk))).scalars())
    for chunk in in_chunks(updated_ids):
        for table in (AT, AI, R):
            conn.execute(sa.delete(table).where(table.c.article_id.in_(chunk)))
    topic_ids = topics.ids(conn, (name for url in ids for name in by_url[url].article.topics), now)  # type: ignore[union-attr]
    links, images, related = [], [], []
    for url, article_id in ids.items():
        item = by_url[url]
        article = item.article
        assert article is not None
        for topic_id in dict.fromkeys(topic_ids[topic_key(name)] for name in article.topics):
            links.append({"article_id": article_id, "topic_id": topic_id})
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
    for table, rows in ((AT, links), (AI, images), (R, related)):
        bulk_insert(conn, table, rows)
    _mark_topics_dirty(conn, dirty_topic_ids)
    return sorted(in_feeds), view_changed


def _article_row(item: Ingested, now: datetime, first_seen: datetime) -> dict[str, Any]:
    article = item.article
    assert article is not None
    return {
        "url": article.url,
        "web_url": article.web_url,
        "title": article.title,
        "excerpt": article.excerpt,
        "published_at": article.published_at or first_seen,
        "date_given": article.published_at is not None,
        "first_seen": first_seen,
        "updated_at": now,
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
    article = item.article
    assert article is not None
    return {
        "body": article.body,
        "extra_json": item.extra_json,
        "related_json": item.related_json,
    }


def _write_files(conn: Connection, items: Sequence[Ingested], known: dict[str, KnownFile], now: datetime) -> None:
    inserts, updates = [], []
    for item in items:
        previous = known.get(item.path)
        row = {
            "size": item.size,
            "mtime_ns": item.mtime_ns,
            "hash": item.hash,
            "state": "ok" if item.error is None else "quarantined",
            "error": item.error,
            # a quarantined file keeps pointing at the article it last gave: nothing is lost
            "article_url": item.article.url if item.article else (previous.article_url if previous else None),
            "checked_at": now,
        }
        if previous is None:
            inserts.append({"path": item.path, "first_seen": now, **row})
        else:
            updates.append({"b_path": item.path, **row})
    bulk_insert(conn, F, inserts)
    if updates:
        conn.execute(sa.update(F).where(F.c.path == sa.bindparam("b_path")), updates)


def touch_files(conn: Connection, rows: Sequence[tuple[str, int, int]]) -> None:
    """Record the new (size, mtime) of files whose bytes turned out unchanged."""
    if rows:
        conn.execute(
            sa.update(F).where(F.c.path == sa.bindparam("b_path")),
            [{"b_path": path, "size": size, "mtime_ns": mtime_ns} for path, size, mtime_ns in rows],
        )


def delete_files(conn: Connection, paths: Sequence[str], known: dict[str, KnownFile]) -> None:
    """Forget files that are gone; the URLs they carried become orphan candidates in the same
    transaction, so a run killed after this still takes their articles out of the feeds."""
    for chunk in in_chunks(list(paths)):
        conn.execute(sa.delete(F).where(F.c.path.in_(chunk)))
    _add_orphan_candidates(conn, {known[path].article_url for path in paths if known[path].article_url})  # type: ignore[misc]


def _add_orphan_candidates(conn: Connection, urls: set[str]) -> None:
    new: set[str] = set()
    for chunk in in_chunks(sorted(urls)):
        new.update(chunk)
        new.difference_update(conn.execute(sa.select(O.c.url).where(O.c.url.in_(chunk))).scalars())
    bulk_insert(conn, O, [{"url": url} for url in sorted(new)])


def orphan_candidates(conn: Connection) -> list[str]:
    """Article URLs that lost a file, this run or in a run that did not finish."""
    return list(conn.execute(sa.select(O.c.url).order_by(O.c.url)).scalars())


def remove_orphans(conn: Connection, now: datetime) -> list[str]:
    """Mark removed the articles of the orphan candidates that no file carries any more, and
    settle every candidate; returns the URLs of the articles removed."""
    removed: list[str] = []
    urls = orphan_candidates(conn)
    for chunk in in_chunks(urls):
        conn.execute(sa.delete(O).where(O.c.url.in_(chunk)))
        carried = set(conn.execute(sa.select(F.c.article_url).where(F.c.article_url.in_(chunk))).scalars())
        gone = [url for url in chunk if url not in carried]
        if not gone:
            continue
        query = sa.select(A.c.id, A.c.url, A.c.is_published).where(A.c.url.in_(gone), A.c.removed.is_(False))
        rows = conn.execute(query).all()
        if not rows:
            continue
        ids = [row.id for row in rows]
        conn.execute(sa.update(A).where(A.c.id.in_(ids)).values(removed=True, updated_at=now))
        shown = [row.id for row in rows if row.is_published]  # a draft was in no feed, and shown nowhere
        _note_view_changes(conn, shown)
        if shown:
            topic_ids = set(conn.execute(sa.select(AT.c.topic_id).where(AT.c.article_id.in_(shown))).scalars())
            _mark_topics_dirty(conn, topic_ids)
            mark_all_dirty(conn)
        removed.extend(row.url for row in rows)
    return removed


def files_carrying(conn: Connection, urls: Iterable[str]) -> list[str]:
    """Paths of the stored files that carry any of these article URLs."""
    paths: list[str] = []
    for chunk in in_chunks(sorted(urls)):
        paths.extend(conn.execute(sa.select(F.c.path).where(F.c.article_url.in_(chunk))).scalars())
    return paths


def _mark_topics_dirty(conn: Connection, topic_ids: set[int]) -> None:
    for chunk in in_chunks(sorted(topic_ids)):
        conn.execute(sa.update(T).where(T.c.id.in_(chunk)).values(dirty=True))


def mark_all_dirty(conn: Connection) -> None:
    set_meta_value(conn, keys.ALL_FEED_DIRTY, "1")


def meta_value(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(M.c.value).where(M.c.key == key)).scalar()


def set_meta_value(conn: Connection, key: str, value: str) -> None:
    if conn.execute(sa.update(M).where(M.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(sa.insert(M).values(key=key, value=value))


def all_feed_dirty(conn: Connection) -> bool:
    value = conn.execute(sa.select(M.c.value).where(M.c.key == keys.ALL_FEED_DIRTY)).scalar()
    return value == "1"


def clear_dirty(conn: Connection, topic_ids: Iterable[int], all_feed: bool) -> None:
    for chunk in in_chunks(sorted(topic_ids)):
        conn.execute(sa.update(T).where(T.c.id.in_(chunk)).values(dirty=False))
    if all_feed:
        conn.execute(sa.update(M).where(M.c.key == keys.ALL_FEED_DIRTY).values(value="0"))


def dirty_topics(conn: Connection) -> list[Row[Any]]:
    return conn.execute(sa.select(T.c.id, T.c.slug, T.c.name).where(T.c.dirty.is_(True)).order_by(T.c.id)).all()


def published_topics(conn: Connection) -> list[Row[Any]]:
    """Topics with at least one published article, by name."""
    # EXISTS stops at a topic's first published article, where a count would read them all.
    published = sa.exists(
        sa.select(AT.c.article_id)
        .select_from(AT.join(A, A.c.id == AT.c.article_id))
        .where(AT.c.topic_id == T.c.id, A.c.is_published.is_(True), A.c.removed.is_(False))
    )
    return conn.execute(sa.select(T.c.id, T.c.slug, T.c.name).where(published).order_by(T.c.key)).all()


def topic_slugs(conn: Connection) -> set[str]:
    """The slug of every topic ever given one: the only topic feed files feedworker writes."""
    return set(conn.execute(sa.select(T.c.slug)).scalars())


def feed_window(conn: Connection, topic_id: int | None, limit: int) -> list[tuple[int, datetime]]:
    """(id, updated_at) of the entries of a topic's feed, or of the all feed (`topic_id` None), newest first."""
    query = sa.select(A.c.id, A.c.updated_at).where(A.c.is_published.is_(True), A.c.removed.is_(False))
    if topic_id is not None:
        query = query.select_from(A.join(AT, AT.c.article_id == A.c.id)).where(AT.c.topic_id == topic_id)
    query = query.order_by(A.c.published_at.desc(), A.c.id.desc()).limit(limit)
    return [(row.id, row.updated_at) for row in conn.execute(query)]


def meta_values(conn: Connection, prefix: str) -> dict[str, str]:
    """Meta values whose keys start with `prefix`, by key."""
    return {row.key: row.value for row in conn.execute(sa.select(M.c.key, M.c.value).where(M.c.key.startswith(prefix, autoescape=True)))}


def articles_by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, StoredEntry]:
    """Articles with their topics, lead image and related items: three queries per chunk."""
    result: dict[int, StoredEntry] = {}
    for chunk in in_chunks(list(ids)):
        query = sa.select(A, C.c.body, C.c.related_json).join(C, C.c.article_id == A.c.id).where(A.c.id.in_(chunk))
        articles = {row.id: row for row in conn.execute(query)}
        names: dict[int, list[str]] = {}
        query = (
            sa.select(AT.c.article_id, T.c.name)
            .select_from(AT.join(T, T.c.id == AT.c.topic_id))
            .where(AT.c.article_id.in_(chunk))
            .order_by(AT.c.article_id, T.c.key)
        )
        for row in conn.execute(query):
            names.setdefault(row.article_id, []).append(row.name)
        images = {
            row.article_id: row
            for row in conn.execute(sa.select(AI).where(AI.c.article_id.in_(chunk), AI.c.position == 0))
        }
        for article_id, article in articles.items():
            result[article_id] = StoredEntry(
                article, tuple(names.get(article_id, ())), images.get(article_id), _stored_items(article.related_json)
            )
    return result


def article_counts(conn: Connection) -> dict[str, int]:
    published = sa.func.coalesce(sa.func.sum(sa.case((A.c.is_published.is_(True), 1), else_=0)), 0)
    total, published_count = conn.execute(sa.select(sa.func.count(), published).where(A.c.removed.is_(False))).one()
    return {"total": total, "published": published_count}


def quarantined_files(conn: Connection) -> list[dict[str, str]]:
    query = sa.select(F.c.path, F.c.error).where(F.c.state == "quarantined").order_by(F.c.path)
    return [{"path": row.path, "message": row.error or ""} for row in conn.execute(query)]
