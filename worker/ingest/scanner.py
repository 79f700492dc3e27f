"""Walk the watched folders: which article files exist, with size and mtime (reads directories only)."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wcmatch import glob

from worker.model import FoundFile, Scan, Source, SourceState

__all__ = ["folder_state", "is_ignored_name", "scan", "scan_paths"]

_GLOB_FLAGS = glob.GLOBSTAR | glob.BRACE | glob.NEGATE
_IGNORED_SUFFIXES = ("~", ".tmp", ".swp", ".swo", ".swx", ".part", ".crdownload", ".partial")


def folder_state(root: str, *, open_it: bool = False) -> tuple[str, str | None, str | None]:
    """`(state, reason, real path)` of a source folder: "ok", "missing" (it, or a folder on the
    way to it, does not exist) or "unreadable" (not a folder, no permission). `open_it` also
    opens the folder, as listing it would."""
    try:
        real_root = os.path.realpath(root, strict=True)
    except FileNotFoundError as exc:
        return "missing", exc.strerror or "No such file or directory", None
    except OSError as exc:
        return "unreadable", exc.strerror or type(exc).__name__, None
    if not os.path.isdir(real_root):
        return "unreadable", os.strerror(errno.ENOTDIR), None
    if open_it:
        try:
            with os.scandir(real_root):
                pass
        except OSError as exc:
            return "unreadable", exc.strerror or type(exc).__name__, None
    return "ok", None, real_root


def is_ignored_name(name: str) -> bool:
    """Hidden files and editors' temporary files are never articles."""
    return name.startswith((".", "#")) or name.endswith(_IGNORED_SUFFIXES)


def scan(sources: Sequence[Source], now_ns: int) -> Scan:
    """Every matching regular file under each root; symlinks only when they stay inside it."""
    result = Scan()
    for source in sources:
        root = str(source.root)
        real_root = _open_source(root, result)
        if real_root is None:
            continue
        matcher = _matcher(source.include)
        settle_ns = int(source.settle_s * 1e9)
        count = 0
        walked = len(result.problems)
        for path, rel, st in _walk(root, real_root, result):
            if _add_found(result, source, matcher, settle_ns, now_ns, real_root, path, rel, st):
                count += 1
        root_failed = next((why for where, why in result.problems[walked:] if where == root), None)
        if root_failed is None:
            try:
                device: int | None = os.stat(real_root).st_dev
            except OSError:
                device = None
            result.sources.append(SourceState(root, "ok", count, device=device))
        else:  # it could not be listed after all
            result.sources.append(SourceState(root, "unreadable", 0, root_failed.partition(": ")[2] or root_failed))
    return result


def scan_paths(sources: Sequence[Source], paths: Iterable[str], now_ns: int) -> Scan:
    """What a full scan would find at `paths` alone (files, or folders with everything under
    them), under the same rules; the result's `scope` names what was looked at, so that a
    stored file outside it is never taken as deleted. A source folder's own path stands for
    everything in it. Paths outside every source folder, or of ignored names, are left out."""
    result = Scan(scope=())
    scope: list[str] = []
    by_source: dict[int, list[str]] = {}
    # The first source folder (in config order) a path is under owns it, as in a full scan.
    roots = [(index, str(source.root).rstrip(os.sep)) for index, source in enumerate(sources)]
    for path in sorted(set(paths)):
        owner = next((index for index, root in roots if path == root or path.startswith(root + os.sep)), None)
        if owner is not None:
            by_source.setdefault(owner, []).append(path)
    for index, source in enumerate(sources):
        named = str(source.root)
        root = named.rstrip(os.sep)
        real_root = _open_source(named, result)
        if real_root is None:
            continue
        try:
            device: int | None = os.stat(real_root).st_dev
        except OSError:
            device = None
        result.sources.append(SourceState(named, "ok", 0, device=device))
        matcher = _matcher(source.include)
        settle_ns = int(source.settle_s * 1e9)
        for path in by_source.get(index, ()):
            rel = path[len(root) + 1 :]
            if any(is_ignored_name(part) for part in rel.split(os.sep)):
                continue
            st = _stat_inside(path, real_root)
            if st is not None and stat.S_ISDIR(st.st_mode):
                scope.append(path + os.sep)
                for found_path, found_rel, found_st in _walk(path, real_root, result, rel + "/" if rel else ""):
                    _add_found(result, source, matcher, settle_ns, now_ns, real_root, found_path, found_rel, found_st)
                continue
            scope.append(path)
            if st is not None and stat.S_ISREG(st.st_mode):
                _add_found(result, source, matcher, settle_ns, now_ns, real_root, path, rel, st)
            elif st is None and not matcher.match(rel):
                scope.append(path + os.sep)  # gone, and no article file by its name: maybe a folder moved away
    result.scope = tuple(scope)
    return result


