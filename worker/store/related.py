"""The related graph in the store: bulk reads for the feeds, and spreading a run's changes to linked articles."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.model import LinkedArticle, PageMetadata
from worker.store import keys
from worker.store.articles import take_view_changes
from worker.store.db import CHUNK, create_indexes, drop_indexes, in_chunks
from worker.store.schema import ARTICLE, ARTICLE_TOPIC, META, PAGE, RELATED_EDGE, RELATED_ITEM, TOPIC
from worker.store.topics import mark_all_dirty

__all__ = ["Changed", "Graph", "changed_articles", "load_graph", "propagate_changes", "touch_listing"]


@dataclass(frozen=True, slots=True)
class Changed:
    """The articles written (or removed) since changes were last spread."""

    ids: list[int]
    urls: list[str]
    gone_urls: list[str]  # of those removed or drafts now: no stored article to link to any more
    everything: bool = False  # every stored article (the first run): whole-table statements do
    # Those whose link view changed (title, provider, date, shown or not: articles.link_view).
    view_changed: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Graph:
    """What the related links of a set of entries need, read in a few bulk queries."""

    linking: dict[str, list[LinkedArticle]] = field(default_factory=dict)  # URL -> articles listing it
    stored: dict[str, LinkedArticle] = field(default_factory=dict)  # published articles by URL
    pages: dict[str, PageMetadata] = field(default_factory=dict)  # fetched pages by URL


def _visible() -> sa.ColumnElement[bool]:
    return sa.and_(ARTICLE.c.removed.is_(False), ARTICLE.c.is_published.is_(True))


def _linked(row: sa.Row[*tuple[Any, ...]]) -> LinkedArticle:
    return LinkedArticle(row.url, row.title, row.provider_name or row.provider_domain, row.published_at)


def load_graph(conn: Connection, entry_urls: Collection[str], item_urls: Collection[str]) -> Graph:
    """Reverse links of the entries, and the stored articles and fetched pages their items name.

    One query of each kind per chunk of URLs, whatever the number of entries.
    """
    graph = Graph()
    columns = (
        ARTICLE.c.url,
        ARTICLE.c.title,
        ARTICLE.c.provider_name,
        ARTICLE.c.provider_domain,
        ARTICLE.c.published_at,
    )
    for chunk in in_chunks(sorted(entry_urls)):
        query = (
            sa.select(RELATED_ITEM.c.url.label("target"), *columns)
            .select_from(RELATED_ITEM.join(ARTICLE, ARTICLE.c.id == RELATED_ITEM.c.article_id))
            .where(RELATED_ITEM.c.url.in_(chunk), _visible())
        )
        for link in conn.execute(query):
            graph.linking.setdefault(link.target, []).append(_linked(link))
    items = sorted(item_urls)
    for chunk in in_chunks(items):
        for article in conn.execute(sa.select(*columns).where(ARTICLE.c.url.in_(chunk), _visible())):
            graph.stored[article.url] = _linked(article)
    for chunk in in_chunks([url for url in items if url not in graph.stored]):
        query = sa.select(PAGE.c.url, PAGE.c.title, PAGE.c.site_name).where(
            PAGE.c.url.in_(chunk), sa.or_(PAGE.c.title.is_not(None), PAGE.c.site_name.is_not(None))
        )
        for page in conn.execute(query):
            graph.pages[page.url] = PageMetadata(title=page.title, site_name=page.site_name)
    return graph


def changed_articles(conn: Connection, now: datetime) -> Changed:
    """Articles changed this run (`updated_at == now`) or since the last call, if a run failed
    before spreading its changes; the first call ever takes every article. Marks them taken."""
    since = _watermark(conn)
    if since is None:
        condition: sa.ColumnElement[bool] = sa.true()
    elif since < now:  # one range of the updated_at index (this cycle's changes are the newest)
        condition = ARTICLE.c.updated_at > since
    else:  # a clock set back
        condition = sa.or_(ARTICLE.c.updated_at == now, ARTICLE.c.updated_at > since)
    query = sa.select(ARTICLE.c.id, ARTICLE.c.url, _visible().label("visible")).where(condition)
    rows = sorted(conn.execute(query).all(), key=lambda row: row.id)  # sorted here: an ORDER BY id walks the table
    _set_watermark(conn, now if since is None else max(since, now))
    ids, urls = [row.id for row in rows], [row.url for row in rows]
    view_changed = frozenset(take_view_changes(conn))
    gone = [row.url for row in rows if not row.visible]
    # Every stored article changed (a first import after cycles that stored nothing): no
    # neighbour outside the change either, and whole-table statements do it at once.
    everything = since is None or (len(rows) > CHUNK and len(rows) == _article_count(conn))
    return Changed(ids, urls, gone, everything=everything, view_changed=view_changed)


def _article_count(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(ARTICLE)).scalar_one())


def propagate_changes(conn: Connection, changed: Changed, now: datetime) -> int:
    """Re-render the neighbours whose related links change with the changed articles; returns
    how many were touched.

    An entry shows another article as a related link when it lists that article (a given
    item) or that article lists it (a reverse link), and shows of it its link view (title,
    provider, date; nothing of a draft or a removed article). So a neighbour moves when it
    lists a changed article whose view changed, when such an article lists it or listed it
    before the change, or when a shown article whose view did not change starts or stops
    listing it. A draft is shown nowhere: adding, editing or deleting one moves no other
    entry. A neighbour's `updated_at` moves to `now` (feed readers see the entry changed) and
    its topics and the all feed are marked dirty; its `content_at` too when what moved is one
    of its own items (archive pages show no reverse links, publish.feeds).
    """
    if not changed.ids:
        return 0
    target = ARTICLE.alias("target")
    if changed.everything:  # no neighbour outside the change: the whole graph in one statement
        conn.execute(sa.delete(RELATED_EDGE))
        # No DISTINCT: an article lists a URL once (the parser drops repeats) and a URL is one
        # article, so each pair comes once. The target index is built once, after.
        edges = sa.select(RELATED_ITEM.c.article_id, target.c.id).select_from(
            RELATED_ITEM.join(target, target.c.url == RELATED_ITEM.c.url)
        )
        edges = edges.where(target.c.id != RELATED_ITEM.c.article_id)
        drop_indexes(conn, [RELATED_EDGE])
        conn.execute(sa.insert(RELATED_EDGE).from_select(["source_id", "target_id"], edges))
        create_indexes(conn, [RELATED_EDGE])
        return 0
    gone = set(changed.gone_urls)
    shown = {id_ for id_, url in zip(changed.ids, changed.urls, strict=True) if url not in gone}
    moved = changed.view_changed
    neighbours: set[int] = set()  # whose reverse links change
    for chunk in in_chunks(changed.ids):
        # Before the edges are rebuilt: what the changed articles linked to last time.
        before = _edges_from(conn, chunk)
        conn.execute(sa.delete(RELATED_EDGE).where(RELATED_EDGE.c.source_id.in_(chunk)))
        conn.execute(
            sa.insert(RELATED_EDGE).from_select(
                ["source_id", "target_id"],
                sa.select(RELATED_ITEM.c.article_id, target.c.id)
                .select_from(RELATED_ITEM.join(target, target.c.url == RELATED_ITEM.c.url))
                .where(RELATED_ITEM.c.article_id.in_(chunk), target.c.id != RELATED_ITEM.c.article_id)
                .distinct(),
            )
        )
        after = _edges_from(conn, chunk)
        # Reverse links: every target of a changed view, and the added or dropped ones of a shown article.
        neighbours.update(target_id for source_id, target_id in before | after if source_id in moved)
        neighbours.update(target_id for source_id, target_id in before ^ after if source_id in shown)
    for chunk in in_chunks(changed.urls):
        # Articles listing a changed one: their edge may be new (the changed one is new).
        lister = RELATED_ITEM.c.article_id
        listed = sa.select(lister, target.c.id).select_from(
            RELATED_ITEM.join(target, target.c.url == RELATED_ITEM.c.url)
        )
        listed = listed.where(RELATED_ITEM.c.url.in_(chunk), target.c.id != lister)
        known = sa.select(RELATED_EDGE.c.source_id).where(
            RELATED_EDGE.c.source_id == lister, RELATED_EDGE.c.target_id == target.c.id
        )
        conn.execute(
            sa.insert(RELATED_EDGE).from_select(["source_id", "target_id"], listed.where(~sa.exists(known)).distinct())
        )
    # Given items: the articles listing a changed view show it differently.
    moved_urls = [url for id_, url in zip(changed.ids, changed.urls, strict=True) if id_ in moved]
    listers: set[int] = set()
    for chunk in in_chunks(moved_urls):
        listers.update(
            conn.execute(sa.select(RELATED_ITEM.c.article_id).where(RELATED_ITEM.c.url.in_(chunk)).distinct()).scalars()
        )
    listers.difference_update(changed.ids)
    neighbours.difference_update(changed.ids, listers)
    return _touch(conn, sorted(listers), now, content=True) + _touch(conn, sorted(neighbours), now, content=False)


def _edges_from(conn: Connection, source_ids: list[int]) -> set[tuple[int, int]]:
    query = sa.select(RELATED_EDGE.c.source_id, RELATED_EDGE.c.target_id).where(
        RELATED_EDGE.c.source_id.in_(source_ids)
    )
    return {(row.source_id, row.target_id) for row in conn.execute(query)}


def touch_listing(conn: Connection, urls: Iterable[str], now: datetime) -> int:
    """Re-render the articles whose entries show these related pages' fetched metadata."""
    shows_page = RELATED_ITEM.c.shows_page.is_(True)
    ids: set[int] = set()
    for chunk in in_chunks(sorted(urls)):
        ids.update(
            conn.execute(
                sa.select(RELATED_ITEM.c.article_id).where(RELATED_ITEM.c.url.in_(chunk), shows_page).distinct()
            ).scalars()
        )
    return _touch(conn, sorted(ids), now, content=True)


