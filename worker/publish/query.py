"""Feeds of a query over the topics: `query.<format>?topics=a,b&match=any|all&provider=x` (`serve` only).

The published articles of any (`any`, the union) or every (`all`, the intersection) of the
topics named, of one provider when given, in the stored feeds' order and limited to
`feeds.max_entries`, rendered by the code that renders the stored feeds: an entry's id,
title, dates, link and content are the ones the topic feeds show. Nothing here is written
anywhere; `serve` renders a query on request and keeps the result until the next cycle.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import NAMESPACE_URL, uuid5

from sqlalchemy.engine import Connection

from worker.model import FEED_FORMATS, FeedSettings
from worker.publish.feeds import feed_entries, stored_window, topic_feed_name
from worker.store import feeds as feed_store
from worker.store import keys
from worker.store import meta as meta_store
from worker.store import topics as topic_store

__all__ = [
    "MATCHES",
    "MAX_QUERY_CHARS",
    "MAX_TOPICS",
    "FeedQuery",
    "QueryError",
    "QueryFeed",
    "parse_query",
    "render_query",
]

MATCHES = ("any", "all")  # union, intersection; the first is the default
MAX_TOPICS = 20
MAX_QUERY_CHARS = 2048  # the whole query string, as sent
MAX_SLUG_CHARS = 80  # slugs are at most 60 characters, plus a counter (topics.unique_slug)
MAX_PROVIDER_CHARS = 200
_SLUG = re.compile(r"[a-z0-9-]+")  # what topics.base_slug gives (python-slugify's alphabet)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class QueryError(ValueError):
    """A query that names no feed (HTTP 400). Its message never repeats the input."""


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """A query in its canonical form: slugs lowercase, unique and sorted; the provider lowercase."""

    topics: tuple[str, ...]
    match: str = "any"  # "any" | "all"
    provider: str | None = None

    def canonical(self) -> str:
        """The one query string that names this feed: `topics`, `match` (always), `provider` (when given)."""
        params = [("topics", ",".join(self.topics)), ("match", self.match)]
        if self.provider is not None:
            params.append(("provider", self.provider))
        return urllib.parse.urlencode(params, safe=",")


def parse_query(raw: str) -> FeedQuery:
    """The query a query string asks for, however it is spelled (any case or order, repeated or
    unknown parameters, blanks around slugs); QueryError when it asks for none or too much."""
    if len(raw) > MAX_QUERY_CHARS:
        raise QueryError("the query is too long")
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=64)
    except (ValueError, UnicodeDecodeError):
        raise QueryError("the query is not a valid query string") from None
    slugs: set[str] = set()
    matches: set[str] = set()
    providers: set[str] = set()
    for name, value in pairs:
        name = name.strip().lower()
        if name == "topics":
            slugs.update(part.strip().lower() for part in value.split(","))
        elif name == "match":
            matches.add(value.strip().lower())
        elif name == "provider":
            providers.add(value.strip())
        # Any other parameter is dropped: the canonical URL (a redirect away) has none.
    slugs.discard("")
    matches.discard("")
    providers.discard("")
    if not slugs:
        raise QueryError("topics: give one or more topic slugs, comma-separated")
    if len(slugs) > MAX_TOPICS:
        raise QueryError(f"topics: at most {MAX_TOPICS}")
    if any(len(slug) > MAX_SLUG_CHARS or not _SLUG.fullmatch(slug) for slug in slugs):
        raise QueryError("topics: a slug is lowercase letters, digits and hyphens")
    if len(matches) > 1 or not matches <= set(MATCHES):
        raise QueryError("match: any or all")
    if len(providers) > 1:
        raise QueryError("provider: at most one")
    provider = providers.pop().lower() if providers else None
    if provider is not None and (len(provider) > MAX_PROVIDER_CHARS or _CONTROL.search(provider)):
        raise QueryError("provider: a name or domain, at most 200 characters")
    return FeedQuery(tuple(sorted(slugs)), matches.pop() if matches else MATCHES[0], provider)


@dataclass(frozen=True, slots=True)
class QueryFeed:
    """A query's feed in every format (model.FEED_FORMATS' order), and when its topics last changed."""

    bodies: tuple[bytes, ...]
    updated: datetime

    def body(self, kind: str) -> bytes:
        return self.bodies[FEED_FORMATS.index(kind)]


def render_query(conn: Connection, settings: FeedSettings, query: FeedQuery) -> QueryFeed | None:
    """The feed of `query`; None when a topic it names has no feed (unknown, or no published article)."""
    visible = {row.slug: row for row in topic_store.published_topics(conn)}
    rows = [visible.get(slug) for slug in query.topics]
    topics = [row for row in rows if row is not None]
    if len(topics) != len(rows):
        return None
    window = feed_store.query_window(
        conn,
        [row.id for row in topics],
        match_all=query.match == "all",
        provider=query.provider,
        limit=settings.max_entries,
    )
    entries = feed_entries(conn, window)
    # The feed's time is when its entries last changed, never when it was rendered: the newest
    # of its topics' stored change times (and of its entries' updates, for an entry of an
    # intersection older than its topics' own windows), so equal requests get equal bytes.
    changes = [_changed_at(conn, row.slug) for row in topics]
    updated = max(
        [*(moment for moment in changes if moment is not None), *(moment for _, moment in window)], default=_EPOCH
    )
    names = [topic_feed_name(row.name, row.slug) for row in topics]
    joined = (" + " if query.match == "all" else " or ").join(names)
    about = (" and " if query.match == "all" else " or ").join(names)
    title, subtitle = f"{settings.title}: {joined}", f"Articles about {about}"
    if query.provider is not None:
        # As the entries name it (its name, else its domain); the query's spelling before any matches.
        provider = next((entry.provider for entry in entries if entry.provider), query.provider)
        title, subtitle = f"{title} ({provider})", f"{subtitle} from {provider}"
    from worker.publish.render import FeedInfo, render_feeds

    canonical = query.canonical()
    url = {kind: f"{settings.base_url}query.{kind}?{canonical}" for kind in FEED_FORMATS}
    info = FeedInfo(
        id=f"urn:uuid:{uuid5(NAMESPACE_URL, 'feedworker:query?' + canonical)}",  # stable: the canonical query
        title=title,
        subtitle=subtitle,
        home_url=settings.base_url,
        rss_url=url["rss"],
        atom_url=url["atom"],
        json_url=url["json"],
        full_content=settings.content == "full",
        hubs=(),  # no hub is ever told of a query feed's changes: naming one would mislead readers
    )
    return QueryFeed(render_feeds(info, entries, updated), updated)


def _changed_at(conn: Connection, slug: str) -> datetime | None:
    value = meta_store.meta_value(conn, f"{keys.FEED_WINDOW}topics/{slug}")
    return stored_window(value)[1] if value is not None else None
