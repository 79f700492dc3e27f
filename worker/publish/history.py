"""Pure: RFC 5005 feed history: which of a topic's entries go into which archive document.

A topic feed shows its newest `max_entries` entries. When the topic holds no more than that,
the feed is complete (`fh:complete`). Otherwise its older entries are kept in archive
documents numbered from 1 (the oldest) upward, cut `max_entries` entries at a time (with the
entries of the same publication time as the last, so that a page ends between two times).
There are just enough pages that every entry the current feed no longer shows is in one, so
the newest page may also hold some of the current feed's oldest entries; RFC 5005 section
4.2 says a client keeps the copy of the newest document.

A page, once cut, keeps its end (keys.ARCHIVE_BOUNDS): an article published inside it later
(a backdated file) or removed from it changes that page alone, never the pages after it. A
page links to the page after it whether that exists yet or not, so a new article changes the
current feed alone until one more page fills, and then exactly one archive document appears.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime

__all__ = ["NO_HISTORY", "FeedHistory", "archive_path", "paginate"]


@dataclass(frozen=True, slots=True)
class FeedHistory:
    """What a feed document says of its place in the topic's history (RFC 5005)."""

    complete: bool = False  # fh:complete: this document holds every entry of its feed
    archive: bool = False  # fh:archive: this document is an archive page
    current_url: str | None = None  # an archive page's link to the current feed (rel="current")
    prev_archive_url: str | None = None  # the page before (rel="prev-archive")
    next_archive_url: str | None = None  # the page after (rel="next-archive")


NO_HISTORY = FeedHistory()  # a feed that says nothing of its history


def archive_path(slug: str, number: int) -> str:
    """The archive document's path below the feeds folder."""
    return f"archive/{slug}/{number}.atom"


def paginate(
    published: list[datetime], current: int, size: int, bounds: list[datetime]
) -> tuple[list[datetime], list[tuple[int, int]]]:
    """A topic's archive pages over its entries' publication times (oldest first; the current
    feed shows the newest `current` of them): the pages' ends, and each page's [start, stop).

    Pages that were cut keep their ends (`bounds`), so an entry published inside an old page
    (a backdated article) or gone from it changes that page alone. New pages are cut, `size`
    entries each (and the entries of the same time as the last), from the entries after the
    last page, while any of them is older than the current feed. Trailing pages whose entries
    the current feed shows (or that lost them all) go: the walk needs them no longer.
    """
    limit = len(published) - current  # entries before this index are not in the current feed
    ends = list(bounds)
    spans: list[tuple[int, int]] = []
    start = 0
    for end in ends:
        stop = bisect.bisect_right(published, end, lo=start)
        spans.append((start, stop))
        start = stop
    while start < limit and len(published) - start >= size:
        stop = bisect.bisect_right(published, published[start + size - 1], lo=start)
        ends.append(published[stop - 1])
        spans.append((start, stop))
        start = stop
    while spans and spans[-1][0] >= limit:
        ends.pop()
        spans.pop()
    return ends, spans
