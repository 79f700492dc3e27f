"""What the feeds are rendered with, and its fingerprint: light, so a no-change check can compare it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["RENDER_VERSION", "SETTINGS_KEY", "FeedSettings", "feeds_fingerprint", "fingerprint"]

# Bump when the rendered bytes change for the same entries: every feed is rendered again.
RENDER_VERSION = 4
# The meta key holding the fingerprint of the settings the feeds on disk were rendered with.
SETTINGS_KEY = "feeds_settings"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    dir: Path
    base_url: str
    title: str
    max_entries: int
    opml_format: Literal["atom", "rss"] = "atom"  # the format of the feeds index.opml lists


def feeds_fingerprint(settings: FeedSettings) -> str:
    """What every feed's bytes depend on besides its entries."""
    return f"{RENDER_VERSION}|{settings.base_url}|{settings.title}|{settings.max_entries}"


def fingerprint(settings: FeedSettings) -> str:
    """Everything rendered depends on: the feeds' fingerprint, then what only the index depends on."""
    return f"{feeds_fingerprint(settings)}|{settings.opml_format}"
