"""The names of the store's key-value facts (the `meta` table), in one place, importable without SQLAlchemy."""

from __future__ import annotations

__all__ = [
    "ALL_FEED_DIRTY",
    "FEED_SETTINGS",
    "FEED_WINDOW",
    "PAGES_NEXT_DUE",
    "PAGE_QUEUE_STALE",
    "RELATED_PROPAGATED",
    "RELATED_VIEW_CHANGED",
    "SCHEMA_VERSION",
    "SOURCE_DEVICE",
]

SCHEMA_VERSION = "schema_version"
# "1": the all-articles feed must be rendered again.
ALL_FEED_DIRTY = "all_feeds_dirty"
# The fingerprint of the settings the feeds on disk were rendered with (publish.settings).
FEED_SETTINGS = "feeds_settings"
# Prefix: each feed's window fingerprint (its entries' ids and update times) when last written,
# and when that window last changed: "<fingerprint>|<ISO time>".
FEED_WINDOW = "feed_window:"
# Up to here (inclusive) every article change has been spread to its neighbours (store.related).
RELATED_PROPAGATED = "related_propagated_at"
# Prefix: the articles whose link view changed since changes were last spread (JSON lists of ids).
RELATED_VIEW_CHANGED = "related_view_changed:"
# "1": articles changed while fetching was off, so the page queue lacks their pages.
PAGE_QUEUE_STALE = "page_queue_stale"
# When the next related page falls due, for the ttl it was computed with: "<ttl_s>|<ISO time>"
# ("<ttl_s>|" when none is waiting). Written by each cycle that fetches.
PAGES_NEXT_DUE = "pages_next_due"
# Prefix: the device (st_dev) each source folder was on when it last held files.
SOURCE_DEVICE = "source_device:"