def _open_source(root: str, result: Scan) -> str | None:
    """The real path of a source folder; None, recorded in `result` with why, when it cannot be read."""
    state, reason, real_root = folder_state(root)
    if real_root is None:
        result.unreadable_roots.append(root)
        result.problems.append((root, f"source folder cannot be read: {reason}"))
        result.sources.append(SourceState(root, state, 0, reason))
    return real_root


def _stat_inside(path: str, real_root: str) -> os.stat_result | None:
    """The stat of `path`, following links that stay inside the source folder; None when it is
    gone, or reached through a link that leaves the folder (a full scan would not see it)."""
    inside = real_root.rstrip(os.sep) + os.sep
    try:
        if not (os.path.realpath(path) + os.sep).startswith(inside):
            return None
        return os.stat(path)
    except OSError:
        return None


def _add_found(
    result: Scan,
    source: Source,
    matcher: Any,
    settle_ns: int,
    now_ns: int,
    real_root: str,
    path: str,
    rel: str,
    st: os.stat_result,
) -> bool:
    """Record one regular file a scan came upon; False when the patterns leave it out."""
    if not matcher.match(rel):
        return False
    problem = None
    if not _is_utf8(path):
        # The store, the logs and the feeds hold text: the name is kept escaped, the
        # file quarantined unread, and the other files go on.
        path = os.fsencode(path).decode("utf-8", "backslashreplace")
        problem = f"the file name is not UTF-8 text ({path}); rename the file to have it read"
    if settle_ns and now_ns - st.st_mtime_ns < settle_ns:
        result.unsettled.add(path)
        return False
    result.files.setdefault(path, FoundFile(path, st.st_size, st.st_mtime_ns, source.max_bytes, real_root, problem))
    return True


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the name, kept as lone surrogates
        return False
    return True


def _matcher(patterns: tuple[str, ...], *, fast: bool = True) -> Any:
    """wcmatch for the patterns (`fast=False`: always); a suffix test when every pattern is
    `**/*.<ext>` (the default), which answers as wcmatch does for any path at a tenth of
    the cost (docs/benchmarks.md, "Fast paths on record"; tests/test_fast_paths.py)."""
    suffixes = [_SUFFIX_ONLY.fullmatch(pattern) for pattern in patterns]
    if fast and all(suffixes):
        endings = tuple("." + match.group(1) for match in suffixes if match)
        return _SuffixMatcher(endings)
    return glob.compile(list(patterns), flags=_GLOB_FLAGS)


_SUFFIX_ONLY = re.compile(r"\*\*/\*\.([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class _SuffixMatcher:
    endings: tuple[str, ...]

    def match(self, relative: str) -> bool:
        # As wcmatch: a trailing `/` is ignored, and no segment may be hidden (start with `.`).
        relative = relative.rstrip("/")
        return relative.endswith(self.endings) and not relative.startswith(".") and "/." not in relative


def _walk(root: str, real_root: str, result: Scan, rel_root: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    inside = real_root.rstrip(os.sep) + os.sep
    visited: set[tuple[int, int]] = set()
    stack = [(root, rel_root)]
    while stack:
        directory, rel_dir = stack.pop()
        try:
            dir_stat = os.stat(directory)
            if (dir_stat.st_dev, dir_stat.st_ino) in visited:
                continue  # a symlink loop
            visited.add((dir_stat.st_dev, dir_stat.st_ino))
            with os.scandir(directory) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            kind = "source folder" if directory == root and not rel_root else "folder"
            result.problems.append((directory, f"{kind} cannot be read: {exc.strerror or type(exc).__name__}"))
            if directory == root:
                result.unreadable_roots.append(root)
            else:
                result.unreadable_roots.append(directory)
            continue
        for entry in children:
            if is_ignored_name(entry.name):
                continue
            rel = f"{rel_dir}{entry.name}"
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not (target + os.sep).startswith(inside):
                        continue  # never leave the source folder through a link
                st = entry.stat()  # follows a link that stays inside
            except OSError:
                continue  # vanished, or a dangling link
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                yield entry.path, rel, st
