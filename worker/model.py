"""Value types the layers share: files found, articles parsed and stored, related links, feed settings.

Plain frozen dataclasses, no I/O, nothing heavier than orjson to import: the parser processes,
the store and the renderer all import this module, and none of them imports another for a type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson

__all__ = [
    "FEED_FORMATS",
    "INDEX_FILES",
    "Article",
    "ArticleCounts",
    "EnrichCounts",
    "FeedCounts",
    "FeedFiles",
    "FeedSettings",
    "FileCounts",
    "FoundFile",
    "Image",
    "Ingested",
    "KnownFile",
    "LinkedArticle",
    "PageMetadata",
    "PageRecord",
    "RelatedItem",
    "RelatedLink",
    "Scan",
    "Source",
    "SourceState",
    "StoreSnapshot",
    "StoredEntry",
    "Touched",
    "WebSubCounts",
    "decode_read",
    "encode_read",
]


# --- what the scan finds -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """A watched folder as the scan walks it."""

    root: Path
    include: tuple[str, ...]
    max_bytes: int
    settle_s: float = 0.0


@dataclass(frozen=True, slots=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int
    max_bytes: int
    root: str = ""  # the real path of its source folder: a read never leaves it
    problem: str | None = None  # why it is quarantined without being read (its name)


@dataclass(frozen=True, slots=True)
class SourceState:
    """One source folder as this scan found it."""

    path: str
    state: str  # "ok", "missing" or "unreadable"; "empty" once the store shows files came from it
    files: int = 0  # article files found under it (not counting files still being written)
    reason: str | None = None  # why it is not ok: the system's words (No such file or directory)
    device: int | None = None  # st_dev of the folder: another one when a volume is not mounted there


@dataclass(slots=True)
class Scan:
    files: dict[str, FoundFile] = field(default_factory=dict)
    # Roots that could not be walked: files stored under them are not taken as deleted.
    unreadable_roots: list[str] = field(default_factory=list)
    # Files present but not to be read this run (still being written): not deleted either.
    unsettled: set[str] = field(default_factory=set)
    problems: list[tuple[str, str]] = field(default_factory=list)
    # Each source folder, in the order given.
    sources: list[SourceState] = field(default_factory=list)
    # None: every file of every source folder was looked at. Otherwise only these paths were:
    # files, and folders (ending in os.sep) with everything under them. An incremental
    # cycle's scan: it takes no file outside them as deleted.
    scope: tuple[str, ...] | None = None


# --- articles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class RelatedItem:
    """A related item as its article file gives it."""

    url: str  # canonical: identity for de-duplication and cross-links
    web_url: str
    title: str | None = None
    excerpt: str | None = None
    published_at: datetime | None = None
    provider_name: str | None = None
    provider_domain: str | None = None
    image_url: str | None = None

    @property
    def provider(self) -> str | None:
        return self.provider_name or self.provider_domain

    def to_json_fields(self) -> dict[str, Any]:
        """The item as the store keeps it (`article_content.related_json`): set fields only."""
        fields = {name: getattr(self, name) for name in _RELATED_FIELDS}
        if self.published_at is not None:
            fields["published_at"] = self.published_at.isoformat()
        return {name: value for name, value in fields.items() if value is not None}

    @classmethod
    def from_json_fields(cls, fields: dict[str, Any]) -> RelatedItem:
        published = fields.get("published_at")
        if published is not None:
            fields = {**fields, "published_at": datetime.fromisoformat(published)}
        return cls(**fields)


_RELATED_FIELDS = tuple(RelatedItem.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Article:
    """An article as its file gives it, validated."""

    url: str  # canonical webUrl: the article's identity
    web_url: str
    title: str
    excerpt: str | None = None
    body: str | None = None
    published_at: datetime | None = None
    category: str | None = None
    type: str | None = None
    original_url: str | None = None
    quality: int | None = None
    heat: int | None = None
    is_published: bool = True
    provider_name: str | None = None
    provider_domain: str | None = None
    topics: tuple[str, ...] = ()
    images: tuple[Image, ...] = ()
    related: tuple[RelatedItem, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    given_id: str | None = None  # the file's own `id`: its entry id (urls.given_entry_id) wins


@dataclass(frozen=True, slots=True)
class Ingested:
    """One file as read this run: a parsed article, or the reason it is quarantined.

    An article's related items travel ready to store (see `of_article`): encoded where the
    file was parsed, so the process writing the store only passes them through.
    """

    path: str
    size: int
    mtime_ns: int
    hash: str
    article: Article | None = None
    error: str | None = None
    related_json: str | None = None
    related_links: tuple[tuple[str, bool, bool], ...] = ()  # (url, wants_page, shows_page) per item
    extra_json: str | None = None  # the unknown fields

    @classmethod
    def of_article(cls, path: str, size: int, mtime_ns: int, hash: str, article: Article) -> Ingested:
        """The article as rows: everything that could fail on what one file holds fails here,
        in the parser, where it quarantines that file alone."""
        items = article.related
        links = tuple(
            (
                item.url,
                item.title is None or item.excerpt is None or item.image_url is None,
                item.title is None or item.provider is None,
            )
            for item in items
        )
        encoded = _json([item.to_json_fields() for item in items]) if items else None
        extra = _json(article.extra) if article.extra else None
        return cls(path, size, mtime_ns, hash, replace(article, related=(), extra={}), None, encoded, links, extra)


# A file whose bytes are the ones stored: only its stat moved. (path, size, mtime_ns)
Touched = tuple[str, int, int]


def encode_read(result: Ingested | Touched | None) -> str:
    """One file's read as JSON text (what replicas hand each other through the store's
    parse_claim table): no pickle, so a row can never run code where it is read back."""
    if result is None:
        return "null"
    if isinstance(result, tuple):
        return _json({"touched": list(result)})
    fields = {name: getattr(result, name) for name in Ingested.__dataclass_fields__}
    article = result.article
    if article is not None:
        fields["article"] = {name: getattr(article, name) for name in Article.__dataclass_fields__}
    return orjson.dumps(fields, option=orjson.OPT_NON_STR_KEYS).decode()


def decode_read(text: str) -> Ingested | Touched | None:
    """encode_read's text back as the value it was made from."""
    data = orjson.loads(text)
    if data is None:
        return None
    if "touched" in data:
        path, size, mtime_ns = data["touched"]
        return (str(path), int(size), int(mtime_ns))
    article = data.get("article")
    if article is not None:
        published = article.get("published_at")
        article = Article(
            **{
                **article,
                "published_at": datetime.fromisoformat(published) if published is not None else None,
                "topics": tuple(article["topics"]),
                "images": tuple(Image(**image) for image in article["images"]),
                "related": tuple(RelatedItem.from_json_fields(item) for item in article["related"]),
                "warnings": tuple(article["warnings"]),
            }
        )
    links = tuple((str(url), bool(wants), bool(shows)) for url, wants, shows in data["related_links"])
    return Ingested(**{**data, "article": article, "related_links": links})


