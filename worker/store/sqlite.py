"""Everything SQLite-only: how a connection is opened and tuned, the `flock` cycle lock, the
deferred secondary indexes of a first run, the transaction that covers DDL, the time text.

Importable without SQLAlchemy (the no-change path imports it before deciding whether it needs
SQLAlchemy at all): the functions that work on an engine or a connection import it themselves.
It imports no other store module but `errors`; `db` and `lock` choose it by dialect, beside
the PostgreSQL module the next dialect adds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.store.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

__all__ = [
    "DEFERRED_TABLES",
    "RAW_DIALECT",
    "create_file",
    "create_indexes",
    "create_missing_indexes",
    "cycle_lock",
    "cycle_running",
    "db_time",
    "ddl_transaction",
    "drop_indexes",
    "explain",
    "file_path",
    "held_lock_descriptors",
    "open_existing",
    "open_raw",
    "set_pragmas",
    "use_wal",
]

_PREFIX = "sqlite:///"


def file_path(url: str) -> str | None:
    """The file of an SQLite URL (`sqlite:///relative` or `sqlite:////absolute`); None for
    another database or an in-memory one."""
    if not url.startswith(_PREFIX):
        return None
    path = url[len(_PREFIX) :].split("?", 1)[0]
    return None if path in ("", ":memory:") or path.startswith("file:") else path


# --------------------------------------------------------------------------- connections


def open_existing(cargs: list[Any], cparams: dict[str, Any]) -> None:
    """Make the driver's connect arguments open the file only if it exists (`mode=rw`): no
    connection creates the database, only `create_file` does. For the `do_connect` event.

    Not `mode=ro` for readers: a read-only connection to a WAL database creates the -wal and
    -shm files when they are missing and cannot remove them when it closes, so `status` run
    by another user would leave files the service cannot write. Readers get query_only.
    """
    if not cargs or not isinstance(cargs[0], str) or cparams.get("uri"):
        return
    path = cargs[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    from urllib.parse import quote

    cargs[0] = f"file:{quote(os.path.abspath(path), safe='/')}?mode=rw"
    cparams["uri"] = True


def set_pragmas(dbapi_conn: Any, readonly: bool = False) -> None:
    """Per-connection settings, none of which writes the database (journal_mode does: see use_wal).

    `readonly`: any statement that would change the database (DDL included) fails, with
    SQLite's "attempt to write a readonly database".
    """
    cursor = dbapi_conn.cursor()
    if readonly:
        cursor.execute("PRAGMA query_only=ON")
    # NORMAL sync is durable across process crashes (the failure we guard against) in WAL mode.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA cache_size=-32000")
    # Checkpoint the WAL every ~64 MB rather than every 4 MB: fewer syncs of the database
    # file during a large first run; readers are unaffected.
    cursor.execute("PRAGMA wal_autocheckpoint=16000")
    cursor.close()


def use_wal(conn: Connection) -> None:
    """Put the database in WAL mode (kept in the file: done once, by the writer that migrates).

    WAL lets readers (status, the HTTP server) run beside a writing cycle.
    """
    conn.exec_driver_sql("PRAGMA journal_mode=WAL")


def create_file(url: str) -> None:
    """Create the (empty) database file and its folder when missing: only the cycle and
    `feedworker migrate` do, since the engine's connections never create it."""
    path = file_path(url)
    if path is None or os.path.exists(path):
        # Never open and close an existing database file: closing any descriptor of it drops
        # every POSIX lock this process holds on it, the WAL connections' shared locks
        # included; another process's connection closing next then takes itself for the
        # last one and deletes the -wal file this process goes on writing (data lost).
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    except FileExistsError:
        return  # made meanwhile (another process's first cycle)
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from None


