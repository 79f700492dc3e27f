"""The store's key-value facts (the `meta` table; key names in store.keys)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import Meta

__all__ = ["meta_value", "meta_values", "set_meta_value"]

M = Meta.__table__


def meta_value(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(M.c.value).where(M.c.key == key)).scalar()


def set_meta_value(conn: Connection, key: str, value: str) -> None:
    if conn.execute(sa.update(M).where(M.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(sa.insert(M).values(key=key, value=value))


def meta_values(conn: Connection, prefix: str) -> dict[str, str]:
    """Meta values whose keys start with `prefix`, by key."""
    return {row.key: row.value for row in conn.execute(sa.select(M.c.key, M.c.value).where(M.c.key.startswith(prefix, autoescape=True)))}
