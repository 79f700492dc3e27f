"""The rendered feeds as the store keeps them for every replica to serve (PostgreSQL): bytes, ETag, time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.model import FeedFiles
from worker.store.db import in_chunks
from worker.store.schema import FEED_DOCUMENT

__all__ = [
    "Document",
    "as_feed_files",
    "bodies",
    "document",
    "document_etag",
    "listing",
    "put_documents",
    "remove_documents",
]

Document = tuple[bytes, str, datetime]  # body, etag, modified_at


def document_etag(body: bytes) -> str:
    """The content hash the feed server names a representation by (the file server's too)."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def listing(conn: Connection) -> dict[str, tuple[str, datetime]]:
    """path -> (etag, modified_at) of every stored feed."""
    query = sa.select(FEED_DOCUMENT.c.path, FEED_DOCUMENT.c.etag, FEED_DOCUMENT.c.modified_at)
    return {row.path: (row.etag, row.modified_at) for row in conn.execute(query)}


def as_feed_files(stored: Iterable[str]) -> FeedFiles:
    """Stored feed paths as the planner and publish see a feeds folder."""
    return FeedFiles.of_paths(stored)


def put_documents(conn: Connection, documents: list[tuple[str, bytes]], now: datetime) -> list[bool]:
    """Store each (path, body) unless it holds those bytes already; whether each was written.
    `modified_at` is `now` for bytes that changed, so every replica sends one Last-Modified."""
    etags = {path: etag for path, (etag, _) in _etags(conn, [path for path, _ in documents]).items()}
    written = []
    for path, body in documents:
        etag = document_etag(body)
        if etags.get(path) == etag:
            written.append(False)
            continue
        values = {"body": body, "etag": etag, "modified_at": now}
        if path in etags:
            conn.execute(sa.update(FEED_DOCUMENT).where(FEED_DOCUMENT.c.path == path).values(**values))
        else:
            conn.execute(sa.insert(FEED_DOCUMENT).values(path=path, **values))
        etags[path] = etag
        written.append(True)
    return written


def _etags(conn: Connection, paths: list[str]) -> dict[str, tuple[str, datetime]]:
    found: dict[str, tuple[str, datetime]] = {}
    for chunk in in_chunks(paths):
        query = sa.select(FEED_DOCUMENT.c.path, FEED_DOCUMENT.c.etag, FEED_DOCUMENT.c.modified_at).where(
            FEED_DOCUMENT.c.path.in_(chunk)
        )
        found.update((row.path, (row.etag, row.modified_at)) for row in conn.execute(query))
    return found


def remove_documents(conn: Connection, paths: list[str]) -> int:
    removed = 0
    for chunk in in_chunks(paths):
        removed += conn.execute(sa.delete(FEED_DOCUMENT).where(FEED_DOCUMENT.c.path.in_(chunk))).rowcount or 0
    return removed


def document(conn: Connection, path: str) -> Document | None:
    row = conn.execute(
        sa.select(FEED_DOCUMENT.c.body, FEED_DOCUMENT.c.etag, FEED_DOCUMENT.c.modified_at).where(
            FEED_DOCUMENT.c.path == path
        )
    ).first()
    return (bytes(row.body), row.etag, row.modified_at) if row is not None else None


def bodies(conn: Connection, paths: list[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for chunk in in_chunks(paths):
        query = sa.select(FEED_DOCUMENT.c.path, FEED_DOCUMENT.c.body).where(FEED_DOCUMENT.c.path.in_(chunk))
        found.update((row.path, bytes(row.body)) for row in conn.execute(query))
    return found
