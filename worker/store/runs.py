"""The runs table: each cycle's start, end, status and report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.models import Run

__all__ = ["finish", "last_report", "start"]

T = Run.__table__


def start(conn: Connection, now: datetime) -> int:
    return conn.execute(sa.insert(T).values(started_at=now, status="running")).inserted_primary_key[0]


def finish(conn: Connection, run_id: int | None, status: str, report_json: str, finished_at: datetime) -> None:
    values = {"status": status, "report_json": report_json, "finished_at": finished_at}
    conn.execute(sa.update(T).where(T.c.id == run_id).values(**values))


def last_report(conn: Connection) -> dict[str, Any] | None:
    """The report of the last run that finished."""
    query = sa.select(T.c.report_json).where(T.c.report_json.is_not(None)).order_by(T.c.id.desc()).limit(1)
    value = conn.execute(query).scalar()
    return orjson.loads(value) if value else None
