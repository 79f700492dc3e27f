"""Article URLs that lost a file, kept until the run decides whether their article goes."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.db import bulk_insert, in_chunks
from worker.store.schema import ORPHAN_CANDIDATE

__all__ = ["add_orphan_candidates", "orphan_candidates"]


def add_orphan_candidates(conn: Connection, urls: set[str]) -> None:
    new: set[str] = set()
    for chunk in in_chunks(sorted(urls)):
        new.update(chunk)
        new.difference_update(
            conn.execute(sa.select(ORPHAN_CANDIDATE.c.url).where(ORPHAN_CANDIDATE.c.url.in_(chunk))).scalars()
        )
    bulk_insert(conn, ORPHAN_CANDIDATE, [{"url": url} for url in sorted(new)])


def orphan_candidates(conn: Connection) -> list[str]:
    """Article URLs that lost a file, this run or in a run that did not finish."""
    return list(conn.execute(sa.select(ORPHAN_CANDIDATE.c.url).order_by(ORPHAN_CANDIDATE.c.url)).scalars())