@dataclass(frozen=True, slots=True)
class KnownFile:
    """A source file as the store last saw it."""

    size: int
    mtime_ns: int
    hash: str
    state: str  # "ok" | "quarantined"
    article_url: str | None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A stored article with what its feed entry shows, read in bulk."""

    article: Any  # the article row: its columns by name
    topics: tuple[str, ...]
    image: Any  # the lead image row (url, width, height), or None
    related: tuple[RelatedItem, ...]


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS).decode()


# --- related links ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkedArticle:
    """A stored, published article, as a related link to it shows it."""

    url: str
    title: str
    provider: str | None
    published_at: datetime


@dataclass(frozen=True, slots=True)
class PageMetadata:
    """What a related page says about itself (enrich.metadata reads it); any field may be missing."""

    title: str | None = None
    description: str | None = None
    image: str | None = None
    canonical: str | None = None
    site_name: str | None = None


@dataclass(frozen=True, slots=True)
class PageRecord:
    """A related page as the page cache keeps it (one row of the `page` table): its metadata,
    the validators of its last fetch, and when it is due again."""

    url: str
    status: str  # the last fetch's outcome: "ok", "not_modified", or why it failed
    next_fetch_at: datetime
    http_status: int | None = None
    fetched_at: datetime | None = None
    etag: str | None = None
    last_modified: str | None = None
    title: str | None = None
    description: str | None = None
    image: str | None = None
    canonical: str | None = None
    site_name: str | None = None
    failures: int = 0  # in a row; resets on success
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RelatedLink:
    """A link an entry shows under its content."""

    url: str
    title: str
    provider: str | None = None


# --- feeds -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """What the feeds are rendered with (config's `feeds` section)."""

    dir: Path
    base_url: str
    title: str
    max_entries: int
    opml_format: Literal["atom", "rss"] = "atom"  # the format of the feeds index.opml lists
    content: Literal["full", "summary"] = "full"  # summary: no entry carries its full content
    hubs: tuple[str, ...] = ()  # WebSub hubs every feed names


# Every feed is written in each of these formats, as `<stem>.<format>`.
FEED_FORMATS: tuple[str, ...] = ("rss", "atom", "json")
# The feeds folder's own files besides topics/ (the all feed in every format, the index, the
# feeds page): a cycle puts back any that is missing.
INDEX_FILES: tuple[str, ...] = (*(f"all.{suffix}" for suffix in FEED_FORMATS), "index.opml", "index.html")


@dataclass(frozen=True, slots=True)
class FeedFiles:
    """What the feeds folder holds of feedworker's files, as a cycle starts."""

    index: frozenset[str]  # which of INDEX_FILES are there
    topics: frozenset[str]  # the file names in topics/ (no hidden ones)
    temp_left: bool  # a temporary file a killed write left behind
    archives: frozenset[str] = frozenset()  # "archive/<slug>/<n>.atom" paths there (RFC 5005 pages)

    @classmethod
    def of_paths(cls, paths: Iterable[str]) -> FeedFiles:
        """Feed paths relative to the feeds folder (the documents a PostgreSQL store keeps) as a listing."""
        paths = set(paths)
        topics = frozenset(path.removeprefix("topics/") for path in paths if path.startswith("topics/"))
        archives = frozenset(path for path in paths if path.startswith("archive/") and path.count("/") == 2)
        return cls(frozenset(name for name in INDEX_FILES if name in paths), topics, False, archives)


# --- the store as a cycle plans from it --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """Everything the planner asks of the store, read in one go (store.snapshot)."""

    meta: dict[str, str]
    current_schema: bool  # at this feedworker's schema version; if not, only `meta` was read
    last_run_status: str | None  # the newest run's, finished or not; None: no run yet
    dirty_topics: bool  # a topic whose feeds must be rendered again
    orphan_candidates: bool  # an article may have lost its last file
    visible_slugs: frozenset[str]  # topics with a published article: each has feeds
    known_slugs: frozenset[str]  # every topic ever seen: their feed files are ours
    files: dict[str, tuple[int, int]]  # every stored file: path -> (size, mtime_ns)
    quarantined: list[dict[str, str]]  # the quarantined files as the run report lists them, by path
    documents: frozenset[str] = frozenset()  # the feeds the store keeps (PostgreSQL replicas serve them)
    # Read for a partial scan (Scan.scope): `files` holds only the stored files it looked at,
    # and `files_under` how many stored files each source folder has.
    partial: bool = False
    files_under: dict[str, int] = field(default_factory=dict)


# --- the run report's counts (JSON keys as the README documents them, in this order) ---------


@dataclass(slots=True)
class FileCounts:
    seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0


@dataclass(slots=True)
class ArticleCounts:
    total: int = 0
    published: int = 0


@dataclass(slots=True)
class FeedCounts:
    written: int = 0
    unchanged: int = 0
    removed: int = 0


@dataclass(slots=True)
class WebSubCounts:
    pinged: int = 0  # hubs told of this cycle's changed feeds
    failed: int = 0  # hubs that refused or could not be reached, after the retries


@dataclass(slots=True)
class EnrichCounts:
    fetched: int = 0
    not_modified: int = 0
    failed: int = 0
    refused: int = 0
    pending: int = 0
