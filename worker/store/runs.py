"""The runs table: each cycle's start, end, status and report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.store.schema import RUN, RUN_REQUEST

__all__ = [
    "LastRun",
    "add_request",
    "finish",
    "last_finished",
    "last_report",
    "newest_run",
    "recent",
    "request_view",
    "start",
    "started_since",
    "unfinished",
]


def start(
    conn: Connection,
    now: datetime,
    replica: str | None = None,
    locked_at: datetime | None = None,
    *,
    serves_requests: bool = True,
) -> int:
    """A new run row; the run serves every request waiting (on any replica of the group) that
    was made before its cycle took the lock (`locked_at`, wall-clock time): its scan, which
    came after, saw what those requests were made for. A cycle of some paths alone (`serve`'s
    watcher) serves none (`serves_requests` false): a request is for a full run."""
    key = conn.execute(sa.insert(RUN).values(started_at=now, status="running", replica=replica)).inserted_primary_key
    if key is None:  # SQLAlchemy's type allows it; a single-row INSERT always has one
        raise RuntimeError("the new run row has no primary key")
    run_id: int = key[0]
    if not serves_requests:
        return run_id
    waiting: sa.ColumnElement[bool] = RUN_REQUEST.c.run_id.is_(None)
    if locked_at is not None:
        waiting = waiting & (RUN_REQUEST.c.requested_at <= locked_at)
    conn.execute(sa.update(RUN_REQUEST).where(waiting).values(run_id=run_id))
    return run_id


def started_since(conn: Connection, moment: datetime) -> bool:
    """Whether a run (of any replica) started at `moment` or later."""
    query = sa.select(RUN.c.id).where(RUN.c.started_at >= moment).limit(1)
    return conn.execute(query).first() is not None


def add_request(conn: Connection, request_id: str, source: str, replica: str, now: datetime) -> None:
    """A run asked for: the next run to start on any replica serves it."""
    conn.execute(sa.insert(RUN_REQUEST).values(id=request_id, source=source, replica=replica, requested_at=now))


def request_view(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """A run request as GET /runs/<id> shows it on every replica, from the store alone; None
    for an id no replica gave out."""
    request = conn.execute(sa.select(RUN_REQUEST).where(RUN_REQUEST.c.id == request_id)).first()
    if request is None:
        return None
    run = None
    if request.run_id is not None:
        run = conn.execute(sa.select(RUN).where(RUN.c.id == request.run_id)).first()
    report = orjson.loads(run.report_json) if run is not None and run.report_json else None
    status = "queued" if run is None else {"ok": "ok", "running": "running"}.get(run.status, "failed")
    return {
        "run_id": request.id,
        "status": status,
        "source": request.source,
        "requested_at": request.requested_at.isoformat(),
        "started_at": run.started_at.isoformat() if run is not None else None,
        "finished_at": run.finished_at.isoformat() if run is not None and run.finished_at else None,
        "store_run_id": request.run_id,
        "message": report.get("message") if isinstance(report, dict) else None,
        "report": report,
        "replica": run.replica if run is not None else None,
    }


def unfinished(conn: Connection) -> list[tuple[int, datetime]]:
    """(id, started_at) of the runs still marked running: under the cycle lock, runs that died."""
    query = sa.select(RUN.c.id, RUN.c.started_at).where(RUN.c.status == "running").order_by(RUN.c.id)
    return [(row.id, row.started_at) for row in conn.execute(query)]


def newest_run(conn: Connection) -> tuple[int, str, datetime] | None:
    """(id, status, started_at) of the newest run, finished or not."""
    row = conn.execute(sa.select(RUN.c.id, RUN.c.status, RUN.c.started_at).order_by(RUN.c.id.desc()).limit(1)).first()
    return (row.id, row.status, row.started_at) if row is not None else None


def release_requests(conn: Connection, run_id: int) -> None:
    """The run requests a run that died was serving wait again: the next run serves them."""
    conn.execute(sa.update(RUN_REQUEST).where(RUN_REQUEST.c.run_id == run_id).values(run_id=None))


def finish(conn: Connection, run_id: int | None, status: str, report_json: str, finished_at: datetime | None) -> None:
    values = {"status": status, "report_json": report_json, "finished_at": finished_at}
    conn.execute(sa.update(RUN).where(RUN.c.id == run_id).values(**values))


def last_report(conn: Connection) -> dict[str, Any] | None:
    """The report of the last run that finished."""
    query = sa.select(RUN.c.report_json).where(RUN.c.report_json.is_not(None)).order_by(RUN.c.id.desc()).limit(1)
    value = conn.execute(query).scalar()
    return orjson.loads(value) if value else None


def recent(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` runs that ended (ok, failed, interrupted; a run under way has no
    report yet), oldest first, each summed up from its report: `run_id`, `status`,
    `started_at`, `finished_at` (None for an interrupted run), `duration_s`, `files`
    (new, changed, unchanged, deleted, quarantined), `feeds_written` and `message`."""
    query = (
        sa.select(RUN.c.id, RUN.c.status, RUN.c.started_at, RUN.c.finished_at, RUN.c.report_json)
        .where(RUN.c.report_json.is_not(None))
        .order_by(RUN.c.id.desc())
        .limit(limit)
    )
    return [_summary(row) for row in reversed(conn.execute(query).all())]


def _summary(row: sa.Row[Any]) -> dict[str, Any]:
    """One run of `recent`, read defensively: an older report may lack a key."""
    try:
        report = orjson.loads(row.report_json)
    except orjson.JSONDecodeError:
        report = None
    report = report if isinstance(report, dict) else {}
    files, feeds = report.get("files"), report.get("feeds")
    files, feeds = files if isinstance(files, dict) else {}, feeds if isinstance(feeds, dict) else {}
    duration, message = report.get("duration_s"), report.get("message")
    return {
        "run_id": row.id,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at is not None else None,
        "duration_s": float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
        "files": {state: _count(files.get(state)) for state in _FILE_STATES},
        "feeds_written": _count(feeds.get("written")),
        "message": message if isinstance(message, str) else None,
    }


_FILE_STATES = ("new", "changed", "unchanged", "deleted", "quarantined")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True, slots=True)
class LastRun:
    """The newest run that ended, whichever replica or process ran it (/healthz, /metrics)."""

    run_id: int
    status: str  # "ok" | "failed"
    finished_at: datetime
    replica: str | None
    last_success_at: datetime | None  # when the newest successful run ended (this one when ok)
    report: dict[str, Any] | None = None  # only when asked for: it may be large


def last_finished(conn: Connection, *, with_report: bool = False) -> LastRun | None:
    """The newest run with a finish time (ok or failed; an interrupted run has none)."""
    columns = [RUN.c.id, RUN.c.status, RUN.c.finished_at, RUN.c.replica]
    if with_report:
        columns.append(RUN.c.report_json)
    ended = RUN.c.finished_at.is_not(None)
    row = conn.execute(sa.select(*columns).where(ended).order_by(RUN.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    if row.status == "ok":
        last_success_at = row.finished_at
    else:
        query = sa.select(RUN.c.finished_at).where(ended, RUN.c.status == "ok").order_by(RUN.c.id.desc()).limit(1)
        last_success_at = conn.execute(query).scalar()
    report = orjson.loads(row.report_json) if with_report and row.report_json else None
    return LastRun(
        run_id=row.id,
        status=row.status,
        finished_at=row.finished_at,
        replica=row.replica,
        last_success_at=last_success_at,
        report=report if isinstance(report, dict) else None,
    )
