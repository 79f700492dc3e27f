"""Everything PostgreSQL-only: the advisory cycle lock on a connection of its own, and the
plain psycopg connection the snapshot reads through (importable without SQLAlchemy)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from worker.store.errors import StoreError

__all__ = ["RAW_DIALECT", "cycle_lock", "cycle_running", "held_lock_descriptors", "is_postgres", "open_raw"]

# The socket of each cycle-lock connection this process holds: a forked child must close its
# copy, or the session (and the lock) would outlive this process.
_HELD: set[int] = set()


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0] in ("postgresql", "postgresql+psycopg")


def held_lock_descriptors() -> frozenset[int]:
    return frozenset(_HELD)


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (without the `+psycopg` driver part)."""
    return "postgresql:" + url.split(":", 1)[1]


# Advisory locks are per database: one key names feedworker's cycle lock (a signed 64-bit
# number, as pg_advisory_lock takes it).
_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"feedworker-cycle", digest_size=8).digest(), "big", signed=True)


def _connect(url: str, **options: Any) -> Any:
    import psycopg

    try:
        return psycopg.connect(_libpq_url(url), **options)
    except psycopg.Error as exc:
        raise StoreError(f"database {_shown(url)}: {_reason(exc)}") from None


@contextmanager
def cycle_lock(url: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the database's cycle lock: a session-level advisory lock on a connection kept for
    the cycle. PostgreSQL releases it when that session ends, also when this process dies."""
    conn = _connect(url, autocommit=True)
    fd = conn.fileno()
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
            if on_wait is not None:
                on_wait()
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        conn.close()  # ends the session: the lock goes with it


def cycle_running(url: str) -> bool | None:
    """Whether a cycle holds the database's lock now; None when the database cannot be asked."""
    try:
        conn = _connect(url, autocommit=True, connect_timeout=5)
    except StoreError:
        return None
    try:
        # Taken at once when no cycle holds it (and let go at once): a shared try would not do,
        # advisory locks of one session are re-entrant but another session's block.
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]
        if got:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        return not got
    except Exception:  # noqa: BLE001  (a status line, not a failure)
        return None
    finally:
        conn.close()


class _RawDialect:
    """How store.snapshot's plain SQL writes on a psycopg connection."""

    begin_write = "BEGIN"
    mark = "%s"

    @staticmethod
    def time_param(moment: datetime) -> Any:
        from datetime import UTC

        return moment.astimezone(UTC).replace(tzinfo=None)  # as the store's UTCDateTime keeps it


RAW_DIALECT = _RawDialect()


def open_raw(url: str, busy_timeout_s: float) -> Any:
    """A plain psycopg connection (autocommit: transactions are explicit) for the snapshot a
    cycle plans from; None when the database cannot be reached (the cycle then says why)."""
    try:
        return _connect(url, autocommit=True, connect_timeout=max(1, int(busy_timeout_s)))
    except StoreError:
        return None


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
