"""The store's key-value facts (the `meta` table; key names in store.keys)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import META

__all__ = ["delete_meta_values", "meta_value", "meta_values", "set_meta_value"]


def meta_value(conn: Connection, key: str) -> str | None:
    return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()


def set_meta_value(conn: Connection, key: str, value: str) -> None:
    if conn.execute(sa.update(META).where(META.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(sa.insert(META).values(key=key, value=value))


def meta_values(conn: Connection, prefix: str) -> dict[str, str]:
    """Meta values whose keys start with `prefix`, by key."""
    return {
        row.key: row.value
        for row in conn.execute(
            sa.select(META.c.key, META.c.value).where(META.c.key.startswith(prefix, autoescape=True))
        )
    }


def delete_meta_values(conn: Connection, keys: list[str]) -> None:
    if keys:
        conn.execute(sa.delete(META).where(META.c.key.in_(keys)))