def _touch(conn: Connection, article_ids: list[int], now: datetime, *, content: bool) -> int:
    """Move the published articles' `updated_at` to now (and `content_at` with `content`: what
    changed is in their archived entries too); mark their topics and the all feed dirty."""
    touched = 0
    moved = {"updated_at": now, "content_at": now} if content else {"updated_at": now}
    for chunk in in_chunks(article_ids):
        touched += conn.execute(sa.update(ARTICLE).where(ARTICLE.c.id.in_(chunk), _visible()).values(**moved)).rowcount
        topics = sa.select(ARTICLE_TOPIC.c.topic_id).select_from(
            ARTICLE_TOPIC.join(ARTICLE, ARTICLE.c.id == ARTICLE_TOPIC.c.article_id)
        )
        topics = topics.where(ARTICLE_TOPIC.c.article_id.in_(chunk), _visible())
        conn.execute(sa.update(TOPIC).where(TOPIC.c.id.in_(topics)).values(dirty=True))
    if touched:
        mark_all_dirty(conn)
    return touched


def _watermark(conn: Connection) -> datetime | None:
    value = conn.execute(sa.select(META.c.value).where(META.c.key == keys.RELATED_PROPAGATED)).scalar()
    return datetime.fromisoformat(value) if value else None


def _set_watermark(conn: Connection, when: datetime) -> None:
    value = when.isoformat()
    if conn.execute(sa.update(META).where(META.c.key == keys.RELATED_PROPAGATED).values(value=value)).rowcount == 0:
        conn.execute(sa.insert(META).values(key=keys.RELATED_PROPAGATED, value=value))
