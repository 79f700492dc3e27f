"""Pure: feed entries -> RSS 2.0, Atom 1.0 (feedgen), JSON Feed 1.1 and OPML bytes, byte-identical for equal input.

No element is ever blank. An entry's summary (Atom `summary`, RSS `description`, always
plain text) is its excerpt, or its title when it has none; it has content (Atom `content`,
RSS `content:encoded`, HTML) only when it has a body or related links. The summary comes
before the content, the order feed readers and the W3C validator expect.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from worker.model import FEED_FORMATS, RelatedLink
from worker.publish._memo import SegmentedMemo
from worker.publish.history import NO_HISTORY, FeedHistory
from worker.text import xml_safe

__all__ = [
    "Entry",
    "FeedInfo",
    "FeedLink",
    "RelatedLink",
    "archive_updated",
    "body_html",
    "build_entries",
    "extend_archive",
    "image_type",
    "render_archive",
    "render_feeds",
    "render_opml",
]

GENERATOR = "feedworker"
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"


@dataclass(frozen=True, slots=True)
class Entry:
    """One article as every feed shows it."""

    id: str
    link: str
    title: str  # plain text (characters, not markup), as summary
    published: datetime
    updated: datetime
    summary: str  # the excerpt, plain text; empty: the title stands in
    content_html: str  # sanitised: excerpt, body, lead image, provider
    has_body: bool = True  # without a body (nor related links) the entry has no content element
    provider: str | None = None
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    related: tuple[RelatedLink, ...] = ()
    links_back: bool = False  # `related` holds reverse links (articles listing it), which archive pages leave out


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What a feed says of itself; `rss_url`, `atom_url` and `json_url` are the public URLs of its files."""

    id: str
    title: str
    subtitle: str
    home_url: str
    rss_url: str
    atom_url: str
    json_url: str
    full_content: bool = True  # False (feeds.content: summary): entries carry no content element
    hubs: tuple[str, ...] = ()  # WebSub hubs the feed names (rel="hub")
    history: FeedHistory = NO_HISTORY  # RFC 5005: complete, or its archive links


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A feed as the OPML index lists it."""

    title: str
    url: str


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


def render_feeds(
    info: FeedInfo, entries: Sequence[Entry], updated: datetime, formats: Sequence[str] = FEED_FORMATS
) -> tuple[bytes, ...]:
    """RSS 2.0, Atom 1.0 and JSON Feed 1.1 of one feed (those of `formats`, in model.FEED_FORMATS'
    order), newest entry first as given. `updated` (Atom `updated`, RSS `lastBuildDate`) is when
    the feed's entries last changed; every date comes from the arguments, so equal in, equal out."""
    from worker.publish.jsonfeed import render_json_feed

    generator = _generator(info, entries, updated, keep=True)
    renderers = {
        "rss": lambda: generator.rss_str(pretty=True),
        "atom": lambda: generator.atom_str(pretty=True),
        "json": lambda: render_json_feed(info, entries),
    }
    return tuple(renderers[kind]() for kind in FEED_FORMATS if kind in formats)


def render_archive(info: FeedInfo, entries: Sequence[Entry], updated: datetime) -> bytes:
    """An RFC 5005 archive document (Atom 1.0) of these entries, newest first as given."""
    return _generator(info, entries, updated, keep=False).atom_str(pretty=True)


def extend_archive(old: bytes, head: bytes) -> bytes | None:
    """An archive document (`old`) with newer entries put before its own: `head` is the same
    page rendered (render_archive) with those entries alone and the whole page's `updated`.
    The bytes of render_archive of every entry (entries are serialised one by one, each alike
    wherever it stands); None when either is not such a document (the caller renders it whole)."""
    start = old.find(_ENTRY_START)
    end = head.rfind(_FEED_END)
    if start < 0 or end < 0 or not old.endswith(_FEED_END) or head.find(_ENTRY_START) < 0:
        return None
    return head[:end] + old[start + 1 :]


