"""Source files as last seen: their stat and hash, the quarantine, and forgetting the ones gone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.model import Ingested, KnownFile
from worker.store import orphans as orphan_store
from worker.store.db import bulk_insert, in_chunks
from worker.store.schema import SOURCE_FILE

__all__ = ["delete_files", "files_carrying", "known_files", "quarantined_files", "touch_files", "write_files"]


def known_files(conn: Connection, paths: Sequence[str] | None = None) -> dict[str, KnownFile]:
    """The last stat of every stored file, or of those of `paths`: read on every run, so as
    plain tuples, not ORM rows."""
    query = sa.select(
        SOURCE_FILE.c.path,
        SOURCE_FILE.c.size,
        SOURCE_FILE.c.mtime_ns,
        SOURCE_FILE.c.hash,
        SOURCE_FILE.c.state,
        SOURCE_FILE.c.article_url,
    )
    if paths is None:
        return {path: KnownFile(*rest) for path, *rest in conn.execute(query)}
    known: dict[str, KnownFile] = {}
    for chunk in in_chunks(sorted(set(paths))):
        known.update(
            (path, KnownFile(*rest)) for path, *rest in conn.execute(query.where(SOURCE_FILE.c.path.in_(chunk)))
        )
    return known


def write_files(conn: Connection, items: Sequence[Ingested], known: dict[str, KnownFile], now: datetime) -> None:
    inserts, updates = [], []
    for item in items:
        previous = known.get(item.path)
        row = {
            "size": item.size,
            "mtime_ns": item.mtime_ns,
            "hash": item.hash,
            "state": "ok" if item.error is None else "quarantined",
            "error": item.error,
            # a quarantined file keeps pointing at the article it last gave: nothing is lost
            "article_url": item.article.url if item.article else (previous.article_url if previous else None),
            "checked_at": now,
        }
        if previous is None:
            inserts.append({"path": item.path, "first_seen": now, **row})
        else:
            updates.append({"b_path": item.path, **row})
    bulk_insert(conn, SOURCE_FILE, inserts)
    if updates:
        conn.execute(sa.update(SOURCE_FILE).where(SOURCE_FILE.c.path == sa.bindparam("b_path")), updates)


def touch_files(conn: Connection, rows: Sequence[tuple[str, int, int]]) -> None:
    """Record the new (size, mtime) of files whose bytes turned out unchanged."""
    if rows:
        conn.execute(
            sa.update(SOURCE_FILE).where(SOURCE_FILE.c.path == sa.bindparam("b_path")),
            [{"b_path": path, "size": size, "mtime_ns": mtime_ns} for path, size, mtime_ns in rows],
        )


def delete_files(conn: Connection, paths: Sequence[str], known: dict[str, KnownFile]) -> None:
    """Forget files that are gone; the URLs they carried become orphan candidates in the same
    transaction, so a run killed after this still takes their articles out of the feeds."""
    for chunk in in_chunks(list(paths)):
        conn.execute(sa.delete(SOURCE_FILE).where(SOURCE_FILE.c.path.in_(chunk)))
    orphan_store.add_orphan_candidates(conn, {url for path in paths if (url := known[path].article_url)})


def files_carrying(conn: Connection, urls: Iterable[str]) -> list[str]:
    """Paths of the stored files that carry any of these article URLs."""
    paths: list[str] = []
    for chunk in in_chunks(sorted(urls)):
        paths.extend(conn.execute(sa.select(SOURCE_FILE.c.path).where(SOURCE_FILE.c.article_url.in_(chunk))).scalars())
    return paths


def quarantined_files(conn: Connection) -> list[dict[str, str]]:
    query = (
        sa.select(SOURCE_FILE.c.path, SOURCE_FILE.c.error)
        .where(SOURCE_FILE.c.state == "quarantined")
        .order_by(SOURCE_FILE.c.path)
    )
    return [{"path": row.path, "message": row.error or ""} for row in conn.execute(query)]
