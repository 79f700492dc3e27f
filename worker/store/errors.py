"""The store's error type, importable without SQLAlchemy."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """The database cannot be used (unreachable, locked for too long, corrupt, too new)."""
