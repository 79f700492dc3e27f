"""Pure: topic names -> grouping key, display name and a safe, stable slug."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable

from slugify import slugify

__all__ = ["MAX_SLUG_LENGTH", "base_slug", "display_name", "topic_key", "unique_slug"]

MAX_SLUG_LENGTH = 60
# Symbols that carry the meaning of a programming-language name: `C`, `C++` and `C#` must
# not collapse into one slug.
_REPLACEMENTS = [["++", "-plus-plus"], ["+", "-plus"], ["#", "-sharp"], ["&", "-and-"], ["@", "-at-"]]


def display_name(name: str) -> str:
    """The name as shown to readers: NFC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def topic_key(name: str) -> str:
    """Grouping key: `AI`, ` ai ` and `Ai` share one key (NFC, trimmed, case-folded)."""
    return unicodedata.normalize("NFC", display_name(name).casefold())


def base_slug(key: str) -> str:
    """An ASCII slug for a key; never empty, `.` or `..` and never a path."""
    slug = slugify(key, replacements=_REPLACEMENTS, max_length=MAX_SLUG_LENGTH, word_boundary=True)
    if not slug.strip(".-"):
        slug = "topic-" + _digest(key)
    return slug


def unique_slug(key: str, taken: Callable[[str], bool]) -> str:
    """The base slug, or that slug plus a digest of the key when another topic holds it."""
    slug = base_slug(key)
    if not taken(slug):
        return slug
    slug = f"{slug[: MAX_SLUG_LENGTH - 9]}-{_digest(key)}"
    counter = 2
    candidate = slug
    while taken(candidate):
        candidate = f"{slug}-{counter}"
        counter += 1
    return candidate


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8"), digest_size=4).hexdigest()
