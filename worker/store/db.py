"""Engine, sessions, schema version: the one place for database-dialect quirks."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from worker.store.errors import StoreError
from worker.store.version import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "UTCDateTime",
    "bulk_insert",
    "connect",
    "create_indexes",
    "drop_indexes",
    "in_chunks",
    "indexes_deferred",
    "transaction",
]

BUSY_TIMEOUT_S = 30.0
# Keeps every `IN (...)` list and multi-row statement well under SQLite's variable limit.
CHUNK = 500


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

        from worker.store.quick import db_time

        # The bulk-insert hot path: the same text SQLAlchemy's SQLite DATETIME stores, in one step.
        def to_text(value: datetime | None) -> str | None:
            return None if value is None else db_time(value)

        return to_text


def connect(url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Engine:
    """Open the database, create or migrate its schema, and return the engine."""
    from worker.store import models  # noqa: F401  (registers the tables)

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args=_connect_args(url, busy_timeout_s))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as conn:
            _migrate(conn)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"database {engine.url.render_as_string(hide_password=True)}: {_reason(exc)}") from None
    return engine


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: everything in it lands together or not at all."""
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StoreError(f"database write failed: {_reason(exc)}") from exc


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows (all with the same keys) through one driver-level executemany.

    SQLAlchemy's per-row parameter handling costs more than SQLite itself at 100,000
    rows a run; here the statement is compiled once and values pass through the
    column types' bind processors only where a column has one.
    """
    if not rows:
        return
    keys = tuple(rows[0])
    sql, order, processors = _insert_plan(conn.dialect, table, keys)
    converters = [(position, processor) for position, processor in enumerate(processors) if processor is not None]
    pick = operator.itemgetter(*order)
    params: list[Any] = list(map(pick, rows)) if len(order) > 1 else [(pick(row),) for row in rows]
    if converters:
        for index, values in enumerate(params):
            converted = list(values)
            for position, processor in converters:
                converted[position] = processor(converted[position])
            params[index] = tuple(converted)
    if not _is_positional(conn.dialect):
        params = [dict(zip(order, values, strict=True)) for values in params]
    conn.exec_driver_sql(sql, params)


_PLANS: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...], list[Any]]] = {}


def _insert_plan(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...], list[Any]]:
    cache_key = (dialect.name, table.name, keys)
    plan = _PLANS.get(cache_key)
    if plan is None:
        compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(keys))
        order = tuple(compiled.positiontup) if compiled.positional else keys  # type: ignore[arg-type]
        processors = [_bind_processor(table.c[key].type, dialect) for key in order]
        plan = _PLANS[cache_key] = (str(compiled), order, processors)
    return plan


def _bind_processor(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> Any:
    # sqlite3 already stores a Python bool as the 0 or 1 SQLAlchemy's processor would make.
    if dialect.name == "sqlite" and isinstance(column_type, sa.Boolean):
        return None
    return column_type.bind_processor(dialect)


def _is_positional(dialect: sa.Dialect) -> bool:
    return dialect.paramstyle in ("qmark", "numeric", "format")


def in_chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _connect_args(url: str, busy_timeout_s: float) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"timeout": busy_timeout_s}
    return {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers (status, the HTTP server) run beside a writing cycle; NORMAL sync
    # is durable across process crashes, which is the failure we guard against.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-32000")
    # Checkpoint the WAL every ~64 MB rather than every 4 MB: fewer syncs of the database
    # file during a large first run; readers are unaffected.
    cursor.execute("PRAGMA wal_autocheckpoint=16000")
    cursor.close()


def _migrate(conn: Connection) -> None:
    from worker.store.models import Meta

    inspector = sa.inspect(conn)
    stored = None
    if inspector.has_table(Meta.__tablename__):
        stored = conn.execute(sa.select(Meta.value).where(Meta.key == "schema_version")).scalar()
    if stored is None:
        # A new store; or a first run killed while creating it: SQLite's driver runs CREATE
        # TABLE outside the transaction, so tables can exist without the version row, and
        # nothing else was written yet. create_all makes only what is missing.
        SQLModel.metadata.create_all(conn)
        conn.execute(sa.insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    version = int(stored)
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database has schema version {version}; this feedworker knows {SCHEMA_VERSION}")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for step in _MIGRATIONS[target]:
            if callable(step):
                step(conn)
            else:
                conn.execute(sa.text(step))
    if version < SCHEMA_VERSION:
        conn.execute(sa.update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    SQLModel.metadata.create_all(conn)  # tables added since; existing ones are left alone
    _create_missing_indexes(conn)


def _create_missing_indexes(conn: Connection) -> None:
    # A first run interrupted while its indexes were deferred left them out.
    present = {(table, index["name"]) for table in _DEFERRED for index in sa.inspect(conn).get_indexes(table)}
    for table in _DEFERRED:
        for index in SQLModel.metadata.tables[table].indexes:
            if (table, index.name) not in present:
                index.create(conn)


# The tables a run fills, whose secondary (non-unique) indexes a first run builds at its end.
_DEFERRED = ("source_file", "article", "article_topic", "related_item")


@contextmanager
def indexes_deferred(engine: Engine, defer: bool) -> Iterator[None]:
    """Fill the store with the secondary indexes of the filled tables off, then build them once.

    For a first run: once an index outgrows the page cache, inserting each row at a random
    place in it costs a page read, while building it at the end is one sort. An interrupted
    fill leaves them off; `connect` builds them again. Unique indexes stay: they are rules.
    """
    if not defer:
        yield
        return
    tables = [SQLModel.metadata.tables[name] for name in _DEFERRED]
    with transaction(engine) as conn:
        drop_indexes(conn, tables)
    yield
    with transaction(engine) as conn:
        create_indexes(conn, tables)


def drop_indexes(conn: Connection, tables: list[sa.Table]) -> None:
    """Drop the secondary (non-unique) indexes of these tables, where they exist."""
    for table in tables:
        for index in table.indexes:
            index.drop(conn, checkfirst=True)


def create_indexes(conn: Connection, tables: list[sa.Table]) -> None:
    """Create the secondary indexes of these tables, where they are missing."""
    for table in tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def _related_items_to_json(conn: Connection) -> None:
    """Version 2 keeps an article's related items as one JSON list, 500 articles at a time."""
    import orjson

    fields = ("url", "web_url", "title", "excerpt", "published_at", "provider_name", "provider_domain", "image_url")
    select = sa.text(
        f"SELECT article_id, {', '.join(fields)} FROM related_item WHERE article_id IN :ids ORDER BY article_id, position"
    ).bindparams(sa.bindparam("ids", expanding=True))
    update = sa.text("UPDATE article_content SET related_json = :json WHERE article_id = :id")
    article_ids = list(
        conn.execute(sa.text("SELECT DISTINCT article_id FROM related_item ORDER BY article_id")).scalars()
    )
    for chunk in in_chunks(article_ids):
        items: dict[int, list[dict[str, Any]]] = {}
        for article_id, *values in conn.execute(select, {"ids": chunk}):
            item = {name: value for name, value in zip(fields, values, strict=True) if value is not None}
            if "published_at" in item:  # naive UTC text, as UTCDateTime wrote it
                item["published_at"] = datetime.fromisoformat(str(item["published_at"])).replace(tzinfo=UTC).isoformat()
            items.setdefault(article_id, []).append(item)
        encoded = [
            {"id": key, "json": orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()}
            for key, value in items.items()
        ]
        conn.execute(update, encoded)


