"""The no-change check with the standard library's sqlite3 alone: SQLite only, read-only but for the run row.

A cycle in which nothing changed would otherwise import SQLAlchemy and the models, and
migrate and read the store through them, only to find nothing to do. This module answers
"is this a no-change run?" from a few queries, the feeds folder and the scan. Whenever
anything is unusual (another database, another schema version, a failed or interrupted
last run, a dirty feed, a missing feed file, a file to read or forget) it answers "no",
and the full cycle runs, which migrates, renders and repairs. It writes nothing but the
run row of a no-change run.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from worker.ingest.scanner import Scan
from worker.publish.settings import SETTINGS_KEY, FeedSettings, fingerprint
from worker.publish.writer import TEMP_PREFIX
from worker.store.files import Plan, plan_reads
from worker.store.version import SCHEMA_VERSION

__all__ = ["ALL_DIRTY_KEY", "WATERMARK_KEY", "Answer", "NoChange", "QuickStore", "db_time", "open_store"]

# Meta keys the full cycle writes through SQLAlchemy (worker.store.articles and
# worker.store.related); tests/test_quick.py checks that they still agree.
ALL_DIRTY_KEY = "all_feeds_dirty"
WATERMARK_KEY = "related_propagated_at"
_FEED_INDEX = ("all.rss", "all.atom", "index.opml")

# The feeds published_topics() lists: with at least one published article not removed.
_VISIBLE_SLUGS = """
    SELECT t.slug FROM topic AS t WHERE EXISTS (
        SELECT 1 FROM article_topic AS at JOIN article AS a ON a.id = at.article_id
        WHERE at.topic_id = t.id AND a.is_published IS 1 AND a.removed IS 0)
"""
_ALL_SLUGS = "SELECT slug FROM topic"
# Every stored file's stat, and the error of each quarantined one (NULL for the others).
_KNOWN_FILES = """
    SELECT path, size, mtime_ns, CASE WHEN state = 'quarantined' THEN coalesce(error, '') END
    FROM source_file
"""
_ARTICLE_COUNTS = """
    SELECT count(*), coalesce(sum(CASE WHEN is_published IS 1 THEN 1 ELSE 0 END), 0)
    FROM article WHERE removed IS 0
"""


@dataclass(frozen=True, slots=True)
class NoChange:
    """What a no-change run reports, read while deciding it is one."""

    plan: Plan
    articles: dict[str, int]  # total, published: as articles.article_counts
    quarantined: list[dict[str, str]]  # path, message, by path: as articles.quarantined_files


@dataclass(frozen=True, slots=True)
class Answer:
    """The check's answer: `facts` when nothing changed, None when the full cycle must run."""

    facts: NoChange | None = None
    found: Scan | None = None  # the scan, when the check got that far: no need to walk twice
    stats: dict[str, tuple[int, int]] | None = None  # every stored file's (size, mtime_ns), if read


def open_store(url: str, busy_timeout_s: float) -> QuickStore | None:
    """The existing SQLite file of `url`, opened with sqlite3; None for anything else."""
    prefix = "sqlite:///"
    path = url[len(prefix):]
    if not url.startswith(prefix) or not path or path == ":memory:" or "?" in path:
        return None
    # mode=rw: a missing file is not created here; the full cycle creates the schema.
    uri = f"file:{quote(os.path.abspath(path))}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error:
        return None
    return QuickStore(conn, uri, busy_timeout_s)


