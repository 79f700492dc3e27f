"""The store's state in one cheap read, over a plain DB-API connection: what a cycle plans from.

Every cycle starts here, before SQLAlchemy, the schema or the renderer are imported: when the
plan made from this snapshot is empty (nothing changed), the cycle records its run row
through the same connection and ends, never having paid for them. The queries are plain SQL
that SQLite and PostgreSQL both run; what differs by dialect (how the connection is opened,
how a write transaction begins, parameter marks, time values) comes in a `Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from worker.model import ArticleCounts, StoreSnapshot
from worker.store import keys
from worker.store.version import SCHEMA_VERSION

__all__ = ["Dialect", "article_counts", "open_reader", "read_snapshot", "record_idle_run", "served_by"]


class Dialect(Protocol):
    """What the snapshot's SQL needs of a dialect module (store.sqlite, store.postgres)."""

    begin_write: str  # the statement that starts a transaction that will write
    mark: str  # the DB-API parameter mark

    def check_fence(self, cursor: Any, token: int) -> None: ...

    def time_param(self, moment: datetime) -> Any: ...


def open_reader(url: str, busy_timeout_s: float) -> tuple[Any, Dialect] | None:
    """A plain DB-API connection to the existing store of `url` and its dialect, or None
    (no store yet, or a database this path does not open: the cycle goes through SQLAlchemy)."""
    from worker.store import postgres, sqlite

    if postgres.is_postgres(url):
        conn = postgres.open_raw(url, busy_timeout_s)
        return (conn, postgres.RAW_DIALECT) if conn is not None else None
    conn = sqlite.open_raw(url, busy_timeout_s)
    return (conn, sqlite.RAW_DIALECT) if conn is not None else None


# The feeds published_topics() lists: with at least one published article not removed
# (`shown`, in the topics' feed index).
_VISIBLE_SLUGS = """
    SELECT t.slug FROM topic AS t WHERE EXISTS (
        SELECT 1 FROM article_topic AS at WHERE at.topic_id = t.id AND at.shown = TRUE)
"""
# Every stored file's stat, and the error of each quarantined one (NULL for the others): one
# pass over the table, where a second query for the quarantine alone would read it again.
_FILES = """
    SELECT path, size, mtime_ns, CASE WHEN state = 'quarantined' THEN coalesce(error, '') END
    FROM source_file
"""
_ARTICLE_COUNTS = """
    SELECT count(*), coalesce(sum(CASE WHEN is_published = TRUE THEN 1 ELSE 0 END), 0)
    FROM article WHERE removed = FALSE
"""


def read_snapshot(
    conn: Any, scope: tuple[str, ...] | None = None, roots: tuple[str, ...] = (), mark: str = "?"
) -> StoreSnapshot | None:
    """The store's snapshot; None for a store with no schema yet. A store of another schema
    version gives its `meta` alone (the cycle migrates it, or refuses a newer one).

    With `scope` (a partial scan's: files, and folders ending in `/`), only the stored files
    in it are read, with the quarantine and how many stored files each of `roots` has: what
    an incremental cycle plans from, at a cost that does not grow with the store."""
    meta = _read_meta(conn)
    if meta is None:
        return None
    if meta.get(keys.SCHEMA_VERSION) != str(SCHEMA_VERSION):
        return StoreSnapshot(meta, False, None, False, False, frozenset(), frozenset(), {}, [])
    cursor = conn.cursor()
    try:
        last = cursor.execute("SELECT status FROM run ORDER BY id DESC LIMIT 1").fetchone()
        dirty = cursor.execute("SELECT 1 FROM topic WHERE dirty = TRUE LIMIT 1").fetchone() is not None
        orphans = cursor.execute("SELECT 1 FROM orphan_candidate LIMIT 1").fetchone() is not None
        visible = frozenset(slug for (slug,) in cursor.execute(_VISIBLE_SLUGS))
        known = frozenset(slug for (slug,) in cursor.execute("SELECT slug FROM topic"))
        files_under: dict[str, int] = {}
        if scope is None:
            rows = cursor.execute(_FILES).fetchall()
            files = {path: (size, mtime_ns) for path, size, mtime_ns, _ in rows}
            errors = sorted((path, error) for path, _, _, error in rows if error is not None)
        else:
            files = _files_in_scope(cursor, scope, mark)
            errors = sorted(cursor.execute(_QUARANTINED).fetchall())
            files_under = _files_under(cursor, roots, mark)
        quarantined = [{"path": path, "message": error} for path, error in errors]
        documents = frozenset(path for (path,) in cursor.execute("SELECT path FROM feed_document"))
    finally:
        cursor.close()
    return StoreSnapshot(
        meta,
        True,
        last[0] if last else None,
        dirty,
        orphans,
        visible,
        known,
        files,
        quarantined,
        documents,
        partial=scope is not None,
        files_under=files_under,
    )


_QUARANTINED = "SELECT path, coalesce(error, '') FROM source_file WHERE state = 'quarantined'"
_IN_CHUNK = 500  # paths per IN (...) list: far below either database's parameter limit


