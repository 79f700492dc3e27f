"""Topics: slugs given once, which topics have feeds, and which feeds must be rendered again."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from worker.store import keys
from worker.store import meta as meta_store
from worker.store.db import in_chunks
from worker.store.schema import Article, ArticleTopic, Meta, Topic
from worker.topics import topic_key, unique_slug

__all__ = ["TopicRegistry", "all_feed_dirty", "clear_dirty", "dirty_topics", "mark_all_dirty", "mark_topics_dirty", "published_topics", "topic_slugs"]

A = Article.__table__
T = Topic.__table__
AT = ArticleTopic.__table__
M = Meta.__table__


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


def mark_topics_dirty(conn: Connection, topic_ids: set[int]) -> None:
    for chunk in in_chunks(sorted(topic_ids)):
        conn.execute(sa.update(T).where(T.c.id.in_(chunk)).values(dirty=True))


def mark_all_dirty(conn: Connection) -> None:
    meta_store.set_meta_value(conn, keys.ALL_FEED_DIRTY, "1")


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
