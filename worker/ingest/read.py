"""Open an article file safely (side effect: reads disk): a regular file inside its folder, never more than max_bytes."""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["NotReadable", "read_regular_file"]

# O_NONBLOCK: opening a FIFO swapped in since the scan returns at once instead of waiting for
# a writer; the descriptor's own stat then refuses it, as it refuses a device or a folder.
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class NotReadable(Exception):
    """The path is not a regular file we may read: the message says why, for the quarantine."""


def read_regular_file(path: str, max_bytes: int, root: str | None = None) -> tuple[bytes, os.stat_result]:
    """The first `max_bytes + 1` bytes of the regular file at `path`, and its stat.

    What is checked is the opened descriptor, not the name, so a file swapped between the
    scan and the read cannot slip through: a FIFO or device is refused, and with `root` (a
    real path) so is a file outside it, reached through a link or a renamed folder. A
    symbolic link is followed only when it stays inside `root`, as the scanner does.
    Raises FileNotFoundError when the file is gone, NotReadable or OSError otherwise.
    """
    fd = _open(path, root)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable(f"not a regular file ({_kind(st.st_mode)})")
        if root is not None:
            where = _location(fd)
            if where is not None and not _inside(where, root):
                raise NotReadable("the file lies outside the source folder (a link or a moved folder)")
        os.set_blocking(fd, True)
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _open(path: str, root: str | None) -> int:
    try:
        return os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
    # A symbolic link: followed once, only to a target inside the source folder (`check` names
    # its files itself, and has no folder to stay in).
    target = os.path.realpath(path)
    if root is not None and not _inside(target, root):
        raise NotReadable("a symbolic link to a file outside the source folder")
    return os.open(target, _FLAGS)


def _location(fd: int) -> str | None:
    """Where the open file really is (Linux: /proc), or None where that cannot be told."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _inside(path: str, root: str) -> bool:
    return (path + os.sep).startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
