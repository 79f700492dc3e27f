"""What the feeds are rendered with, and its fingerprint: light, so a no-change check can compare it."""

from __future__ import annotations

from worker.model import FeedSettings

__all__ = ["RENDER_VERSION", "feeds_fingerprint", "fingerprint"]

# Bump when the rendered bytes change for the same entries (feeds, archive pages, the feeds page
# template): every feed and the page are rendered again.
RENDER_VERSION = 8  # 5: articles of one time by URL; 6: a feed's time is its last change; 7: enclosures; 8: JSON Feed


def feeds_fingerprint(settings: FeedSettings) -> str:
    """What every feed's bytes depend on besides its entries."""
    hubs = " ".join(settings.hubs)
    return f"{RENDER_VERSION}|{settings.base_url}|{settings.title}|{settings.max_entries}|{settings.content}|{hubs}"


def fingerprint(settings: FeedSettings) -> str:
    """Everything rendered depends on: the feeds' fingerprint, then what only the index depends on."""
    return f"{feeds_fingerprint(settings)}|{settings.opml_format}"