@contextmanager
def ddl_transaction(conn: Connection) -> Iterator[None]:
    """One transaction that also holds DDL, with the write lock taken at its start.

    Python's sqlite3 driver opens its transactions only before INSERT/UPDATE/DELETE, so a
    CREATE TABLE before them runs (and lands) on its own: a first run killed while creating
    the schema used to leave tables without their version row. Here the driver's own
    transaction handling is off and BEGIN IMMEDIATE is explicit: all of it lands, or none.
    """
    dbapi_conn = conn.connection.driver_connection
    if dbapi_conn is None:  # only once the connection has been invalidated
        raise RuntimeError("the database connection is closed")
    previous = dbapi_conn.isolation_level
    if conn.in_transaction():
        conn.commit()
    dbapi_conn.isolation_level = None
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    finally:
        dbapi_conn.isolation_level = previous


def explain(text: str) -> str:
    """A driver message made actionable where SQLite's own words are not."""
    if "database is locked" in text:
        text += " (another process held a write lock longer than busy_timeout_s)"
    return text


def db_time(moment: datetime) -> str:
    """The text SQLAlchemy's SQLite DATETIME stores for an aware datetime, in UTC: the
    bind fast path of schema.UTCDateTime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}"
    )


# --------------------------------------------------------------------------- deferred indexes

# The tables a run fills, whose secondary (non-unique) indexes a first run builds at its end.
DEFERRED_TABLES = ("source_file", "article", "article_topic", "related_item")


def drop_indexes(conn: Connection, tables: Sequence[Table]) -> None:
    """Drop the secondary (non-unique) indexes of these tables, where they exist."""
    for table in tables:
        for index in table.indexes:
            index.drop(conn, checkfirst=True)


def create_indexes(conn: Connection, tables: Sequence[Table]) -> None:
    """Create the secondary indexes of these tables, where they are missing."""
    for table in tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def create_missing_indexes(conn: Connection, tables: Sequence[Table]) -> None:
    """Create the indexes of these tables that a first run interrupted while they were deferred left out."""
    import sqlalchemy as sa

    inspector = sa.inspect(conn)
    for table in tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                index.create(conn)


# --------------------------------------------------------------------------- the cycle lock

# Descriptors of the cycle locks this process holds: a forked child must close them, or
# it would keep the lock after this process dies.
_HELD_LOCKS: set[int] = set()


def held_lock_descriptors() -> frozenset[int]:
    return frozenset(_HELD_LOCKS)


@contextmanager
def cycle_lock(url: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the one-cycle-at-a-time lock of this database, waiting for it if another process has it.

    An advisory `flock` on `<database>.lock`: the kernel releases it when its holder dies,
    even by SIGKILL, so a stale lock never needs clearing by hand.
    """
    database = file_path(url)
    if database is None:
        raise StoreError(f"no cycle lock for {url.split(':', 1)[0]} databases yet")
    path = database + ".lock"
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD_LOCKS.add(fd)
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # closing releases the lock


def cycle_running(url: str) -> bool | None:
    """Whether some process holds the cycle lock of this database now; None when it cannot tell."""
    database = file_path(url)
    if database is None:
        return None
    try:
        fd = os.open(database + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        # A shared lock conflicts only with a cycle's exclusive one, and is let go at once.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)
    return False


# --------------------------------------------------------------------------- the snapshot's plain connection


class _RawDialect:
    """How store.snapshot's plain SQL writes on a sqlite3 connection."""

    begin_write = "BEGIN IMMEDIATE"  # the write lock at once: no upgrade that could fail half-way
    mark = "?"

    @staticmethod
    def check_fence(cursor: Any, token: int) -> None:
        """Nothing to check: an flock is never lost while its holder lives."""

    @staticmethod
    def time_param(moment: datetime) -> str:
        return db_time(moment)


RAW_DIALECT = _RawDialect()


def open_raw(url: str, busy_timeout_s: float) -> Any:
    """A plain sqlite3 connection (autocommit: transactions are explicit) to the existing
    database file, for the snapshot a cycle plans from; None when the file does not exist
    yet or cannot be opened (the cycle then goes through SQLAlchemy, which says why)."""
    import sqlite3
    from urllib.parse import quote

    path = file_path(url)
    if path is None:
        return None
    uri = f"file:{quote(os.path.abspath(path), safe='/')}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        # As the engine's connections write: durable across a crash of the process. Not its
        # large page cache: this connection reads each table once.
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        return None
    return conn
