"""Topics: slugs given once, which topics have feeds, and which feeds must be rendered again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from worker.store import keys
from worker.store import meta as meta_store
from worker.store.db import in_chunks
from worker.store.schema import ARTICLE, ARTICLE_TOPIC, META, TOPIC
from worker.topics import topic_key, unique_slug

__all__ = [
    "TopicRegistry",
    "TopicSummary",
    "all_feed_dirty",
    "clear_dirty",
    "dirty_topics",
    "mark_all_dirty",
    "mark_topics_dirty",
    "published_topics",
    "topic_slugs",
    "topic_summaries",
]


class TopicRegistry:
    """Topic key -> id for one run; new topics get their slug here, once and for good."""

    def __init__(self, conn: Connection):
        rows = conn.execute(sa.select(TOPIC.c.id, TOPIC.c.key, TOPIC.c.slug)).all()
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
            conn.execute(sa.insert(TOPIC), new_rows)
            for chunk in in_chunks(missing):
                for row in conn.execute(sa.select(TOPIC.c.id, TOPIC.c.key).where(TOPIC.c.key.in_(chunk))):
                    self._ids[row.key] = row.id
        return {key: self._ids[key] for key in named}


def mark_topics_dirty(conn: Connection, topic_ids: set[int]) -> None:
    for chunk in in_chunks(sorted(topic_ids)):
        conn.execute(sa.update(TOPIC).where(TOPIC.c.id.in_(chunk)).values(dirty=True))


def mark_all_dirty(conn: Connection) -> None:
    meta_store.set_meta_value(conn, keys.ALL_FEED_DIRTY, "1")


def all_feed_dirty(conn: Connection) -> bool:
    value = conn.execute(sa.select(META.c.value).where(META.c.key == keys.ALL_FEED_DIRTY)).scalar()
    return value == "1"


def clear_dirty(conn: Connection, topic_ids: Iterable[int], all_feed: bool) -> None:
    for chunk in in_chunks(sorted(topic_ids)):
        conn.execute(sa.update(TOPIC).where(TOPIC.c.id.in_(chunk)).values(dirty=False))
    if all_feed:
        conn.execute(sa.update(META).where(META.c.key == keys.ALL_FEED_DIRTY).values(value="0"))


def dirty_topics(conn: Connection) -> Sequence[Row[int, str, str]]:
    """(id, slug, name) of the topics whose feeds must be rendered again."""
    return conn.execute(
        sa.select(TOPIC.c.id, TOPIC.c.slug, TOPIC.c.name).where(TOPIC.c.dirty.is_(True)).order_by(TOPIC.c.id)
    ).all()


def published_topics(conn: Connection) -> Sequence[Row[int, str, str]]:
    """(id, slug, name) of the topics with at least one published article, by name."""
    # EXISTS stops at a topic's first shown article, in the feed index (schema.ArticleTopic).
    published = sa.exists(
        sa.select(ARTICLE_TOPIC.c.article_id).where(
            ARTICLE_TOPIC.c.topic_id == TOPIC.c.id, ARTICLE_TOPIC.c.shown.is_(True)
        )
    )
    return conn.execute(sa.select(TOPIC.c.id, TOPIC.c.slug, TOPIC.c.name).where(published).order_by(TOPIC.c.key)).all()


def topic_slugs(conn: Connection) -> set[str]:
    """The slug of every topic ever given one: the only topic feed files feedworker writes."""
    return set(conn.execute(sa.select(TOPIC.c.slug)).scalars())


@dataclass(frozen=True, slots=True)
class TopicSummary:
    """A feed as the feeds page shows it: how many articles it has, and the newest of them."""

    count: int
    newest: tuple[tuple[str, str, datetime], ...]  # (title, web_url, published_at), in the feed's order


def topic_summaries(conn: Connection, newest: int) -> dict[int | None, TopicSummary]:
    """Topic id -> the count of its published articles and the `newest` first of them, for every
    topic with one; None -> the same for the all feed, over what feeds show (published, not
    removed) in their order (feeds.feed_window's). Per topic, a count and the first rows of
    a range of the feed index (schema.ArticleTopic): a few rows read, whatever its size."""
    shown = ARTICLE_TOPIC.c.shown.is_(True)
    counts: dict[int | None, int] = {
        row.topic_id: row.total
        for row in conn.execute(
            sa.select(ARTICLE_TOPIC.c.topic_id, sa.func.count().label("total"))
            .where(shown)
            .group_by(ARTICLE_TOPIC.c.topic_id)
        )
    }
    heads: dict[int | None, list[tuple[str, str, datetime]]] = {}
    for topic_id in sorted(counts, key=lambda key: key or 0):
        query = (
            sa.select(ARTICLE.c.title, ARTICLE.c.web_url, ARTICLE.c.published_at)
            .select_from(ARTICLE_TOPIC.join(ARTICLE, ARTICLE.c.id == ARTICLE_TOPIC.c.article_id))
            .where(ARTICLE_TOPIC.c.topic_id == topic_id, shown)
            .order_by(ARTICLE_TOPIC.c.published_at.desc(), ARTICLE_TOPIC.c.url.desc())
            .limit(newest)
        )
        heads[topic_id] = [(row.title, row.web_url, row.published_at) for row in conn.execute(query)]
    visible = (ARTICLE.c.is_published.is_(True), ARTICLE.c.removed.is_(False))
    # A window counts every row WHERE keeps; LIMIT applies after it.
    everything = (
        sa.select(ARTICLE.c.title, ARTICLE.c.web_url, ARTICLE.c.published_at, sa.func.count().over().label("total"))
        .where(*visible)
        .order_by(ARTICLE.c.published_at.desc(), ARTICLE.c.url.desc())
        .limit(newest)
    )
    for row in conn.execute(everything):
        counts[None] = row.total
        heads.setdefault(None, []).append((row.title, row.web_url, row.published_at))
    return {topic_id: TopicSummary(count, tuple(heads[topic_id])) for topic_id, count in counts.items()}
