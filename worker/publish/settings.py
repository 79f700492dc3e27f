"""What the feeds are rendered with, and its fingerprint: light, so a no-change check can compare it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RENDER_VERSION", "SETTINGS_KEY", "FeedSettings", "fingerprint"]

# Bump when the rendered bytes change for the same entries: every feed is rendered again.
RENDER_VERSION = 3
# The meta key holding the fingerprint of the settings the feeds on disk were rendered with.
SETTINGS_KEY = "feeds_settings"


@dataclass(frozen=True, slots=True)
class FeedSettings:
    dir: Path
    base_url: str
    title: str
    max_entries: int


def fingerprint(settings: FeedSettings) -> str:
    return f"{RENDER_VERSION}|{settings.base_url}|{settings.title}|{settings.max_entries}"
