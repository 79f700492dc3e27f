"""The store's tables, declared once (SQLModel classes): articles keyed by canonical URL, their
topics, images and related items, the related pages fetched for them, the source files they
came from, and the runs; with their column type UTCDateTime.

Imports no other store module at import time: every store module (and the migrations) builds
on this one. The Alembic history in `migrations/` must arrive at exactly these tables
(tests/test_store_schema.py compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = [
    "ARTICLE",
    "ARTICLE_CONTENT",
    "ARTICLE_IMAGE",
    "ARTICLE_TOPIC",
    "CYCLE_LEASE",
    "FEED_DOCUMENT",
    "FETCH_CLAIM",
    "META",
    "ORPHAN_CANDIDATE",
    "PAGE",
    "PARSE_CLAIM",
    "RELATED_EDGE",
    "RELATED_ITEM",
    "RUN",
    "RUN_REQUEST",
    "SOURCE_FILE",
    "TOPIC",
    "Article",
    "ArticleContent",
    "ArticleImage",
    "ArticleTopic",
    "CycleLease",
    "FeedDocument",
    "FetchClaim",
    "Meta",
    "OrphanCandidate",
    "Page",
    "ParseClaim",
    "RelatedEdge",
    "RelatedItem",
    "Run",
    "RunRequest",
    "SourceFile",
    "Topic",
    "UTCDateTime",
    "metadata",
]


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the dialect keeps."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        # The bulk-insert hot path: the same text SQLAlchemy's SQLite DATETIME stores, in one
        # step. worker.store.sqlite is a leaf (it imports no store module but errors).
        from worker.store.sqlite import db_time

        def to_text(value: datetime | None) -> str | None:
            return None if value is None else db_time(value)

        return to_text


# 64-bit where a value may pass 2**31: BIGINT on PostgreSQL; SQLite's INTEGER is 64-bit already.
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column_kwargs={"nullable": nullable}, sa_type=UTCDateTime, index=index)


class Meta(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class SourceFile(SQLModel, table=True):
    """One article file as last seen; the unit of change detection and of quarantine."""

    __tablename__ = "source_file"
    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(unique=True)
    size: int = Field(sa_type=_BIG)  # a file past 2 GiB is recorded (quarantined), not an error
    mtime_ns: int = Field(sa_type=sa.BigInteger)
    hash: str
    state: str = Field(index=True)  # "ok" | "quarantined": every cycle reads the quarantine
    error: str | None = None
    article_url: str | None = Field(default=None, index=True)
    first_seen: datetime = _time(nullable=False)
    checked_at: datetime = _time(nullable=False)


class Article(SQLModel, table=True):
    """An article, identified by its canonical webUrl; kept (marked removed) when its files go.

    Its large fields are in `article_content`: every query of flags and dates then reads a
    table of small rows that stays in the page cache, not one page (or more) an article.
    """

    # Feeds list the newest first, articles of one time by URL: an order of the files alone,
    # not of the order a store's history inserted them in (ids differ between two stores).
    __table_args__ = (sa.Index("ix_article_published_at_url", "published_at", "url"),)

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(unique=True)
    # The feed entry id, minted once: from the URL first seen, kept when the file moves on to
    # another URL, the file's own `id` when it gives one. None (before schema 4): from `url`.
    entry_id: str | None = Field(default=None, index=True)
    web_url: str
    title: str
    excerpt: str | None = None
    published_at: datetime = _time(nullable=False)  # indexed with url: feeds' order (__table_args__)
    date_given: bool = True  # false: published_at is the first-seen time
    first_seen: datetime = _time(nullable=False)
    updated_at: datetime = _time(nullable=False, index=True)  # a cycle's changes are found by it
    # When its archived entry last changed (schema 6): `updated_at` but for the articles that
    # link to it, which current feeds show and archive pages leave out (publish.feeds).
    content_at: datetime = _time(nullable=False)
    category: str | None = None
    type: str | None = None
    original_url: str | None = None
    quality: int | None = Field(default=None, sa_type=_BIG)  # up to 2**62, as the parser takes them
    heat: int | None = Field(default=None, sa_type=_BIG)
    is_published: bool = True
    removed: bool = False
    provider_name: str | None = None
    provider_domain: str | None = None
    content_hash: str


class ArticleContent(SQLModel, table=True):
    """An article's large fields, read only to render its entry."""

    __tablename__ = "article_content"
    article_id: int = Field(foreign_key="article.id", primary_key=True, ondelete="CASCADE")
    body: str | None = None
    extra_json: str | None = None  # unknown fields, `secured` among them: stored, never published
    related_json: str | None = None  # the related items as the file gives them (JSON list)


