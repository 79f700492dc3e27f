"""The store's error type, importable without SQLAlchemy."""

from __future__ import annotations

__all__ = ["StoreError", "describe"]


class StoreError(Exception):
    """The database cannot be used (unreachable, locked for too long, corrupt, too new)."""


def describe(exc: BaseException) -> str:
    """The driver's own message of a database error, on one line and at most 300 characters."""
    original = getattr(exc, "orig", None)
    return " ".join(str(original or exc).split())[:300]
