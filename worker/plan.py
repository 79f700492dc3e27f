"""Pure: the store's snapshot + the scan + the feed files on disk + the settings -> what a cycle does.

"Nothing to do" is an empty plan: then the cycle records its run and ends without importing
SQLAlchemy, the parser or the renderer. Every cycle makes its plan here, so the cycle that
finds nothing and the one that works answer from the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from worker.model import FEED_FORMATS, INDEX_FILES, FeedFiles, FeedSettings, FileCounts, Scan, StoreSnapshot
from worker.publish.settings import fingerprint
from worker.store import keys

__all__ = ["CyclePlan", "FetchSettings", "FilePlan", "guard_emptied_sources", "plan_cycle", "plan_reads"]


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What the stat alone says about every file."""

    counts: FileCounts  # seen, new, changed, unchanged, deleted, as far as the stat tells
    read: list[str]  # new, or stat changed, within max_bytes: in scan order
    too_large: list[str]  # new, or stat changed, over max_bytes or badly named: quarantined unread
    deleted: list[str]  # stored, gone from disk (not merely unsettled or under an unreadable folder)

    @property
    def idle(self) -> bool:
        """Nothing to read, quarantine or forget."""
        return not (self.read or self.too_large or self.deleted)


def plan_reads(found: Scan, known: Mapping[str, tuple[int, int]]) -> FilePlan:
    """Classify the scanned files against the stored `(size, mtime_ns)` of each known path.

    A file whose stat is unchanged is not read; one still being written (unsettled) counts
    as unchanged if known and is neither read nor deleted; a file under a folder that could
    not be walked is not taken as deleted, nor one a partial scan (`found.scope`) did not
    look at.
    """
    new = changed = unchanged = 0
    read: list[str] = []
    too_large: list[str] = []
    for path, file in found.files.items():
        previous = known.get(path)
        if previous is None:
            new += 1
        elif previous[0] == file.size and previous[1] == file.mtime_ns:
            unchanged += 1
            continue
        if file.problem is not None or file.size > file.max_bytes:
            if previous is not None:
                changed += 1
            too_large.append(path)
            continue
        read.append(path)  # counted as changed only once read: the bytes may be the same
    unchanged += sum(1 for path in found.unsettled if path in known)
    skipped_roots = tuple(root.rstrip(os.sep) + os.sep for root in found.unreadable_roots)
    looked_at = _looked_at(found.scope)
    deleted = [
        path
        for path in known
        if path not in found.files
        and path not in found.unsettled
        and not path.startswith(skipped_roots)
        and looked_at(path)
    ]
    counts = FileCounts(
        seen=len(found.files) + len(found.unsettled),
        new=new,
        changed=changed,
        unchanged=unchanged,
        deleted=len(deleted),
    )
    return FilePlan(counts, read, too_large, deleted)


def _looked_at(scope: tuple[str, ...] | None) -> Callable[[str], bool]:
    """Whether a scan of `scope` (None: everything) looked at a path: the path itself, or a
    folder it is under."""
    if scope is None:
        return lambda path: True
    exact = frozenset(path for path in scope if not path.endswith(os.sep))
    folders = tuple(path for path in scope if path.endswith(os.sep))
    return lambda path: path in exact or path.startswith(folders)


def guard_emptied_sources(
    found: Scan,
    known: Mapping[str, tuple[int, int]],
    devices: Mapping[str, int],
    stored_under: Mapping[str, int] | None = None,
) -> list[tuple[str, str]]:
    """Source folders that list no file although files were stored from them, and that are no
    longer on the device they were on (`devices`: st_dev of each folder when it last had
    files): a volume not mounted on its mount point. Marked `empty` in `found`, their stored
    files are not taken as deleted; returns (path, problem) for each. A folder emptied on
    purpose stays on its device: its files go, as they should.
    """
    problems = []
    partial = found.scope is not None  # it did not list the folders: only their device tells
    for index, source in enumerate(found.sources):
        if source.state != "ok" or (source.files and not partial) or source.path not in devices:
            continue
        if source.device is None or source.device == devices[source.path]:
            continue
        inside = source.path.rstrip(os.sep) + os.sep
        if any(path.startswith(inside) for path in found.unsettled):
            continue
        stored = (
            (stored_under or {}).get(source.path, 0) if partial else sum(1 for path in known if path.startswith(inside))
        )
        if not stored:
            continue
        reason = (
            f"{'' if partial else 'empty and '}on another device than when {stored} stored files came from it"
            " (a volume not mounted?): none taken as deleted"
        )
        found.sources[index] = replace(source, state="empty", reason=reason)
        found.unreadable_roots.append(source.path)
        problems.append((source.path, f"source folder is {reason}"))
    return problems


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """Whether the enrich step fetches related pages, and how long a fetched page stays fresh."""

    on: bool
    ttl_s: float


