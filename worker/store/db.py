"""Engine, transactions, the schema's state and its migration: the dialect-neutral part of the store.

Opening never writes: `connect` makes an engine and nothing else, `check_schema` tells a reader
whether the store is this feedworker's, and only `migrate` (run by the cycle under its lock, or
by `feedworker migrate`) creates or upgrades the schema, with Alembic (`migrations/`).
What only SQLite needs is in `sqlite.py`, chosen here by dialect.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.store import sqlite
from worker.store.errors import StoreError, describe
from worker.store.lock import cycle_lock
from worker.store.schema import META, UTCDateTime, metadata
from worker.store.version import SCHEMA_REVISION, SCHEMA_VERSION, version_of

__all__ = [
    "FILLED_TABLES",
    "SCHEMA_REVISION",
    "SCHEMA_VERSION",
    "UTCDateTime",
    "alembic_config",
    "bulk_insert",
    "check_schema",
    "connect",
    "create_indexes",
    "drop_indexes",
    "in_chunks",
    "indexes_deferred",
    "keep_statistics",
    "migrate",
    "migrate_database",
    "schema_revision",
    "stored_revision",
    "transaction",
]

BUSY_TIMEOUT_S = 30.0
# Keeps every `IN (...)` list and multi-row statement well under SQLite's variable limit.
CHUNK = 500
VERSION_TABLE = "alembic_version"


def connect(url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False) -> Engine:
    """The engine of the database at `url`. Creates nothing, writes nothing, opens no connection yet.

    An SQLite file is opened only if it exists (a missing one is a StoreError at the first
    use, never an empty database made by a reader); with `readonly` its connections refuse
    every statement that would change it (status, the HTTP server). The schema is not looked
    at: see check_schema (readers) and migrate (the cycle).
    """
    try:
        engine = sa.create_engine(url, connect_args=_connect_args(url, busy_timeout_s))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"database {_shown(url)}: {describe(exc)}") from None
    if engine.dialect.name == "sqlite":

        def on_connect(dbapi_conn: Any, record: Any) -> None:
            sqlite.set_pragmas(dbapi_conn, readonly)

        def open_existing(dialect: Any, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
            sqlite.open_existing(cargs, cparams)

        sa.event.listen(engine, "connect", on_connect)
        sa.event.listen(engine, "do_connect", open_existing)
    return engine


def stored_revision(conn: Connection) -> str | None:
    """The store's schema revision: Alembic's, or the one its `meta.schema_version` (1 to 3,
    before Alembic) stands for, whichever is the newer; None for a database without the
    schema (none made yet, or a first run of an earlier feedworker killed before it recorded
    its version)."""
    inspector = sa.inspect(conn)
    revision = None
    if inspector.has_table(VERSION_TABLE):
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        revision = str(found) if found is not None else None
    if not inspector.has_table(META.name):
        return revision
    stored = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
    if stored is None or not stored.isdigit():
        return revision
    numbered = _LEGACY_REVISIONS.get(int(stored), f"{int(stored):04d}")
    if revision is None or (version_of(revision) or 0) < int(stored):
        return numbered  # a store from before Alembic, or a newer feedworker's
    return revision


# meta.schema_version of the stores made before the history moved to Alembic -> its revision.
_LEGACY_REVISIONS = {
    1: "0001_initial",
    2: "0002_article_content",
    3: "0003_orphan_candidate",
    4: "0004_replicas",
    5: "0005_topic_feed_index",
    6: "0006_archived_entries",
}


def check_schema(engine: Engine) -> bool:
    """Whether the store holds this feedworker's schema: True; False when it holds none yet
    (no cycle has created it). Reads only. Raises StoreError with one line when the schema
    is older (a cycle or `feedworker migrate` upgrades it) or newer than this feedworker's,
    or when the database cannot be read."""
    revision = schema_revision(engine)
    if revision is None:
        return False
    if revision != SCHEMA_REVISION:
        raise StoreError(_version_problem(revision))
    return True


def _is_newer(revision: str | None) -> bool:
    if revision is None:
        return False
    version = version_of(revision)
    return version is None or version > SCHEMA_VERSION


def _version_problem(revision: str) -> str:
    version = version_of(revision)
    if _is_newer(revision):
        shown = version if version is not None else f"revision {revision}"
        return f"the database has schema version {shown}; this feedworker knows {SCHEMA_VERSION}"
    return (
        f"the database has schema version {version}, older than this feedworker's {SCHEMA_VERSION}: "
        "run `feedworker migrate` or a run to upgrade it"
    )


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to this feedworker's (Alembic's head), in one transaction.

    Only the cycle, under its lock, and `feedworker migrate` call it. Also builds the indexes
    a first run killed while they were deferred left out. Raises StoreError with one line
    (the engine's connections closed), e.g. for a store of a newer feedworker.
    Cheap when there is nothing to do: one read, and Alembic is not even imported.
    """
    try:
        if engine.dialect.name == "sqlite":
            sqlite.create_file(engine.url.render_as_string(hide_password=False))
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                sqlite.use_wal(conn)
                conn.commit()
            before = stored_revision(conn)
            stamped = sa.inspect(conn).has_table(VERSION_TABLE)  # else a store from before Alembic
            conn.rollback()
            if before != SCHEMA_REVISION or not stamped:
                _check_not_newer(before)
                with _ddl_transaction(conn):
                    before = stored_revision(conn)  # as it is now that this transaction holds the lock
                    _check_not_newer(before)
                    _upgrade(conn, before)
            if engine.dialect.name == "sqlite":
                tables = [metadata.tables[name] for name in sqlite.DEFERRED_TABLES]
                with conn.begin():
                    sqlite.create_missing_indexes(conn, tables)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"database {_shown(engine.url)}: {_reason(exc)}") from None
    except StoreError:
        engine.dispose()
        raise


