"""Pure: feed entries -> RSS 2.0, Atom 1.0 and OPML bytes (feedgen), byte-identical for equal input."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from worker.text import xml_safe

__all__ = [
    "Entry",
    "FeedInfo",
    "FeedLink",
    "RelatedLink",
    "body_html",
    "render_feeds",
    "render_opml",
]

GENERATOR = "feedworker"


@dataclass(frozen=True, slots=True)
class RelatedLink:
    url: str
    title: str
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One article as every feed shows it."""

    id: str
    link: str
    title: str  # plain text (characters, not markup), as summary
    published: datetime
    updated: datetime
    summary: str
    content_html: str  # sanitised
    provider: str | None = None
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    related: tuple[RelatedLink, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What a feed says of itself; `rss_url` and `atom_url` are the public URLs of its files."""

    id: str
    title: str
    subtitle: str
    home_url: str
    rss_url: str
    atom_url: str


@dataclass(frozen=True, slots=True)
class FeedLink:
    title: str
    rss_url: str
    atom_url: str


def body_html(entry_html: str, related: Sequence[RelatedLink]) -> str:
    """The entry's sanitised HTML with its "Related coverage" list appended."""
    if not related:
        return entry_html
    items = "".join(
        f'<li><a href="{html.escape(item.url)}">{html.escape(item.title)}</a>'
        + (f" — {html.escape(item.provider)}" if item.provider else "")
        + "</li>"
        for item in related
    )
    return f"{entry_html}<h3>Related coverage</h3><ul>{items}</ul>"


def render_feeds(info: FeedInfo, entries: Sequence[Entry], now: datetime) -> tuple[bytes, bytes]:
    """RSS 2.0 and Atom 1.0 of one feed (entries built once for both), newest entry first as
    given; dates pinned to the entries, so equal in, equal out."""
    generator = _generator(info, entries, now)
    return generator.rss_str(pretty=True), generator.atom_str(pretty=True)


def render_opml(title: str, feeds: Sequence[FeedLink], updated: datetime) -> bytes:
    """An OPML 2.0 subscription list of every feed, in an RSS and an Atom folder."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = xml_safe(title)
    etree.SubElement(head, "dateModified").text = format_datetime(updated, usegmt=True)
    body = etree.SubElement(root, "body")
    # One folder per format, so a reader importing the list subscribes to each topic once.
    for label, attribute in (("RSS 2.0", "rss_url"), ("Atom 1.0", "atom_url")):
        folder = etree.SubElement(body, "outline", text=label, title=label)
        for feed in feeds:
            name = xml_safe(feed.title)
            etree.SubElement(folder, "outline", type="rss", text=name, title=name, xmlUrl=getattr(feed, attribute))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _generator(info: FeedInfo, entries: Sequence[Entry], now: datetime) -> _Generator:
    fg = FeedGenerator()
    fg.load_extension("media")
    fg.load_extension("dc", atom=False, rss=True)
    fg.register_extension("feedworker", _LinksExtension, _EntryLinksExtension, atom=True, rss=False)
    fg.id(info.id)
    fg.title(xml_safe(info.title))
    fg.subtitle(xml_safe(info.subtitle))
    fg.description(xml_safe(info.subtitle))
    fg.generator(GENERATOR, uri=None, version=None)
    fg.author(name=xml_safe(info.title))  # Atom needs an author for entries without a provider
    fg.language("en")
    newest = max((entry.updated for entry in entries), default=now)
    fg.updated(newest)
    fg.lastBuildDate(newest)
    if entries:
        fg.pubDate(max(entry.published for entry in entries))
    for entry in entries:
        _add_entry(fg, entry)
    return _Generator(fg, info)


class _Generator:
    """A FeedGenerator whose rel=self link is the URL of the very file being written."""

    def __init__(self, fg: FeedGenerator, info: FeedInfo):
        self._fg = fg
        self._info = info

    def rss_str(self, pretty: bool) -> bytes:
        return self._render(self._info.rss_url, self._fg.rss_str, pretty)

    def atom_str(self, pretty: bool) -> bytes:
        return self._render(self._info.atom_url, self._fg.atom_str, pretty)

    def _render(self, self_url: str, method: Callable[..., bytes], pretty: bool) -> bytes:
        # feedgen keeps the last link() as the RSS channel <link>: self first, then home.
        self._fg.link(
            [{"href": self_url, "rel": "self"}, {"href": self._info.home_url, "rel": "alternate"}], replace=True
        )
        return method(pretty=pretty)


def _add_entry(fg: FeedGenerator, entry: Entry) -> None:
    fe = fg.add_entry(order="append")
    fe.id(entry.id)
    fe.guid(entry.id, permalink=False)
    # Titles and summaries are plain text, and readers take RSS titles and descriptions for
    # HTML: escaped once more, their characters show as characters and never become markup.
    # Atom says so with type="html" (set in _EntryLinksExtension), as jekyll-feed does.
    fe.title(html.escape(xml_safe(entry.title) or entry.link, quote=False))
    fe.link(href=entry.link, rel="alternate")
    fe.published(entry.published)
    fe.updated(entry.updated)
    summary = html.escape(xml_safe(entry.summary), quote=False)
    fe.summary(summary, type="html")  # Atom <summary>; RSS <description>
    fe.description(summary)
    fe.content(xml_safe(body_html(entry.content_html, entry.related)), type="html")
    if entry.provider:
        fe.author(name=xml_safe(entry.provider))  # Atom only: RSS <author> must be an e-mail
        fe.dc.dc_creator(xml_safe(entry.provider))
    for name in entry.categories:
        fe.category(term=xml_safe(name), label=xml_safe(name))
    if entry.image_url:
        media = {"url": entry.image_url, "medium": "image", "group": None}
        if entry.image_width:
            media["width"] = str(entry.image_width)
        if entry.image_height:
            media["height"] = str(entry.image_height)
        fe.media.content(media)
    fe.feedworker.related = entry.related
    fe.feedworker.image_url = entry.image_url


class _LinksExtension(BaseExtension):
    pass


class _EntryLinksExtension(BaseEntryExtension):
    """Atom entry links with their attributes: feedgen 1.0.0 drops rel, type and title."""

    def __init__(self) -> None:
        self.related: tuple[RelatedLink, ...] = ()
        self.image_url: str | None = None

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        title = entry.find("title")
        if title is not None:
            title.set("type", "html")
        for item in self.related:
            # feedgen builds Atom elements without a namespace under a default-namespace root.
            link = etree.SubElement(entry, "link")
            link.set("rel", "related")
            link.set("href", item.url)
            link.set("title", xml_safe(item.title))
        return entry