class Topic(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # NFC + trim + casefold
    name: str
    slug: str = Field(unique=True)  # given once, never changed
    created_at: datetime = _time(nullable=False)
    dirty: bool = True  # its feeds must be rendered again


class ArticleTopic(SQLModel, table=True):
    """An article in a topic, with what a topic's feed is read by (schema 5): whether the
    article is shown (published, not removed) and its place in the feeds' order, copies of
    the article's own, written with it (store.articles). A feed's newest entries, its count
    and its number of archive pages (schema 6: `cut`, where pages end) are then ranges of one
    index, whatever the topic's size."""

    __tablename__ = "article_topic"
    __table_args__ = (sa.Index("ix_article_topic_feed", "topic_id", "shown", "published_at", "url", "cut"),)
    article_id: int = Field(foreign_key="article.id", primary_key=True, ondelete="CASCADE")
    topic_id: int = Field(foreign_key="topic.id", primary_key=True)
    shown: bool
    published_at: datetime = _time(nullable=False)
    url: str
    cut: int  # urls.page_cut(url): an archive page ends after this article when the page size divides it


class ArticleImage(SQLModel, table=True):
    __tablename__ = "article_image"
    article_id: int = Field(foreign_key="article.id", primary_key=True, ondelete="CASCADE")
    position: int = Field(primary_key=True)
    url: str
    width: int | None = None
    height: int | None = None


class RelatedItem(SQLModel, table=True):
    """The canonical URL of a related item, for the graph queries; the item itself is in
    `article_content.related_json`, read only when its entry is rendered."""

    __tablename__ = "related_item"
    # Covering: the queue of pages to fetch is read from this index alone, in URL order.
    __table_args__ = (sa.Index("ix_related_item_url", "url", "wants_page", "article_id"),)
    article_id: int = Field(foreign_key="article.id", primary_key=True, ondelete="CASCADE")
    position: int = Field(primary_key=True)
    url: str
    wants_page: bool  # the item lacks a title, excerpt or image: its fetched page would add one
    shows_page: bool  # the item lacks a title or provider: its entry link shows the page's


class RelatedEdge(SQLModel, table=True):
    """A related item of `source` that is the stored article `target`, as last enriched.

    Kept so that when an edit drops the item, the article it pointed at is still known and
    its entry (which showed the source as a reverse link) is rendered again.
    """

    __tablename__ = "related_edge"
    source_id: int = Field(foreign_key="article.id", primary_key=True, ondelete="CASCADE")
    target_id: int = Field(foreign_key="article.id", primary_key=True, index=True, ondelete="CASCADE")


class Page(SQLModel, table=True):
    """A related page fetched over HTTP: its metadata, validators and when it is due again."""

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(unique=True)  # canonical, as in related_item.url
    status: str  # the last fetch's outcome: "ok", "not_modified", or why it failed
    http_status: int | None = None
    fetched_at: datetime | None = _time()
    next_fetch_at: datetime = _time(nullable=False, index=True)
    etag: str | None = None
    last_modified: str | None = None
    title: str | None = None
    description: str | None = None
    image: str | None = None
    canonical: str | None = None
    site_name: str | None = None
    failures: int = 0  # in a row; resets on success
    error: str | None = None


class OrphanCandidate(SQLModel, table=True):
    """An article URL that lost a file (deleted, or now carrying another webUrl), written in the
    same transaction as that change: whether the article goes is decided once the run has read
    every file, and a run killed before then leaves the question here for the next one."""

    __tablename__ = "orphan_candidate"
    url: str = Field(primary_key=True)


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = _time(nullable=False)
    finished_at: datetime | None = _time()
    status: str  # "running" | "ok" | "failed"
    report_json: str | None = None
    replica: str | None = None  # the process that ran it (several `serve` replicas on PostgreSQL)


class RunRequest(SQLModel, table=True):
    """A run asked for (POST /runs) on any replica of a group: the next cycle to start, on
    whichever replica, serves every request waiting and names itself here."""

    __tablename__ = "run_request"
    id: str = Field(primary_key=True)
    source: str
    replica: str
    requested_at: datetime = _time(nullable=False)
    run_id: int | None = Field(default=None, index=True)  # the run that served it; None: waiting


class CycleLease(SQLModel, table=True):
    """The fencing token of the cycle lock (PostgreSQL): raised by each holder as it takes the
    lock; a write transaction of a holder whose token is no longer the newest fails."""

    __tablename__ = "cycle_lease"
    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})  # one row, id 1
    token: int = Field(sa_type=sa.BigInteger)
    holder: str
    taken_at: datetime = _time(nullable=False)