def migrate_database(
    url: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, on_wait: Callable[[], None] | None = None
) -> tuple[str | None, str]:
    """`feedworker migrate`: under the cycle lock (waiting for a running cycle; `on_wait` is
    called first), bring the database at `url` to this feedworker's schema, creating it if
    need be. Returns (the revision it had, None for none; the revision it has now)."""
    with cycle_lock(url, on_wait):
        engine = connect(url, busy_timeout_s=busy_timeout_s)
        try:
            path = sqlite.file_path(url)
            before = None if path is not None and not os.path.exists(path) else schema_revision(engine)
            migrate(engine)
        finally:
            engine.dispose()
    return before, SCHEMA_REVISION


def schema_revision(engine: Engine) -> str | None:
    """The store's schema revision (see stored_revision); reads only."""
    path = sqlite.file_path(engine.url.render_as_string(hide_password=False))
    if path is not None and not os.path.exists(path):
        raise StoreError(f"no database at {path} yet: a run or `feedworker migrate` creates it")
    try:
        with engine.connect() as conn:
            return stored_revision(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"database {_shown(engine.url)}: {_reason(exc)}") from None


def _check_not_newer(revision: str | None) -> None:
    if _is_newer(revision):
        assert revision is not None
        raise StoreError(_version_problem(revision))


@contextmanager
def _ddl_transaction(conn: Connection) -> Iterator[None]:
    if conn.dialect.name == "sqlite":
        with sqlite.ddl_transaction(conn):
            yield
    else:
        with conn.begin():
            yield