@dataclass(frozen=True, slots=True)
class CyclePlan:
    """What this cycle must do: the files to act on, and why else it cannot end at once."""

    files: FilePlan
    pending: tuple[str, ...]  # work left by earlier cycles or asked for by the settings, in words
    emptied: list[tuple[str, str]]  # (source folder, problem) of folders guarded as not mounted
    feeds: FeedFiles  # the feed files on disk it was made with: publish works from the same

    @property
    def empty(self) -> bool:
        """Nothing to read, forget, render, spread or fetch: the run only records itself."""
        return self.files.idle and not self.pending


def plan_cycle(
    snapshot: StoreSnapshot | None,
    found: Scan,
    feeds: FeedFiles,
    settings: FeedSettings,
    fetch: FetchSettings,
    now: datetime,
) -> CyclePlan:
    """The plan of one cycle. `snapshot` None: a store with no schema yet. Marks the source
    folders of `found` that look unmounted (see guard_emptied_sources)."""
    if snapshot is None:
        return CyclePlan(plan_reads(found, {}), ("the store is new",), [], feeds)
    stats = snapshot.files
    devices = {
        key[len(keys.SOURCE_DEVICE) :]: int(value)
        for key, value in snapshot.meta.items()
        if key.startswith(keys.SOURCE_DEVICE)
    }
    emptied = guard_emptied_sources(found, stats, devices, snapshot.files_under)
    pending = tuple(_pending(snapshot, feeds, settings, fetch, now))
    return CyclePlan(plan_reads(found, stats), pending, emptied, feeds)


def _pending(
    snapshot: StoreSnapshot, feeds: FeedFiles, settings: FeedSettings, fetch: FetchSettings, now: datetime
) -> list[str]:
    if not snapshot.current_schema:
        return ["the store's schema is to be migrated"]
    meta = snapshot.meta
    pending = []
    if snapshot.last_run_status != "ok":
        # A failed run, or one killed while running, may have left work half done.
        pending.append(f"the last run is {snapshot.last_run_status or 'missing'}")
    if meta.get(keys.ALL_FEED_DIRTY) == "1" or snapshot.dirty_topics:
        pending.append("feeds are marked for rendering")
    if meta.get(keys.FEED_SETTINGS) != fingerprint(settings):
        pending.append("the feed settings changed")
    # Every article change up to the watermark has been spread to its neighbours, and each
    # run stamps its changes with its own start: a start after the watermark finds nothing to
    # spread. A clock that did not move (pinned, or set back) spreads again.
    watermark = meta.get(keys.RELATED_PROPAGATED)
    if watermark is None or not datetime.fromisoformat(watermark) < now:
        pending.append("related changes are to be spread")
    if snapshot.orphan_candidates:
        pending.append("an article may have lost its last file")
    if not _feeds_in_place(feeds, snapshot.visible_slugs, snapshot.known_slugs, _archive_pages(meta)):
        pending.append("feed files are missing or left over")
    if fetch.on and _pages_due(meta, fetch.ttl_s, now):
        pending.append("related pages are due for fetching")
    return pending


def _archive_pages(meta: Mapping[str, str]) -> frozenset[str]:
    """The archive pages (RFC 5005) the last cycles wrote: each has its window in the meta."""
    prefix = keys.FEED_WINDOW + "archive/"
    return frozenset(key.removeprefix(keys.FEED_WINDOW) + ".atom" for key in meta if key.startswith(prefix))


def _feeds_in_place(
    feeds: FeedFiles, visible: frozenset[str], known: frozenset[str], archives: frozenset[str] = frozenset()
) -> bool:
    """Every feed file a cycle would write is there, and nothing it would remove (a feed of a
    known topic not shown; files of other names are not feedworker's)."""
    if feeds.temp_left or not all(name in feeds.index for name in INDEX_FILES):
        return False
    if any(f"{slug}.{suffix}" not in feeds.topics for slug in visible for suffix in FEED_FORMATS):
        return False
    for name in feeds.topics:
        slug, _, suffix = name.rpartition(".")
        if suffix in FEED_FORMATS and slug in known and slug not in visible:
            return False
    # Every archive page written is there, and none of a known topic that no cycle wrote (left
    # over from a page count or a topic that is gone).
    if not archives <= feeds.archives:
        return False
    return all(path in archives or not _ours(path, known) for path in feeds.archives)


def _ours(path: str, known: frozenset[str]) -> bool:
    """An archive page path (archive/<slug>/<n>.atom) of a topic feedworker knows."""
    _, slug, name = path.split("/")
    number = name.removesuffix(".atom")
    return slug in known and name.endswith(".atom") and number.isascii() and number.isdigit() and number[0] != "0"


def _pages_due(meta: Mapping[str, str], ttl_s: float, now: datetime) -> bool:
    if meta.get(keys.PAGE_QUEUE_STALE) == "1":
        return True  # articles changed while fetching was off: their pages are not queued yet
    noted = meta.get(keys.PAGES_NEXT_DUE)
    if noted is None:
        return True
    ttl, _, moment = noted.partition("|")
    if ttl != repr(float(ttl_s)):
        return True  # computed for another ttl
    return bool(moment) and datetime.fromisoformat(moment) <= now
