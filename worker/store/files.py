"""Which files a cycle reads, quarantines or forgets: the stored stat against the scan (pure, no SQLAlchemy)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from worker.ingest.scanner import Scan

__all__ = ["Plan", "guard_emptied_sources", "plan_reads"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What the stat alone says about every file: the full cycle acts on it, the quick check
    only asks whether it is empty."""

    counts: dict[str, int]  # seen, new, changed, unchanged, deleted, as far as the stat tells
    read: list[str]  # new, or stat changed, within max_bytes: in scan order
    too_large: list[str]  # new, or stat changed, over max_bytes or badly named: quarantined unread
    deleted: list[str]  # stored, gone from disk (not merely unsettled or under an unreadable folder)

    @property
    def idle(self) -> bool:
        """Nothing to read, quarantine or forget."""
        return not (self.read or self.too_large or self.deleted)


def plan_reads(found: Scan, known: Mapping[str, tuple[int, int]]) -> Plan:
    """Classify the scanned files against the stored `(size, mtime_ns)` of each known path.

    A file whose stat is unchanged is not read; one still being written (unsettled) counts
    as unchanged if known and is neither read nor deleted; a file under a folder that could
    not be walked is not taken as deleted.
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
    deleted = [
        path for path in known
        if path not in found.files and path not in found.unsettled and not path.startswith(skipped_roots)
    ]
    counts = {
        "seen": len(found.files) + len(found.unsettled),
        "new": new,
        "changed": changed,
        "unchanged": unchanged,
        "deleted": len(deleted),
    }
    return Plan(counts, read, too_large, deleted)


def guard_emptied_sources(
    found: Scan, known: Mapping[str, tuple[int, int]], devices: Mapping[str, int]
) -> list[tuple[str, str]]:
    """Source folders that list no file although files were stored from them, and that are no
    longer on the device they were on (`devices`: st_dev of each folder when it last had
    files): a volume not mounted on its mount point. Marked `empty` in `found`, their stored
    files are not taken as deleted; returns (path, problem) for each. A folder emptied on
    purpose stays on its device: its files go, as they should.
    """
    problems = []
    for index, source in enumerate(found.sources):
        if source.state != "ok" or source.files or source.path not in devices:
            continue
        if source.device is None or source.device == devices[source.path]:
            continue
        inside = source.path.rstrip(os.sep) + os.sep
        if any(path.startswith(inside) for path in found.unsettled):
            continue
        stored = sum(1 for path in known if path.startswith(inside))
        if not stored:
            continue
        reason = (
            f"empty and on another device than when {stored} stored files came from it"
            " (a volume not mounted?): none taken as deleted"
        )
        found.sources[index] = replace(source, state="empty", reason=reason)
        found.unreadable_roots.append(source.path)
        problems.append((source.path, f"source folder is {reason}"))
    return problems
