"""Pure: feed entries -> JSON Feed 1.1 bytes (https://jsonfeed.org/version/1.1), byte-identical for equal input.

The same ids, order, titles, dates and links as the RSS and Atom renderings of the same
entries (`render.render_feeds` calls it with what it gives them). Text fields are plain text
(JSON Feed has no escaping games); `content_html` is the sanitised HTML the other formats
carry, and an entry without one carries its summary as `content_text` (an item needs one).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from worker.text import xml_safe

if TYPE_CHECKING:
    from worker.publish.render import Entry, FeedInfo

__all__ = ["VERSION", "render_json_feed"]

VERSION = "https://jsonfeed.org/version/1.1"


def render_json_feed(info: FeedInfo, entries: Sequence[Entry]) -> bytes:
    """The feed as JSON Feed 1.1, entries in the order given (newest first)."""
    from worker.publish.render import body_html  # the one "Related coverage" list of every format

    feed: dict[str, Any] = {
        "version": VERSION,
        "title": _text(info.title),
        "home_page_url": info.home_url,
        "feed_url": info.json_url,
        "description": _text(info.subtitle),
        "authors": [{"name": _text(info.title)}],
        "language": "en",
    }
    if info.hubs:
        feed["hubs"] = [{"type": "WebSub", "url": hub} for hub in info.hubs]
    items = []
    for entry in entries:
        title = _text(entry.title) or entry.link
        summary = _text(entry.summary).strip() or title.strip() or entry.link
        item: dict[str, Any] = {"id": entry.id, "url": entry.link, "title": title}
        if info.full_content and (entry.has_body or entry.related):
            item["content_html"] = _text(body_html(entry.content_html, entry.related))
        else:
            item["content_text"] = summary
        item["summary"] = summary
        if entry.image_url:
            item["image"] = entry.image_url
        item["date_published"] = _date(entry.published)
        item["date_modified"] = _date(entry.updated)
        if entry.provider:
            item["authors"] = [{"name": _text(entry.provider)}]
        tags = [name for name in map(_text, entry.categories) if name]
        if tags:
            item["tags"] = tags
        items.append(item)
    feed["items"] = items
    return orjson.dumps(feed, option=orjson.OPT_INDENT_2) + b"\n"


def _text(value: str) -> str:
    # The characters XML cannot carry are dropped here too: every format shows the same text
    # (and a lone surrogate, which orjson refuses, is among them).
    return xml_safe(value)


def _date(moment: datetime) -> str:
    return moment.isoformat()  # RFC 3339, as feedgen writes Atom's dates
