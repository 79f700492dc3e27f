"""The runs table: each cycle's start, end, status and report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import RUN

__all__ = ["finish", "last_report", "newest_run", "start", "unfinished"]


def start(conn: Connection, now: datetime) -> int:
    key = conn.execute(sa.insert(RUN).values(started_at=now, status="running")).inserted_primary_key
    if key is None:  # SQLAlchemy's type allows it; a single-row INSERT always has one
        raise RuntimeError("the new run row has no primary key")
    run_id: int = key[0]
    return run_id


def unfinished(conn: Connection) -> list[tuple[int, datetime]]:
    """(id, started_at) of the runs still marked running: under the cycle lock, runs that died."""
    query = sa.select(RUN.c.id, RUN.c.started_at).where(RUN.c.status == "running").order_by(RUN.c.id)
    return [(row.id, row.started_at) for row in conn.execute(query)]


def newest_run(conn: Connection) -> tuple[int, str, datetime] | None:
    """(id, status, started_at) of the newest run, finished or not."""
    row = conn.execute(sa.select(RUN.c.id, RUN.c.status, RUN.c.started_at).order_by(RUN.c.id.desc()).limit(1)).first()
    return (row.id, row.status, row.started_at) if row is not None else None


def finish(conn: Connection, run_id: int | None, status: str, report_json: str, finished_at: datetime | None) -> None:
    values = {"status": status, "report_json": report_json, "finished_at": finished_at}
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(**values))


def last_report(conn: Connection) -> dict[str, Any] | None:
    """The report of the last run that finished."""
    query = sa.select(RUN.c.report_json).where(RUN.c.report_json.is_not(None)).order_by(RUN.c.id.desc()).limit(1)
    value = conn.execute(query).scalar()
    return orjson.loads(value) if value else None
