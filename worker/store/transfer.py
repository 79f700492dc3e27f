"""Copying an SQLite store into an empty PostgreSQL database (`feedworker migrate --to URL`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from worker.model import FEED_FORMATS, INDEX_FILES
from worker.store import postgres, sqlite
from worker.store.db import alembic_config, bulk_insert, check_schema, connect
from worker.store.documents import document_etag
from worker.store.errors import StoreError, describe
from worker.store.keys import FEED_WINDOW as _WINDOW
from worker.store.lock import cycle_lock
from worker.store.schema import FEED_DOCUMENT, META, TOPIC, metadata

_PAGE_WINDOW = _WINDOW + "archive/"

__all__ = ["CHUNK_BYTES", "CHUNK_ROWS", "copy_store", "shown_url"]

# At most this many rows of a table in memory at once, and about this many bytes of their text:
# a table of large rows (article bodies) is read in smaller chunks.
CHUNK_ROWS = 2000
CHUNK_BYTES = 16 * 1024 * 1024
_FIRST_CHUNK_ROWS = 100  # each table's first chunk, before its rows' size is known
_VERSION_TABLE = "alembic_version"  # Alembic's, written by the schema's creation: not copied
_TARGET_SHAPE = "postgresql+psycopg://user@host/database"


def shown_url(url: str) -> str:
    """The URL as messages show it: its password as `***`."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(an unreadable URL)"


def copy_store(
    source_url: str,
    target_url: str,
    *,
    busy_timeout_s: float,
    on_wait: Callable[[str], None] | None = None,
    progress: Callable[[str, int], None] | None = None,
    feeds: Iterable[tuple[str, bytes, datetime]] = (),
) -> dict[str, int]:
    """Copy the SQLite store at `source_url` into the empty PostgreSQL database at `target_url`.

    The source must be at this feedworker's schema (it is only read); the target must hold
    no feedworker table. Under the cycle lock of both (waiting for a running cycle; `on_wait`
    is called first with the database's URL as shown), the target gets the schema and every
    row of every table, its integer keys' sequences set past the copied ones, all in one
    transaction: a failure leaves it as it was. `progress(table, rows copied so far)` follows
    each chunk. `feeds`: the feeds the SQLite store's cycles wrote, as (path under the feeds
    folder, bytes, mtime): they become the target's feed documents (what replicas serve), so a
    first cycle there renders nothing again. Returns the rows copied, by table name. Raises
    StoreError with one line.
    """
    _check_target_url(target_url)
    path = sqlite.file_path(source_url)
    if path is None:
        raise StoreError(f"migrate --to copies an SQLite store; the database {shown_url(source_url)} is not one")
    if not os.path.exists(path):
        raise StoreError(f"no database at {path}: there is no store to copy")

    def waiting(url: str) -> Callable[[], None] | None:
        if on_wait is None:
            return None
        return lambda: on_wait(shown_url(url))

    with cycle_lock(source_url, waiting(source_url)), cycle_lock(target_url, waiting(target_url)):
        source = connect(source_url, busy_timeout_s=busy_timeout_s, readonly=True)
        target = connect(target_url, busy_timeout_s=busy_timeout_s)
        try:
            _check_source(source, path)
            return _copy(source, target, progress, feeds)
        finally:
            source.dispose()
            target.dispose()


def _check_target_url(url: str) -> None:
    try:
        sa.make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"migrate --to: not a database URL; a PostgreSQL one looks like {_TARGET_SHAPE}") from None
    if not postgres.is_postgres(url):
        raise StoreError(f"migrate --to copies into a PostgreSQL database ({_TARGET_SHAPE}), not {shown_url(url)}")


def _check_source(source: Engine, path: str) -> None:
    try:
        present = check_schema(source)
    except StoreError as exc:
        raise StoreError(f"cannot copy {path}: {exc}") from None
    if not present:
        raise StoreError(f"cannot copy {path}: it holds no feedworker store yet (a run creates it)")


