"""The one-cycle-at-a-time lock of a database, chosen by dialect; importable without SQLAlchemy.

SQLite's is a `flock` beside the database file (worker.store.sqlite); PostgreSQL's an
advisory lock held by a session of its own (worker.store.postgres).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worker.store import postgres, sqlite
from worker.store.errors import StoreError

__all__ = ["cycle_lock", "cycle_running", "held_lock_descriptors"]


def held_lock_descriptors() -> frozenset[int]:
    """The descriptors of the cycle locks this process holds: a forked child must close them."""
    return sqlite.held_lock_descriptors() | postgres.held_lock_descriptors()


@contextmanager
def cycle_lock(url: str, on_wait: Callable[[], None] | None = None, holder: str = "") -> Iterator[int | None]:
    """Hold the one-cycle-at-a-time lock of this database, waiting for it if another process
    has it (then `on_wait` is called first). The holder's death releases it, even by SIGKILL.
    Yields the fencing token of a PostgreSQL lock (see store.postgres), None for SQLite's."""
    if postgres.is_postgres(url):
        with postgres.cycle_lock(url, on_wait, holder) as token:
            yield token
        return
    if sqlite.file_path(url) is None:
        raise StoreError(f"no cycle lock for {url.split(':', 1)[0]} databases yet")
    with sqlite.cycle_lock(url, on_wait):
        yield None


def cycle_running(url: str) -> bool | None:
    """Whether some process holds the cycle lock of this database now; None when it cannot tell."""
    if postgres.is_postgres(url):
        return postgres.cycle_running(url)
    if sqlite.file_path(url) is None:
        return None
    return sqlite.cycle_running(url)