# Schema version -> statements (or functions of the connection) that bring the previous version to it.
_MIGRATIONS: dict[int, list[str | Callable[[Connection], None]]] = {
    2: [
        # Entry HTML is rendered when a feed is, for the few entries feeds show, not per file stored.
        "ALTER TABLE article DROP COLUMN body_html",
        # The large fields move to their own table (see models.Article), with the related items
        # whole as JSON; related_item keeps what the graph queries need: one narrow row an item.
        (
            "CREATE TABLE article_content (article_id INTEGER NOT NULL, body VARCHAR, extra_json VARCHAR,"
            " related_json VARCHAR, PRIMARY KEY (article_id), FOREIGN KEY(article_id) REFERENCES article (id)"
            " ON DELETE CASCADE)"
        ),
        "INSERT INTO article_content (article_id, body, extra_json) SELECT id, body, extra_json FROM article",
        "ALTER TABLE article DROP COLUMN body",
        "ALTER TABLE article DROP COLUMN extra_json",
        _related_items_to_json,
        "DROP INDEX ix_related_item_url",  # made again, covering (see models.RelatedItem)
        "ALTER TABLE related_item ADD COLUMN wants_page BOOLEAN NOT NULL DEFAULT 0",
        "ALTER TABLE related_item ADD COLUMN shows_page BOOLEAN NOT NULL DEFAULT 0",
        (
            "UPDATE related_item SET wants_page = (title IS NULL OR excerpt IS NULL OR image_url IS NULL),"
            " shows_page = (title IS NULL OR (provider_name IS NULL AND provider_domain IS NULL))"
        ),
        *(
            f"ALTER TABLE related_item DROP COLUMN {column}"
            for column in (
                "web_url",
                "title",
                "excerpt",
                "published_at",
                "provider_name",
                "provider_domain",
                "image_url",
            )
        ),
    ],
    # The orphan_candidate table (models.OrphanCandidate), filled with the articles a run killed
    # by an earlier version left published with no file carrying them: the next cycle removes them.
    3: [
        "CREATE TABLE IF NOT EXISTS orphan_candidate (url VARCHAR NOT NULL, PRIMARY KEY (url))",
        (
            "INSERT INTO orphan_candidate (url) SELECT url FROM article WHERE removed = 0 AND url NOT IN"
            " (SELECT article_url FROM source_file WHERE article_url IS NOT NULL)"
        ),
    ],
}


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    text = " ".join(str(original or exc).split())[:300]
    if "database is locked" in text:
        text += " (another process held a write lock longer than busy_timeout_s)"
    return text
