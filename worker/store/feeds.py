"""What the feed renderer reads: a feed's window of entries, and its articles in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker import model
from worker.model import StoredEntry
from worker.store.db import in_chunks
from worker.store.schema import ARTICLE, ARTICLE_CONTENT, ARTICLE_IMAGE, ARTICLE_TOPIC, TOPIC
from worker.urls import entry_id

__all__ = ["articles_by_ids", "entry_ids", "feed_window", "query_window", "topic_cuts", "topic_history"]


def _stored_items(related_json: str | None) -> tuple[model.RelatedItem, ...]:
    return tuple(map(model.RelatedItem.from_json_fields, orjson.loads(related_json))) if related_json else ()


def feed_window(conn: Connection, topic_id: int | None, limit: int) -> list[tuple[int, datetime]]:
    """(id, updated_at) of the entries of a topic's feed, or of the all feed (`topic_id` None),
    newest first; articles of one time by URL (the same order in every store of the same files)."""
    if topic_id is not None:
        ordered = _topic_entries(topic_id).order_by(ARTICLE_TOPIC.c.published_at.desc(), ARTICLE_TOPIC.c.url.desc())
        return [(row.id, row.updated_at) for row in conn.execute(ordered.limit(limit))]
    query = sa.select(ARTICLE.c.id, ARTICLE.c.updated_at).where(
        ARTICLE.c.is_published.is_(True), ARTICLE.c.removed.is_(False)
    )
    query = query.order_by(ARTICLE.c.published_at.desc(), ARTICLE.c.url.desc()).limit(limit)
    return [(row.id, row.updated_at) for row in conn.execute(query)]


def query_window(
    conn: Connection, topic_ids: Sequence[int], *, match_all: bool, provider: str | None, limit: int
) -> list[tuple[int, datetime]]:
    """(id, updated_at) of the entries of a query's feed (publish.query), filtered and ordered as
    feed_window's: the published articles in any of the topics, in every one with `match_all`,
    of `provider` (lowercase; an article's provider name or domain, case-insensitively) when given."""
    wanted = sorted(set(topic_ids))
    tagged = sa.select(ARTICLE_TOPIC.c.article_id).where(ARTICLE_TOPIC.c.topic_id.in_(wanted))
    if match_all:  # (article_id, topic_id) is the key: a count of rows is a count of topics
        tagged = tagged.group_by(ARTICLE_TOPIC.c.article_id).having(sa.func.count() == len(wanted))
    query = sa.select(ARTICLE.c.id, ARTICLE.c.updated_at).where(
        ARTICLE.c.is_published.is_(True), ARTICLE.c.removed.is_(False), ARTICLE.c.id.in_(tagged)
    )
    order = (ARTICLE.c.published_at.desc(), ARTICLE.c.url.desc())
    if provider is not None and not provider.isascii():
        # SQLite's lower() folds ASCII alone, and PostgreSQL's folds some letters unlike
        # Python's: a provider beyond ASCII is compared here, as the canonical URL spelled it.
        named = query.add_columns(ARTICLE.c.provider_name, ARTICLE.c.provider_domain).order_by(*order)
        rows = [
            (row.id, row.updated_at)
            for row in conn.execute(named)
            if provider in ((row.provider_name or "").strip().lower(), (row.provider_domain or "").strip().lower())
        ]
        return rows[:limit]
    if provider is not None:
        query = query.where(
            sa.or_(
                sa.func.lower(sa.func.trim(ARTICLE.c.provider_name)) == provider,
                sa.func.lower(sa.func.trim(ARTICLE.c.provider_domain)) == provider,
            )
        )
    query = query.order_by(*order).limit(limit)
    return [(row.id, row.updated_at) for row in conn.execute(query)]


def _topic_entries(topic_id: int) -> sa.Select[tuple[int, datetime]]:
    """The topic's shown articles, walked in the feed index (schema.ArticleTopic); ordered by
    its `published_at` and `url`, the article's own."""
    return (
        sa.select(ARTICLE.c.id, ARTICLE.c.updated_at)
        .select_from(ARTICLE_TOPIC.join(ARTICLE, ARTICLE.c.id == ARTICLE_TOPIC.c.article_id))
        .where(ARTICLE_TOPIC.c.topic_id == topic_id, ARTICLE_TOPIC.c.shown.is_(True))
    )


def entry_ids(conn: Connection, ids: Sequence[int]) -> dict[int, str]:
    """The feed entry id of each of these articles (minted once, or from its URL before schema 4)."""
    found: dict[int, str] = {}
    for chunk in in_chunks(list(ids)):
        query = sa.select(ARTICLE.c.id, ARTICLE.c.entry_id, ARTICLE.c.url).where(ARTICLE.c.id.in_(chunk))
        found.update((row.id, row.entry_id or entry_id(row.url)) for row in conn.execute(query))
    return found


def topic_cuts(conn: Connection, topic_id: int, page_size: int, newest: int) -> tuple[int, int, list[int]]:
    """How many entries the topic's feed and its archives hold in all, how many of them end an
    archive page of `page_size` (publish.history), and the cuts of the `newest` newest, newest
    first: counted and read in the feed index alone."""
    shown = (ARTICLE_TOPIC.c.topic_id == topic_id, ARTICLE_TOPIC.c.shown.is_(True))
    ends = sa.func.coalesce(sa.func.sum(sa.case((ARTICLE_TOPIC.c.cut % page_size == 0, 1), else_=0)), 0)
    total, cuts = conn.execute(sa.select(sa.func.count(), ends).where(*shown)).one()
    query = sa.select(ARTICLE_TOPIC.c.cut).where(*shown)
    query = query.order_by(ARTICLE_TOPIC.c.published_at.desc(), ARTICLE_TOPIC.c.url.desc()).limit(newest)
    return int(total), int(cuts), list(conn.execute(query).scalars())


def topic_history(conn: Connection, topic_id: int, limit: int) -> list[tuple[int, datetime, datetime, int]]:
    """(id, content_at, published_at, cut) of the topic's `limit` oldest entries, oldest first:
    feed_window's order reversed, so that archive pages (publish.history) cut the one sequence
    every feed shows. `content_at`, not `updated_at`: archive pages show no reverse links."""
    query = (
        sa.select(ARTICLE.c.id, ARTICLE.c.content_at, ARTICLE_TOPIC.c.published_at, ARTICLE_TOPIC.c.cut)
        .select_from(ARTICLE_TOPIC.join(ARTICLE, ARTICLE.c.id == ARTICLE_TOPIC.c.article_id))
        .where(ARTICLE_TOPIC.c.topic_id == topic_id, ARTICLE_TOPIC.c.shown.is_(True))
        .order_by(ARTICLE_TOPIC.c.published_at.asc(), ARTICLE_TOPIC.c.url.asc())
        .limit(limit)
    )
    return [(row.id, row.content_at, row.published_at, row.cut) for row in conn.execute(query)]


def articles_by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, StoredEntry]:
    """Articles with their topics, lead image and related items: three queries per chunk."""
    result: dict[int, StoredEntry] = {}
    for chunk in in_chunks(list(ids)):
        query = (
            sa.select(ARTICLE, ARTICLE_CONTENT.c.body, ARTICLE_CONTENT.c.related_json)
            .join(ARTICLE_CONTENT, ARTICLE_CONTENT.c.article_id == ARTICLE.c.id)
            .where(ARTICLE.c.id.in_(chunk))
        )
        articles = {row.id: row for row in conn.execute(query)}
        names: dict[int, list[str]] = {}
        query = (
            sa.select(ARTICLE_TOPIC.c.article_id, TOPIC.c.name)
            .select_from(ARTICLE_TOPIC.join(TOPIC, TOPIC.c.id == ARTICLE_TOPIC.c.topic_id))
            .where(ARTICLE_TOPIC.c.article_id.in_(chunk))
            .order_by(ARTICLE_TOPIC.c.article_id, TOPIC.c.key)
        )
        for row in conn.execute(query):
            names.setdefault(row.article_id, []).append(row.name)
        images = {
            row.article_id: row
            for row in conn.execute(
                sa.select(ARTICLE_IMAGE).where(ARTICLE_IMAGE.c.article_id.in_(chunk), ARTICLE_IMAGE.c.position == 0)
            )
        }
        for article_id, article in articles.items():
            result[article_id] = StoredEntry(
                article, tuple(names.get(article_id, ())), images.get(article_id), _stored_items(article.related_json)
            )
    return result
