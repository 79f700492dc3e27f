"""Pure: RFC 5005 feed history: which of a topic's entries go into which archive document.

A topic feed shows its newest `max_entries` entries. When the topic holds no more than that,
the feed is complete (`fh:complete`). Otherwise its older entries are kept in archive
documents of `max_entries` entries each, numbered from 1 (the oldest) upward, every one
full: page k holds the topic's entries k*size-size+1 .. k*size, counted oldest first. There
are just enough pages that every entry the current feed no longer shows is in one, so the
newest page may also hold some of the current feed's oldest entries; RFC 5005 section 4.2
says a client keeps the copy of the newest document.

A page's entries never change while no entry older than its newest one is added, changed or
removed, and it links to the page after it whether that exists yet or not: a new article
changes the current feed alone until one more page fills, and then exactly one archive
document appears.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_HISTORY", "FeedHistory", "archive_page_count", "archive_path", "page_bounds"]


@dataclass(frozen=True, slots=True)
class FeedHistory:
    """What a feed document says of its place in the topic's history (RFC 5005)."""

    complete: bool = False  # fh:complete: this document holds every entry of its feed
    archive: bool = False  # fh:archive: this document is an archive page
    current_url: str | None = None  # an archive page's link to the current feed (rel="current")
    prev_archive_url: str | None = None  # the page before (rel="prev-archive")
    next_archive_url: str | None = None  # the page after (rel="next-archive")


NO_HISTORY = FeedHistory()  # a feed that says nothing of its history


def archive_page_count(total: int, page_size: int) -> int:
    """How many full archive pages a topic of `total` entries has, its current feed showing
    the newest `page_size`: as few as hold every entry the current feed does not."""
    if page_size < 1 or total <= page_size:
        return 0
    return -(-(total - page_size) // page_size)


def page_bounds(number: int, page_size: int) -> tuple[int, int]:
    """The slice [start, stop) of the topic's entries, oldest first, that page `number` holds."""
    return (number - 1) * page_size, number * page_size


def archive_path(slug: str, number: int) -> str:
    """The archive document's path below the feeds folder."""
    return f"archive/{slug}/{number}.atom"
