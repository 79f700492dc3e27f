"""Pure: topics, their counts and newest headlines -> feeds/index.html, the page people find their feeds on."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jinja2

__all__ = ["FORMATS", "FeedUrls", "Headline", "PageFeed", "html_template", "render_page"]

TEMPLATE = "index.html.j2"


@dataclass(frozen=True, slots=True)
class Headline:
    """An article as the page lists it: its title (plain text), link and publication time."""

    title: str
    link: str
    published: datetime


@dataclass(frozen=True, slots=True)
class FeedUrls:
    """The public URLs of one feed's files."""

    atom: str
    rss: str
    json: str


@dataclass(frozen=True, slots=True)
class PageFeed:
    """A feed as the page shows it: a topic (its label and slug), or every article."""

    name: str  # plain text, as the feeds show it
    slug: str  # the topic's slug (ASCII, never a path); the anchor is topic-<slug>
    count: int  # published articles
    headlines: tuple[Headline, ...]  # the newest first
    feeds: FeedUrls


# The formats every feed is subscribed to in, in the order the page offers them: (key, label, media type).
FORMATS: tuple[tuple[str, str, str], ...] = (
    ("atom", "Atom", "application/atom+xml"),
    ("rss", "RSS", "application/rss+xml"),
    ("json", "JSON Feed", "application/feed+json"),
)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def render_page(title: str, base_url: str, everything: PageFeed, topics: Sequence[PageFeed]) -> bytes:
    """The page as UTF-8 bytes: every topic with its count, newest headlines and subscribe links,
    the every-article feeds and the OPML index (`base_url` + index.opml). Every string is escaped
    (autoescaping); nothing in it depends on when it is rendered, so equal input, equal bytes."""
    context = {
        "title": title,
        "everything": _view(everything),
        "topics": [_view(topic) for topic in topics],
        "formats": [{"key": key, "label": label, "media_type": media} for key, label, media in FORMATS],
        "opml_url": base_url + "index.opml",
    }
    return html_template("worker.publish", TEMPLATE).render(context).encode("utf-8")


@functools.cache
def html_template(package: str, name: str) -> jinja2.Template:
    """The HTML template `name` shipped in `package`'s templates/ folder, escaping every value."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,  # every value is text, escaped where it goes (element or quoted attribute)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.get_template(name)


def _view(feed: PageFeed) -> dict[str, Any]:
    return {
        "name": feed.name,
        "slug": feed.slug,
        "count": feed.count,
        "feeds": {"atom": feed.feeds.atom, "rss": feed.feeds.rss, "json": feed.feeds.json},
        "headlines": [_headline(headline) for headline in feed.headlines],
    }


def _headline(headline: Headline) -> dict[str, str | None]:
    published = headline.published
    if published.tzinfo is None:
        published = published.replace(tzinfo=UTC)
    published = published.astimezone(UTC)
    return {
        "title": headline.title or headline.link,
        # Only web addresses become links (a stored webUrl always is one): never javascript: or data:.
        "link": headline.link if urlsplit(headline.link).scheme.lower() in ("http", "https") else None,
        "datetime": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": f"{published.day} {_MONTHS[published.month - 1]} {published.year}",  # not the locale's names
    }
