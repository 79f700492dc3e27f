"""Write feed files: compare bytes, check well-formedness, replace atomically (side effect: disk)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from worker.model import INDEX_FILES, FeedFiles

__all__ = [
    "TEMP_PREFIX",
    "FeedWriteError",
    "MalformedDocument",
    "check_document",
    "feed_files",
    "remove_feed",
    "remove_temp_files",
    "write_if_changed",
]

TEMP_PREFIX = ".feedworker-"


def feed_files(directory: Path) -> FeedFiles:
    """What the feeds folder holds of feedworker's files now (reads directories only)."""
    root, temp_in_root = _listing(directory)
    topics, temp_in_topics = _listing(directory / "topics")
    index = frozenset(name for name in INDEX_FILES if name in root)
    archives, temp_in_archives = set(), False
    for folder in _archive_folders(directory):
        names, temp_left = _listing(folder)
        archives |= {f"archive/{folder.name}/{name}" for name in names}
        temp_in_archives = temp_in_archives or temp_left
    temp_left = temp_in_root or temp_in_topics or temp_in_archives
    return FeedFiles(index, frozenset(topics), temp_left, frozenset(archives))


def _archive_folders(directory: Path) -> list[Path]:
    """The folders of archive/ (one per topic with archive pages), symlinks not followed."""
    try:
        with os.scandir(directory / "archive") as entries:
            return [
                Path(entry.path)
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return []


def _listing(folder: Path) -> tuple[set[str], bool]:
    """The names of the regular files in `folder` (hidden ones aside), and whether a temporary
    file a killed write left is among them."""
    names: set[str] = set()
    temp_left = False
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    temp_left = True
                elif not entry.name.startswith(".") and entry.is_file():
                    names.add(entry.name)
    except OSError:
        pass  # no folder (yet), or not one: nothing of ours in it; writing there says why
    return names, temp_left


class FeedWriteError(Exception):
    """The feeds folder cannot be written (read-only, full, missing permissions)."""


class MalformedDocument(ValueError):
    """Bytes that are not a well-formed document of the kind their name says."""


def check_document(name: str, data: bytes) -> None:
    """Raise MalformedDocument unless `data` parses as what `name` is: JSON for `.json`, HTML
    as is for `.html` (it has no well-formedness to check), XML for every other feed."""
    if name.endswith(".html"):
        return
    if name.endswith(".json"):
        import orjson

        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedDocument(f"{name}: {exc}") from None
        return
    from lxml import etree  # only when something is written: a no-change run never loads it

    try:
        etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise MalformedDocument(f"{name}: {exc}") from None


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` unless it already holds exactly those bytes; True if written.

    A reader sees the old file or the new one, never a half-written one: the bytes go to a
    temporary file in the same folder, are flushed to disk, then renamed over the old file.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise FeedWriteError(f"cannot read {path}: {exc.strerror}") from None
    check_document(path.name, data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=".tmp")
    except OSError as exc:
        raise FeedWriteError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        _unlink(temp)
        raise FeedWriteError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        _unlink(temp)
        raise
    _sync_directory(path.parent)
    return True


def remove_feed(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise FeedWriteError(f"cannot remove {path}: {exc.strerror}") from None
    return True


def remove_temp_files(directory: Path) -> int:
    """Temporary files left by a process killed mid-write."""
    removed = 0
    for folder in (directory, directory / "topics", *_archive_folders(directory)):
        try:
            names = [entry for entry in os.scandir(folder) if entry.name.startswith(TEMP_PREFIX)]
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise FeedWriteError(f"cannot read {folder}: {exc.strerror}") from None
        for entry in names:
            _unlink(entry.path)
            removed += 1
    return removed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