def _upgrade(conn: Connection, revision: str | None) -> None:
    """Alembic's upgrade to head on `conn`, inside the caller's transaction."""
    from alembic import command

    config = alembic_config(conn)
    inspector = sa.inspect(conn)
    partial = [table for table in metadata.sorted_tables if inspector.has_table(table.name)]
    if revision is None and partial:
        # A first run of a feedworker before Alembic, killed while creating the schema: its
        # driver ran each CREATE TABLE on its own, so some tables of an older schema exist,
        # without the version row and without any data. They go, and the history runs whole.
        if any(conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() for table in partial):
            raise StoreError("the database holds feedworker tables with rows but no schema version: not touched")
        for table in reversed(partial):
            conn.execute(sa.text(f"DROP TABLE {conn.dialect.identifier_preparer.quote(table.name)}"))
        command.upgrade(config, "head")
    else:
        if revision is not None and not inspector.has_table(VERSION_TABLE):
            command.stamp(config, revision)  # a store from before Alembic: its meta.schema_version
        command.upgrade(config, "head")
    _record_version(conn)


def _record_version(conn: Connection) -> None:
    """`meta.schema_version` = SCHEMA_VERSION, for readers that look with sqlite3 alone."""
    where = META.c.key == "schema_version"
    updated = conn.execute(sa.update(META).where(where).values(value=str(SCHEMA_VERSION)))
    if not updated.rowcount:
        conn.execute(sa.insert(META).values(key="schema_version", value=str(SCHEMA_VERSION)))


def alembic_config(conn: Connection | None = None) -> Any:
    """Alembic's configuration, from Python: the revisions in this package, run on `conn`."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "worker.store:migrations")
    config.attributes["connection"] = conn
    return config


@contextmanager
def indexes_deferred(engine: Engine, defer: bool) -> Iterator[None]:
    """Fill the store with the secondary indexes of the filled tables off, then build them once (SQLite).

    For a first run: once an index outgrows the page cache, inserting each row at a random
    place in it costs a page read, while building it at the end is one sort. An interrupted
    fill leaves them off; `migrate` builds them again. Unique indexes stay: they are rules.
    """
    if not defer or engine.dialect.name != "sqlite":
        yield
        return
    tables = [metadata.tables[name] for name in sqlite.DEFERRED_TABLES]
    with transaction(engine) as conn:
        sqlite.drop_indexes(conn, tables)
    yield
    with transaction(engine) as conn:
        sqlite.create_indexes(conn, tables)


# The tables a cycle fills in bulk: their planner statistics have to keep up with them.
FILLED_TABLES = (
    "source_file",
    "article",
    "article_topic",
    "article_image",
    "article_content",
    "related_item",
    "related_edge",
)


def keep_statistics(engine: Engine) -> list[str]:
    """Analyze the filled tables that grew a lot since they last were (PostgreSQL: its planner
    goes by them; SQLite's does without); the names of those analyzed."""
    if engine.dialect.name != "postgresql":
        return []
    from worker.store import postgres

    with transaction(engine) as conn:
        return postgres.analyze_grown(conn, FILLED_TABLES)


drop_indexes = sqlite.drop_indexes
create_indexes = sqlite.create_indexes


def _shown(url: str | sa.URL) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(an unreadable URL)"


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: everything in it lands together or not at all."""
    try:
        with engine.begin() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StoreError(f"database write failed: {_reason(exc)}") from exc


def bulk_insert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows (all with the same keys) through one driver-level executemany (SQLite)
    or one COPY (PostgreSQL).

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
    if conn.dialect.name == "postgresql":
        from worker.store import postgres

        postgres.copy_rows(conn, table.name, order, params)
        return
    if not _is_positional(conn.dialect):
        params = [dict(zip(order, values, strict=True)) for values in params]
    conn.exec_driver_sql(sql, params)


_PLANS: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...], list[Any]]] = {}


def _insert_plan(dialect: sa.Dialect, table: sa.Table, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...], list[Any]]:
    cache_key = (dialect.name, table.name, keys)
    plan = _PLANS.get(cache_key)
    if plan is None:
        compiled = sa.insert(table).compile(dialect=dialect, column_keys=list(keys))
        positions = compiled.positiontup
        order = tuple(positions) if compiled.positional and positions is not None else keys
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


def _reason(exc: SQLAlchemyError) -> str:
    return sqlite.explain(describe(exc))
