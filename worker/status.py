"""What `feedworker status` and the HTTP server report: counts, the last run, the quarantine.

Read-only: the database is opened read-only and never created, migrated or written; a store
with another schema version is refused with one line (a cycle or `feedworker migrate` upgrades it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from worker.config import Config
from worker.ingest.scanner import folder_state
from worker.store import articles as article_store
from worker.store import files as file_store
from worker.store import pages, runs
from worker.store import topics as topic_store
from worker.store.db import check_schema, connect
from worker.store.errors import StoreError
from worker.store.lock import cycle_running
from worker.store.schema import ARTICLE, TOPIC

__all__ = ["RECENT_RUNS", "StatusError", "empty_status", "read_status", "source_status", "store_status"]

RECENT_RUNS = 100  # the runs `recent_runs` lists (and GET /status draws)
_DIED = "the process running this cycle ended before it finished (killed?); the next cycle will take over its work"


class StatusError(Exception):
    """The database cannot be read."""


def read_status(config: Config) -> dict[str, Any]:
    """`feedworker status --json`: the store's figures (store_status), or empty_status before any run."""
    path = config.database_path
    if path is not None and not path.exists():
        return empty_status(config)
    try:
        engine = connect(config.database_url, busy_timeout_s=config.busy_timeout_s, readonly=True)
    except StoreError as exc:
        raise StatusError(str(exc)) from None
    try:
        if not check_schema(engine):
            return empty_status(config)  # a first run killed before it made the schema
        with engine.connect() as conn:
            return store_status(conn, config)
    except StoreError as exc:
        raise StatusError(str(exc)) from None
    except sa.exc.SQLAlchemyError as exc:
        raise StatusError(f"database cannot be read: {exc}") from None
    finally:
        engine.dispose()


def store_status(conn: sa.Connection, config: Config) -> dict[str, Any]:
    """The status from an open connection on a store of this schema (`status --json`, GET /status).

    `recent_runs`: the last RECENT_RUNS runs that ended, oldest first (store.runs.recent)."""
    counts = article_store.article_counts(conn)
    removed = conn.execute(sa.select(sa.func.count()).where(ARTICLE.c.removed.is_(True))).scalar_one()
    topics = len(topic_store.published_topics(conn))
    all_topics = conn.execute(sa.select(sa.func.count()).select_from(TOPIC)).scalar_one()
    last_run = _last_run(conn, config)
    return {
        "articles": {**counts, "removed": removed},
        "topics": topics,
        "topics_known": all_topics,
        "quarantined": file_store.quarantined_files(conn),
        "enrich": pages.page_counts(conn, datetime.now(UTC), config.enrich.ttl),
        "sources": source_status(config, last_run),
        "last_run": last_run,
        "recent_runs": runs.recent(conn, RECENT_RUNS),
    }


def empty_status(config: Config) -> dict[str, Any]:
    """The status before any run has made the store."""
    return {
        "articles": {"total": 0, "published": 0, "removed": 0},
        "topics": 0,
        "quarantined": [],
        "enrich": {"fetched": 0, "cached": 0, "failed": 0, "pending": 0},
        "sources": source_status(config, None),
        "last_run": None,
        "recent_runs": [],
    }


def source_status(config: Config, last_run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each source folder: its state now (`state`, `reason`: looked at, not walked), and the
    last run's view of it (`files` counted under it, `last_run_state`; None when it has none)."""
    seen: dict[str, dict[str, Any]] = {}
    for source in (last_run or {}).get("sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            seen.setdefault(source["path"], source)
    listed = []
    for source in config.sources:
        path = str(source.path)
        state, reason, _ = folder_state(path, open_it=True)
        last = seen.get(path, {})
        files, last_state = last.get("files"), last.get("state")
        listed.append(
            {
                "path": path,
                "state": state,
                "files": files if isinstance(files, int) else None,
                "reason": reason,
                "last_run_state": last_state if isinstance(last_state, str) else None,
            }
        )
    return listed


def _last_run(conn: sa.Connection, config: Config) -> dict[str, Any] | None:
    """The last finished run's report; a run marked running that no process holds the cycle
    lock for died, and is shown as interrupted until the next cycle records it so."""
    newest = runs.newest_run(conn)
    if newest is not None and newest[1] == "running":
        run_id, _, started_at = newest
        if cycle_running(config.database_url) is False:
            return {
                "status": "interrupted",
                "run_id": run_id,
                "started_at": started_at.isoformat(),
                "finished_at": None,
                "duration_s": None,
                "message": _DIED,
            }
    return runs.last_report(conn)