class QuickStore:
    """One sqlite3 connection: the no-change check, then the run row of a no-change run."""

    def __init__(self, conn: sqlite3.Connection, uri: str, busy_timeout_s: float):
        self._conn = conn
        self._uri = uri
        self._busy_timeout_s = busy_timeout_s

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def check(self, settings: FeedSettings, now: datetime, scan: Callable[[], Scan]) -> Answer:
        """Is this a no-change run? The store and the feeds are checked first; only then is
        `scan` called, and its files classified exactly as the full cycle would."""
        try:
            slugs = self._settled(settings, now)
            if slugs is None or not _feeds_in_place(settings.dir, *slugs):
                return Answer()
        except (sqlite3.Error, OSError, ValueError, TypeError):
            return Answer()
        # The counts are one long SQLite step that runs without the GIL: beside the scan,
        # which waits on the disk, they come for free.
        counting = _Counting(self._uri, self._busy_timeout_s)
        counting.start()
        try:
            found = scan()
        finally:
            counting.join()
        try:
            known, quarantined = self._known_files()
        except sqlite3.Error:
            return Answer(found=found)
        plan = plan_reads(found, known)
        if not plan.idle or counting.articles is None:
            return Answer(found=found, stats=known)
        return Answer(NoChange(plan, counting.articles, quarantined), found)

    def record_run(self, started_at: datetime, finish: Callable[[int], tuple[datetime, str]]) -> bool:
        """Insert and finish the run row in one transaction: `finish(run_id)` gives the finish
        time and the report JSON. False when the store refused (then nothing was written)."""
        conn = self._conn
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # as the full cycle's connections
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
        try:
            cursor = conn.execute("INSERT INTO run (started_at, status) VALUES (?, 'running')", (db_time(started_at),))
            run_id = cursor.lastrowid
            assert run_id is not None
            finished_at, report_json = finish(run_id)
            conn.execute(
                "UPDATE run SET finished_at = ?, status = 'ok', report_json = ? WHERE id = ?",
                (db_time(finished_at), report_json, run_id),
            )
            conn.execute("COMMIT")
        except sqlite3.Error:
            _rollback(conn)
            return False
        except BaseException:
            _rollback(conn)
            raise
        return True

    def _settled(self, settings: FeedSettings, now: datetime) -> tuple[set[str], set[str]] | None:
        """The slugs of the visible topics, and of all, when the store has nothing pending for the feeds."""
        conn = self._conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            return None  # the full cycle migrates, or refuses a newer schema
        if meta.get(ALL_DIRTY_KEY) == "1" or meta.get(SETTINGS_KEY) != fingerprint(settings):
            return None
        # Every article change up to the watermark has been spread to its neighbours, and
        # each run stamps its changes with its own start: a start after the watermark finds
        # nothing to spread. A clock that did not move (pinned, or set back) takes the full path.
        watermark = meta.get(WATERMARK_KEY)
        if watermark is None or not datetime.fromisoformat(watermark) < now:
            return None
        last = conn.execute("SELECT status FROM run ORDER BY id DESC LIMIT 1").fetchone()
        if last is None or last[0] != "ok":
            return None  # a failed run, or one killed while running, may have left work half done
        if conn.execute("SELECT 1 FROM topic WHERE dirty IS 1 LIMIT 1").fetchone() is not None:
            return None
        if conn.execute("SELECT 1 FROM orphan_candidate LIMIT 1").fetchone() is not None:
            return None  # an article may have lost its last file: the full cycle decides
        return {slug for (slug,) in conn.execute(_VISIBLE_SLUGS)}, {slug for (slug,) in conn.execute(_ALL_SLUGS)}

    def _known_files(self) -> tuple[dict[str, tuple[int, int]], list[dict[str, str]]]:
        """Every stored file's (size, mtime_ns), and the quarantined ones as the report lists them."""
        rows = self._conn.execute(_KNOWN_FILES).fetchall()
        known = {path: (size, mtime_ns) for path, size, mtime_ns, _ in rows}
        errors = sorted((path, error) for path, _, _, error in rows if error is not None)
        return known, [{"path": path, "message": error} for path, error in errors]


class _Counting(threading.Thread):
    """Article counts as articles.article_counts gives them, on a connection of its own."""

    def __init__(self, uri: str, busy_timeout_s: float):
        super().__init__(name="feedworker-counts", daemon=True)
        self._uri = uri
        self._busy_timeout_s = busy_timeout_s
        self.articles: dict[str, int] | None = None  # None: the store could not be read

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self._uri, uri=True, timeout=self._busy_timeout_s)
            try:
                total, published = conn.execute(_ARTICLE_COUNTS).fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            return
        self.articles = {"total": total, "published": published}


def _feeds_in_place(directory: Path, slugs: set[str], known: set[str]) -> bool:
    """Every feed file the full cycle would write is there, and nothing it would remove (a
    feed of a known topic not shown; files of other names are not feedworker's)."""
    topics = directory / "topics"
    for folder in (directory, topics):
        try:
            with os.scandir(folder) as entries:
                if any(entry.name.startswith(TEMP_PREFIX) for entry in entries):
                    return False  # left by a killed write: the full cycle clears them
        except FileNotFoundError:
            pass
    if not all(os.path.exists(directory / name) for name in _FEED_INDEX):
        return False
    try:
        with os.scandir(topics) as entries:
            on_disk = {entry.name for entry in entries if entry.is_file() and not entry.name.startswith(".")}
    except FileNotFoundError:
        on_disk = set()
    if any(f"{slug}.rss" not in on_disk or f"{slug}.atom" not in on_disk for slug in slugs):
        return False
    for name in on_disk:
        slug, _, suffix = name.rpartition(".")
        if suffix in ("rss", "atom") and slug in known and slug not in slugs:
            return False  # a feed of a topic no longer shown: the full cycle removes it
    return True


def db_time(moment: datetime) -> str:
    """The text the store's UTCDateTime column type writes to SQLite for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the store")
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}"
    )


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction left to roll back
