"""The one-cycle-at-a-time lock of a database, importable without SQLAlchemy."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.store.errors import StoreError

__all__ = ["cycle_lock", "cycle_running", "held_lock_descriptors"]

# Descriptors of the cycle locks this process holds: a forked child must close them, or
# it would keep the lock after this process dies.
_HELD_LOCKS: set[int] = set()


def held_lock_descriptors() -> frozenset[int]:
    return frozenset(_HELD_LOCKS)


@contextmanager
def cycle_lock(url: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the one-cycle-at-a-time lock of this database, waiting for it if another process has it.

    For SQLite an advisory `flock` on `<database>.lock`: the kernel releases it when its
    holder dies, even by SIGKILL, so a stale lock never needs clearing by hand.
    """
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        raise StoreError(f"no cycle lock for {url.split(':', 1)[0]} databases yet")
    path = url[len("sqlite:///"):] + ".lock"
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
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    try:
        fd = os.open(url[len("sqlite:///"):] + ".lock", os.O_RDONLY | os.O_CLOEXEC)
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