def _copy(
    source: Engine,
    target: Engine,
    progress: Callable[[str, int], None] | None,
    feeds: Iterable[tuple[str, bytes, datetime]],
) -> dict[str, int]:
    shown = target.url.render_as_string(hide_password=True)
    try:
        with source.connect() as reader, target.begin() as writer:
            _check_empty(writer, shown)
            _create_schema(writer)
            for table in reversed(metadata.sorted_tables):
                writer.execute(sa.delete(table))  # what the schema's creation wrote: the source's rows replace it
            copied = {table.name: _copy_table(reader, writer, table, progress) for table in metadata.sorted_tables}
            if not copied.get(FEED_DOCUMENT.name):
                ours = _feed_paths(writer)
                for path, body, modified_at in feeds:
                    if path not in ours:
                        continue  # a file someone else put in the feeds folder: not served
                    values = {"body": body, "etag": document_etag(body), "modified_at": modified_at}
                    writer.execute(sa.insert(FEED_DOCUMENT).values(path=path, **values))
            postgres.reset_sequences(writer, metadata.sorted_tables)
    except SQLAlchemyError as exc:
        raise StoreError(f"copying into {shown} failed, nothing was written: {describe(exc)}") from None
    return copied


def _feed_paths(conn: Connection) -> set[str]:
    """The feed paths of the copied store: the index files, its topics' feeds and archive pages."""
    slugs = list(conn.execute(sa.select(TOPIC.c.slug)).scalars())
    # Archive pages (RFC 5005): those the store has a window for, of its own topics.
    windows = conn.execute(sa.select(META.c.key).where(META.c.key.startswith(_PAGE_WINDOW, autoescape=True))).scalars()
    pages = {key.removeprefix(_WINDOW) + ".atom" for key in windows}
    known = set(slugs)
    return {
        *INDEX_FILES,
        *(f"topics/{slug}.{kind}" for slug in slugs for kind in FEED_FORMATS),
        *(page for page in pages if page.count("/") == 2 and page.split("/")[1] in known),
    }


def _check_empty(conn: Connection, shown: str) -> None:
    """Refuse a database that holds any of feedworker's tables: the copy never overwrites."""
    inspector = sa.inspect(conn)
    if inspector.has_table(_VERSION_TABLE):
        raise StoreError(
            f"the database {shown} already holds a feedworker store: migrate --to copies only into an empty database"
        )
    found = [table.name for table in metadata.sorted_tables if inspector.has_table(table.name)]
    if found:
        raise StoreError(
            f"the database {shown} already holds feedworker tables ({', '.join(found)}): "
            "migrate --to copies only into an empty database"
        )


def _create_schema(conn: Connection) -> None:
    """This feedworker's schema, by the same Alembic revisions `db.migrate` runs, inside the
    caller's transaction (so that a failed copy leaves no schema behind either)."""
    from alembic import command

    command.upgrade(alembic_config(conn), "head")


def _copy_table(
    reader: Connection, writer: Connection, table: sa.Table, progress: Callable[[str, int], None] | None
) -> int:
    """Every row of `table`, in chunks in primary-key order (keyset pagination)."""
    key = list(table.primary_key.columns)
    if not key:
        raise StoreError(f"table {table.name} has no primary key: it cannot be copied in chunks")
    query = sa.select(table).order_by(*key)
    size, copied, last = _FIRST_CHUNK_ROWS, 0, None
    while True:
        chunk = query if last is None else query.where(_after(key, last))
        rows = [dict(row) for row in reader.execute(chunk.limit(size)).mappings()]
        if rows:
            bulk_insert(writer, table, rows)
            copied += len(rows)
            if progress is not None:
                progress(table.name, copied)
        if len(rows) < size:
            return copied
        last = tuple(rows[-1][column.key] for column in key)
        size = _next_size(rows)


def _after(key: list[sa.Column[Any]], last: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    """The rows after `last` in key order (a row value comparison when the key has several columns)."""
    later: sa.ColumnElement[bool]
    if len(key) == 1:
        later = key[0] > last[0]
    else:
        values = (sa.literal(value, column.type) for column, value in zip(key, last, strict=True))
        later = sa.tuple_(*key) > sa.tuple_(*values)
    return later


def _next_size(rows: list[dict[str, Any]]) -> int:
    """The rows of the next chunk: CHUNK_ROWS, fewer when rows are large."""
    text = sum(len(value) for row in rows for value in row.values() if isinstance(value, str | bytes))
    per_row = max(1, text // len(rows))
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // per_row))