def _files_in_scope(cursor: Any, scope: tuple[str, ...], mark: str) -> dict[str, tuple[int, int]]:
    files: dict[str, tuple[int, int]] = {}
    exact = sorted(path for path in scope if not path.endswith("/"))
    for start in range(0, len(exact), _IN_CHUNK):
        chunk = exact[start : start + _IN_CHUNK]
        marks = ", ".join([mark] * len(chunk))
        rows = cursor.execute(f"SELECT path, size, mtime_ns FROM source_file WHERE path IN ({marks})", chunk)
        files.update((path, (size, mtime_ns)) for path, size, mtime_ns in rows)
    for folder in sorted(path for path in scope if path.endswith("/")):
        rows = cursor.execute(
            f"SELECT path, size, mtime_ns FROM source_file WHERE substr(path, 1, {mark}) = {mark}",
            (len(folder), folder),
        )
        files.update((path, (size, mtime_ns)) for path, size, mtime_ns in rows)
    return files


def _files_under(cursor: Any, roots: tuple[str, ...], mark: str) -> dict[str, int]:
    counts = {}
    for root in roots:
        inside = root.rstrip("/") + "/"
        (count,) = cursor.execute(
            f"SELECT count(*) FROM source_file WHERE substr(path, 1, {mark}) = {mark}", (len(inside), inside)
        ).fetchone()
        counts[root] = count
    return counts


def _read_meta(conn: Any) -> dict[str, str] | None:
    cursor = conn.cursor()
    try:
        return dict(cursor.execute("SELECT key, value FROM meta").fetchall())
    except Exception:  # noqa: BLE001  (no table yet: a new store, or one a killed first run left)
        return None
    finally:
        cursor.close()


def article_counts(conn: Any) -> ArticleCounts:
    """The stored articles not removed, and how many of them are published."""
    cursor = conn.cursor()
    try:
        total, published = cursor.execute(_ARTICLE_COUNTS).fetchone()
    finally:
        cursor.close()
    return ArticleCounts(total=total, published=published)


def served_by(conn: Any, dialect: Dialect, request_id: str) -> tuple[int, str | None] | None:
    """(id, report JSON) of the run that served a run request, once it has finished; else None
    (a serving run still marked running died with its process: the request is not served)."""
    cursor = conn.cursor()
    try:
        row = cursor.execute(
            "SELECT r.id, r.report_json FROM run_request AS q JOIN run AS r ON r.id = q.run_id"
            f" WHERE q.id = {dialect.mark} AND r.status IN ('ok', 'failed')",
            (request_id,),
        ).fetchone()
    finally:
        cursor.close()
    return (row[0], row[1]) if row is not None else None


def record_idle_run(
    conn: Any,
    dialect: Dialect,
    started_at: datetime,
    finish: Callable[[int], tuple[datetime, str]],
    *,
    replica: str | None = None,
    fence: int | None = None,
    locked_at: datetime | None = None,
    serves_requests: bool = True,
) -> bool:
    """Insert and finish the run row of a cycle with nothing to do, in one transaction:
    `finish(run_id)` gives the finish time and the report JSON; the run serves the run
    requests waiting, unless it looked at some paths alone (`serves_requests` false, as
    store.runs.start). False when the store refused (then nothing was written); a lost cycle
    lock (`fence` no longer the newest token) raises store.postgres.LostLockError."""
    mark = dialect.mark
    cursor = conn.cursor()
    try:
        cursor.execute(dialect.begin_write)
    except Exception:  # noqa: BLE001  (locked, read-only: the full cycle reports why)
        cursor.close()
        return False
    try:
        if fence is not None:
            dialect.check_fence(cursor, fence)
        cursor.execute(
            f"INSERT INTO run (started_at, status, replica) VALUES ({mark}, 'running', {mark}) RETURNING id",
            (dialect.time_param(started_at), replica),
        )
        (run_id,) = cursor.fetchone()
        if serves_requests and locked_at is None:
            cursor.execute(f"UPDATE run_request SET run_id = {mark} WHERE run_id IS NULL", (run_id,))
        elif serves_requests:
            assert locked_at is not None
            cursor.execute(
                f"UPDATE run_request SET run_id = {mark} WHERE run_id IS NULL AND requested_at <= {mark}",
                (run_id, dialect.time_param(locked_at)),
            )
        finished_at, report_json = finish(run_id)
        cursor.execute(
            f"UPDATE run SET finished_at = {mark}, status = 'ok', report_json = {mark} WHERE id = {mark}",
            (dialect.time_param(finished_at), report_json, run_id),
        )
        cursor.execute("COMMIT")
    except BaseException as exc:
        try:
            cursor.execute("ROLLBACK")
        except Exception:  # noqa: BLE001,S110  (no transaction left to roll back)
            pass
        if isinstance(exc, Exception) and not _is_lost_lock(exc):
            return False
        raise
    finally:
        cursor.close()
    return True


def _is_lost_lock(exc: BaseException) -> bool:
    from worker.store.postgres import LostLockError

    return isinstance(exc, LostLockError)