def archive_updated(document: bytes) -> datetime | None:
    """The feed-level `updated` of an archive document (render_archive's), None if it has none."""
    start = document.find(_ENTRY_START)
    header = document if start < 0 else document[:start]
    begin = header.find(b"\n  <updated>")
    close = header.find(b"</updated>", begin)
    if begin < 0 or close < 0:
        return None
    try:
        return datetime.fromisoformat(header[begin + len(b"\n  <updated>") : close].decode())
    except ValueError:
        return None


# How render_archive's pretty-printed Atom begins an entry and ends the document: an entry is
# an element, never text (text has no unescaped "<").
_ENTRY_START = b"\n  <entry>"
_FEED_END = b"</feed>\n"


def render_opml(title: str, feeds: Sequence[FeedLink]) -> bytes:
    """An OPML 2.0 subscription list: one outline per feed, no folders, so that a reader
    importing it subscribes to each feed once. No date: it changes with the list alone."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = xml_safe(title)
    body = etree.SubElement(root, "body")
    for feed in feeds:
        name = xml_safe(feed.title)
        # type="rss" is OPML's word for any feed subscription, Atom included.
        etree.SubElement(body, "outline", type="rss", text=name, title=name, xmlUrl=feed.url)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _generator(info: FeedInfo, entries: Sequence[Entry], updated: datetime, *, keep: bool) -> _Generator:
    fg = FeedGenerator()
    fg.load_extension("media")
    fg.load_extension("dc", atom=False, rss=True)
    fg.register_extension("feedworker", _LinksExtension, _EntryLinksExtension, atom=True, rss=True)
    fg.id(info.id)
    fg.title(xml_safe(info.title))
    fg.subtitle(xml_safe(info.subtitle))
    fg.description(xml_safe(info.subtitle))
    fg.generator(GENERATOR, uri=None, version=None)
    fg.author(name=xml_safe(info.title))  # Atom needs an author for entries without a provider
    fg.language("en")
    fg.updated(updated)
    fg.lastBuildDate(updated)
    if entries:
        fg.pubDate(max(entry.published for entry in entries))
    for entry in entries:
        _add_entry(fg, entry, info.full_content, keep)
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
        hubs = [{"href": hub, "rel": "hub"} for hub in self._info.hubs]
        history = _history_links(self._info.history)
        self._fg.link(
            [{"href": self_url, "rel": "self"}, *hubs, *history, {"href": self._info.home_url, "rel": "alternate"}],
            replace=True,
        )
        extension: _LinksExtension = self._fg.feedworker
        extension.hubs = self._info.hubs  # RSS: feedgen writes the self link alone as atom:link
        extension.history = self._info.history
        return method(pretty=pretty)


def _history_links(history: FeedHistory) -> list[dict[str, str]]:
    links = [
        (history.current_url, "current"),
        (history.prev_archive_url, "prev-archive"),
        (history.next_archive_url, "next-archive"),
    ]
    return [{"href": url, "rel": rel} for url, rel in links if url]


def _add_entry(fg: FeedGenerator, entry: Entry, full_content: bool, keep: bool) -> None:
    fg.add_entry(_built_entry(entry, full_content, keep), order="append")


# Entries built once for every feed and format that shows them: a topic's feed, the all
# feed and archive pages share most entries, and `serve` renders them again cycle after
# cycle. Those of current feeds are kept apart from archive pages' (publish._memo).
# Each holds its elements (some 30 KB an entry with both formats): fewer than the entries.
BUILT_KEPT = 1_000
BUILT_PASSING = 500
_BUILT: SegmentedMemo[tuple[Entry, bool], _BuiltEntry] = SegmentedMemo(BUILT_KEPT, BUILT_PASSING)


def build_entries(entries: Sequence[Entry], *, full_content: bool) -> None:
    """Build these current feed entries ahead of their feeds (publish.feeds.warm_entries)."""
    for entry in entries:
        _built_entry(entry, full_content, keep=True)


def _built_entry(entry: Entry, full_content: bool, keep: bool) -> _BuiltEntry:
    built = _BUILT.get((entry, full_content), keep=keep)
    if built is None:
        built = _build_entry(entry, full_content)
        _BUILT.put((entry, full_content), built, keep=keep)
    return built


def _build_entry(entry: Entry, full_content: bool) -> _BuiltEntry:
    fe = _BuiltEntry()
    # As FeedGenerator.add_entry registers them for a feed made by _generator (same order).
    fe.load_extension("media")
    fe.load_extension("dc", atom=False, rss=True)
    fe.register_extension("feedworker", _EntryLinksExtension, atom=True, rss=True)
    fe.id(entry.id)
    fe.guid(entry.id, permalink=False)
    # Titles and summaries are plain text, and readers take RSS titles and descriptions for
    # HTML: escaped once more, their characters show as characters and never become markup.
    # Atom says so with type="html" (set in _EntryLinksExtension), as jekyll-feed does.
    fe.title(html.escape(xml_safe(entry.title) or entry.link, quote=False))
    fe.link(href=entry.link, rel="alternate")
    fe.published(entry.published)
    fe.updated(entry.updated)
    # Summary and content are written by _EntryLinksExtension, where and only when they say something.
    content = None
    if full_content and (entry.has_body or entry.related):  # the related list has no other place in RSS
        content = xml_safe(body_html(entry.content_html, entry.related))
    summary = xml_safe(entry.summary).strip() or xml_safe(entry.title).strip() or entry.link
    links: _EntryLinksExtension = fe.feedworker  # registered in _generator
    links.summary = html.escape(summary, quote=False)
    links.content = content
    if entry.provider:
        fe.author(name=xml_safe(entry.provider))  # Atom only: RSS <author> must be an e-mail
        fe.dc.dc_creator(xml_safe(entry.provider))
    for name in entry.categories:
        fe.category(term=xml_safe(name), label=xml_safe(name))
    if entry.image_url:
        # The lead image where every kind of reader looks: Media RSS (content and thumbnail),
        # an RSS enclosure and an Atom rel="enclosure" link (its length unknown: 0).
        media = {"url": entry.image_url, "medium": "image", "group": None}
        if entry.image_width:
            media["width"] = str(entry.image_width)
        if entry.image_height:
            media["height"] = str(entry.image_height)
        fe.media.content(media)
        thumbnail = {"url": entry.image_url, "group": None}
        for key in ("width", "height"):
            if key in media:
                thumbnail[key] = media[key]
        fe.media.thumbnail(thumbnail)
        links.enclosure = (entry.image_url, image_type(entry.image_url))
    links.related = entry.related
    links.image_url = entry.image_url
    return fe


class _BuiltEntry(FeedEntry):
    """A feedgen entry whose Atom and RSS elements are each built once, when a feed of that
    format first needs it (archive pages are Atom alone): every feed gets a copy (an element
    has one parent), the same element feedgen would build again. Two threads building one at
    once build the same element; either is kept."""

    _atom: etree._Element | None = None
    _rss: etree._Element | None = None

    def atom_entry(self, extensions: bool = True) -> etree._Element:
        assert extensions
        if self._atom is None:
            self._atom = FeedEntry.atom_entry(self)
        return copy.deepcopy(self._atom)

    def rss_entry(self, extensions: bool = True) -> etree._Element:
        assert extensions
        if self._rss is None:
            self._rss = FeedEntry.rss_entry(self)
        return copy.deepcopy(self._rss)


class _LinksExtension(BaseExtension):
    """The RSS channel's WebSub hub and RFC 5005 links (atom:link, after the self link), and
    the RFC 5005 markers (fh:complete, fh:archive) of both formats."""

    def __init__(self) -> None:
        self.hubs: tuple[str, ...] = ()
        self.history = FeedHistory()

    def extend_atom(self, atom_feed: etree._Element) -> etree._Element:
        marker = _history_marker(self.history)
        if marker is not None:
            _insert_after(atom_feed, atom_feed.findall("link")[-1:], [marker])
        return atom_feed

    def extend_rss(self, rss_feed: etree._Element) -> etree._Element:
        channel = rss_feed.find("channel")
        if channel is None:
            return rss_feed
        atom = "http://www.w3.org/2005/Atom"
        links = [etree.Element(f"{{{atom}}}link", href=hub, rel="hub") for hub in self.hubs]
        links += [etree.Element(f"{{{atom}}}link", link) for link in _history_links(self.history)]
        marker = _history_marker(self.history)
        if marker is not None:
            links.append(marker)
        _insert_after(channel, channel.findall(f"{{{atom}}}link")[-1:], links)
        return rss_feed


FH_NS = "http://purl.org/syndication/history/1.0"


def _history_marker(history: FeedHistory) -> etree._Element | None:
    if history.archive:
        return etree.Element(f"{{{FH_NS}}}archive", nsmap={"fh": FH_NS})
    if history.complete:
        return etree.Element(f"{{{FH_NS}}}complete", nsmap={"fh": FH_NS})
    return None


class _EntryLinksExtension(BaseEntryExtension):
    """Atom entry links with their attributes (feedgen 1.0.0 drops rel, type and title), and
    the summary and content of both formats, in the order readers expect, never blank."""

    def __init__(self) -> None:
        self.related: tuple[RelatedLink, ...] = ()
        self.image_url: str | None = None
        self.enclosure: tuple[str, str] | None = None  # the lead image: URL, MIME type
        self.summary: str | None = None  # escaped, as RSS description and Atom summary type="html"
        self.content: str | None = None  # HTML

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        title = entry.find("title")
        if title is not None:
            title.set("type", "html")
        # feedgen builds Atom elements without a namespace under a default-namespace root.
        added = []
        for item in self.related:
            added.append(etree.Element("link", rel="related", href=item.url, title=xml_safe(item.title)))
        if self.enclosure is not None:
            url, kind = self.enclosure
            added.append(etree.Element("link", rel="enclosure", href=url, type=kind, length="0"))
        if self.summary is not None:
            added.append(_text_element("summary", self.summary, type="html"))
        if self.content is not None:
            added.append(_text_element("content", self.content, type="html"))
        _insert_after(entry, entry.findall("link")[-1:] or [title], added)
        return entry

    def extend_rss(self, item: etree._Element) -> etree._Element:
        added = []
        if self.summary is not None:
            added.append(_text_element("description", self.summary))
        if self.content is not None:
            added.append(_text_element(f"{{{CONTENT_NS}}}encoded", self.content))
        _insert_after(item, item.findall("link")[-1:] or item.findall("title"), added)
        if self.enclosure is not None:
            url, kind = self.enclosure
            _insert_after(item, item.findall("guid")[-1:], [etree.Element("enclosure", url=url, length="0", type=kind)])
        return item


# By the URL's suffix, from a table of our own (the system's mime.types differ by machine, and
# feeds must be the same bytes everywhere); most images without one are JPEG.
_IMAGE_TYPES = {
    ".avif": "image/avif",
    ".gif": "image/gif",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


def image_type(url: str) -> str:
    """The MIME type of an image, from its URL's path."""
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    return _IMAGE_TYPES.get(suffix, "image/jpeg")


def _text_element(tag: str, text: str, **attributes: str) -> etree._Element:
    element = etree.Element(tag, attrib=attributes)
    element.text = text
    return element


def _insert_after(
    parent: etree._Element, anchor: Sequence[etree._Element | None], elements: list[etree._Element]
) -> None:
    position = parent.index(anchor[0]) + 1 if anchor and anchor[0] is not None else len(parent)
    for offset, element in enumerate(elements):
        parent.insert(position + offset, element)
