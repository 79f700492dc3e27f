"""Pure: RFC 5005 feed history: which of a topic's entries go into which archive document.

A topic feed shows its newest `max_entries` entries. When the topic holds no more than that,
the feed is complete (`fh:complete`). Otherwise every entry it no longer shows is in one of
the topic's archive documents, numbered from 1 (the oldest) upward. Where one page ends is
decided by the entries, not by their positions: a page ends after an entry whose `cut` (a
hash of its URL, urls.page_cut) the page size divides, so pages hold `max_entries` entries
on average, and the newest page holds what is left of the entries the feed no longer shows.

An article published in the past therefore changes the one page it lands on (pages cut by
position would all move after it), and a removed one the page it leaves; only when such an
article itself ends a page (one in `max_entries`) do the pages after it take new numbers. A
new article changes the current feed and, once the topic is longer than the feed, the
newest page, which gains the entry the feed stops showing. Each page links to the page
after it whether that exists yet or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NO_HISTORY", "FeedHistory", "archive_page_count", "archive_pages", "archive_path", "ends_page"]


@dataclass(frozen=True, slots=True)
class FeedHistory:
    """What a feed document says of its place in the topic's history (RFC 5005)."""

    complete: bool = False  # fh:complete: this document holds every entry of its feed
    archive: bool = False  # fh:archive: this document is an archive page
    current_url: str | None = None  # an archive page's link to the current feed (rel="current")
    prev_archive_url: str | None = None  # the page before (rel="prev-archive")
    next_archive_url: str | None = None  # the page after (rel="next-archive")


NO_HISTORY = FeedHistory()  # a feed that says nothing of its history


def ends_page(cut: int, page_size: int) -> bool:
    """Whether an archive page ends after the entry of this `cut` (urls.page_cut)."""
    return cut % page_size == 0


def archive_page_count(total: int, cuts: int, newest: Sequence[int], page_size: int) -> int:
    """How many archive pages a topic of `total` entries has, `cuts` of them ending a page,
    `newest` the cuts of its newest `page_size + 1` entries (newest first): one per page end
    among the entries the current feed no longer shows, and one more unless the newest of
    those ends a page. What archive_pages gives, counted in the feed index alone."""
    if page_size < 1 or total <= page_size:
        return 0
    shown = sum(ends_page(cut, page_size) for cut in newest[:page_size])
    return cuts - shown - ends_page(newest[page_size], page_size) + 1


def archive_pages(cuts: Sequence[int], page_size: int) -> list[tuple[int, int]]:
    """The slices [start, stop) of a topic's entries, oldest first (given by their cuts), that
    pages 1, 2, ... hold: every entry but the newest `page_size`, each page up to an entry
    that ends one, the last up to the newest entry the current feed does not show."""
    archived = len(cuts) - page_size
    if page_size < 1 or archived <= 0:
        return []
    pages, start = [], 0
    for index in range(archived):
        if ends_page(cuts[index], page_size):
            pages.append((start, index + 1))
            start = index + 1
    if start < archived:
        pages.append((start, archived))
    return pages


def archive_path(slug: str, number: int) -> str:
    """The archive document's path below the feeds folder."""
    return f"archive/{slug}/{number}.atom"