class ParseClaim(SQLModel, table=True):
    """A file the cycle holder asks every replica to help read (PostgreSQL): claimed in batches
    with FOR UPDATE SKIP LOCKED; the result is stored here until the holder stores the article."""

    __tablename__ = "parse_claim"
    # Claims walk the unread rows in order: an index of those alone, or each claim would step
    # over every row read already (quadratic in a large ingest).
    __table_args__ = (
        sa.Index(
            "ix_parse_claim_unread",
            "seq",
            postgresql_where=sa.text("result IS NULL"),
            sqlite_where=sa.text("result IS NULL"),
        ),
    )
    path: str = Field(primary_key=True)
    seq: int  # the order the holder stores results in (indexed where unread: __table_args__)
    version: str  # "<size>:<mtime_ns>" of the file as scanned: another version is another claim
    max_bytes: int = Field(sa_type=sa.BigInteger)
    known_hash: str | None = None
    root: str
    claimed_by: str | None = None
    claimed_pid: int | None = None  # the claimant's database session: gone (a dead replica) frees it
    lease_until: datetime | None = _time()
    result: str | None = None  # the read, as model.encode_read writes it


class FetchClaim(SQLModel, table=True):
    """A related page the cycle holder asks every replica to help fetch (PostgreSQL): claimed a
    whole host at a time, so the per-host limits hold across replicas; the result is kept
    here until the holder saves the page."""

    __tablename__ = "fetch_claim"
    url: str = Field(primary_key=True)
    host: str = Field(index=True)
    seq: int  # the holder's order: the pages of the newest articles first
    etag: str | None = None  # the validators of the stored copy, for a conditional request
    last_modified: str | None = None
    claimed_by: str | None = None
    claimed_pid: int | None = None
    lease_until: datetime | None = _time()
    result: str | None = None  # the fetch's outcome, as enrich.shared encodes it


class FeedDocument(SQLModel, table=True):
    """A rendered feed as every replica serves it (PostgreSQL): its bytes and validators."""

    __tablename__ = "feed_document"
    path: str = Field(primary_key=True)  # "all.atom", "topics/<slug>.rss", "index.opml"
    body: bytes = Field(sa_type=sa.LargeBinary)
    etag: str  # a hash of the bytes
    modified_at: datetime = _time(nullable=False)  # when these bytes were first stored


# Every table above: what `db.migrate` brings a database to, and what `check_schema` expects.
metadata = SQLModel.metadata


def _table(model: type[SQLModel]) -> sa.Table:
    """The Core table of a SQLModel table class, for the queries (SQLAlchemy Core, never the ORM).

    SQLModel's metaclass sets `model.__table__` at runtime, where no type checker sees it; the
    metadata holds that very `sa.Table` under the class's table name, typed. `__tablename__` is
    declared `str | Callable[..., str]`, and is the name string on every mapped class.
    """
    name = model.__tablename__
    if not isinstance(name, str):  # pragma: no cover - SQLModel resolves it when the class is mapped
        raise TypeError(f"{model.__name__} has no table name")
    return metadata.tables[name]


# The tables as the store's modules query them, declared once.
ARTICLE = _table(Article)
ARTICLE_CONTENT = _table(ArticleContent)
ARTICLE_IMAGE = _table(ArticleImage)
ARTICLE_TOPIC = _table(ArticleTopic)
CYCLE_LEASE = _table(CycleLease)
FEED_DOCUMENT = _table(FeedDocument)
FETCH_CLAIM = _table(FetchClaim)
META = _table(Meta)
ORPHAN_CANDIDATE = _table(OrphanCandidate)
PAGE = _table(Page)
PARSE_CLAIM = _table(ParseClaim)
RELATED_EDGE = _table(RelatedEdge)
RELATED_ITEM = _table(RelatedItem)
RUN = _table(Run)
RUN_REQUEST = _table(RunRequest)
SOURCE_FILE = _table(SourceFile)
TOPIC = _table(Topic)
