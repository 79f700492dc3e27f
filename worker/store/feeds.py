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
from worker.store.schema import Article, ArticleContent, ArticleImage, ArticleTopic, Topic

__all__ = ["articles_by_ids", "feed_window"]

A = Article.__table__
C = ArticleContent.__table__
T = Topic.__table__
AT = ArticleTopic.__table__
AI = ArticleImage.__table__


def _stored_items(related_json: str | None) -> tuple[model.RelatedItem, ...]:
    return tuple(map(model.RelatedItem.from_json_fields, orjson.loads(related_json))) if related_json else ()


def feed_window(conn: Connection, topic_id: int | None, limit: int) -> list[tuple[int, datetime]]:
    """(id, updated_at) of the entries of a topic's feed, or of the all feed (`topic_id` None), newest first."""
    query = sa.select(A.c.id, A.c.updated_at).where(A.c.is_published.is_(True), A.c.removed.is_(False))
    if topic_id is not None:
        query = query.select_from(A.join(AT, AT.c.article_id == A.c.id)).where(AT.c.topic_id == topic_id)
    query = query.order_by(A.c.published_at.desc(), A.c.id.desc()).limit(limit)
    return [(row.id, row.updated_at) for row in conn.execute(query)]


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
