"""The cycle's plan: an empty one when nothing changed (recorded without SQLAlchemy), work otherwise, same report.

Real projects, a real SQLite file, the CLI in a subprocess. Whether a run found nothing to
do is read from its `run.finished` log event (`idle`), and, for the imports, from `sys.modules`.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Project, article_text, make_project
from tests.feedcheck import assert_valid_feeds
from worker.model import FileCounts, FoundFile, Scan
from worker.plan import plan_reads

HEAVY = ("sqlalchemy", "sqlmodel", "feedgen", "lxml", "nh3", "markdown_it", "httpx")
# What differs between two runs of the same state.
VOLATILE = ("run_id", "started_at", "finished_at", "duration_s", "waited_s")
DB_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def run(project: Project, env: dict[str, str] | None = None, check: bool = True) -> tuple[dict[str, Any], bool]:
    """One `feedworker run --json`: the report, and whether the no-change path recorded it."""
    result = project.cli("run", "--json", env=env, check=check)
    report = json.loads(result.stdout)
    if report["status"] == "ok":
        assert_valid_feeds(project.feeds, project.base_url)
    return report, finished_event(result.stderr).get("idle", False)


def finished_event(stderr: str) -> dict[str, Any]:
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # click's own messages
    ends = [
        event for event in events if isinstance(event, dict) and event.get("event") in ("run.finished", "run.failed")
    ]
    assert len(ends) <= 1, ends
    return ends[0] if ends else {}


def stable(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key not in VOLATILE}


def sql(project: Project, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(project.database) as conn:
        rows = conn.execute(statement, params).fetchall()
    conn.close()
    return rows


def settled_project(root: Path, **overrides: Any) -> Project:
    """Two published articles in two topics, a draft in a third, after one full run."""
    project = make_project(root, **overrides)
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI"])
    project.article("sub/b.md", title="B", web_url="https://a.example/b", topics=["Space"])
    project.article("draft.txt", title="Draft", web_url="https://a.example/d", topics=["Drafts"], published=False)
    report, idle = run(project)
    assert not idle and report["files"]["new"] == 3
    return project


@pytest.fixture
def settled(tmp_path: Path) -> Project:
    return settled_project(tmp_path)


# --------------------------------------------------------------------------- the idle path


def test_a_no_change_run_is_quick_and_reports_what_the_full_path_reports(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox"}, {"path": "../not-there"}])
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI", "Space"])
    project.article("sub/b.md", title="B", web_url="https://a.example/b", topics=["AI"])
    project.article("draft.txt", title="Draft", web_url="https://a.example/d", topics=["Drafts"], published=False)
    project.write("z-bad.txt", "no front matter at all")
    project.write("m-bad.txt", "---\ntitle: [\n---\n")
    first, idle = run(project)
    assert not idle and first["files"]["quarantined"] == 2
    feeds = project.feed_files()

    idle_report, idle = run(project)
    assert idle
    assert idle_report["files"] == {"seen": 5, "new": 0, "changed": 0, "unchanged": 5, "deleted": 0, "quarantined": 2}
    assert idle_report["articles"] == {"total": 3, "published": 2}
    assert [error["path"] for error in idle_report["errors"]] == [
        str(tmp_path / "not-there"),
        str(project.inbox / "m-bad.txt"),
        str(project.inbox / "z-bad.txt"),
    ]
    assert project.feed_files() == feeds  # nothing written: same bytes, same mtimes

    # A failed last run sends the next one down the full path, over the very same state.
    sql(project, "UPDATE run SET status = 'failed' WHERE id = (SELECT max(id) FROM run)")
    full_report, idle = run(project)
    assert not idle
    assert full_report["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}
    assert stable(full_report) == stable(idle_report)
    assert list(full_report) == list(idle_report)  # the same keys, in the same order

    again, idle = run(project)
    assert idle and stable(again) == stable(full_report)
    assert project.feed_files() == feeds

    # The run row: written as the full path writes it, the report as printed.
    rows = sql(project, "SELECT id, started_at, finished_at, status, report_json FROM run ORDER BY id")
    assert [row[3] for row in rows] == ["ok", "failed", "ok", "ok"]
    full_row, idle_row = rows[-2], rows[-1]
    for row in (full_row, idle_row):
        assert DB_TIME.match(row[1]) and DB_TIME.match(row[2])
    assert idle_row[0] == again["run_id"] and json.loads(idle_row[4]) == again
    assert idle_row[1] == as_db_time(again["started_at"]) and idle_row[2] == as_db_time(again["finished_at"])
    assert full_row[1] == as_db_time(full_report["started_at"])


def as_db_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_a_no_change_run_imports_none_of_the_heavy_modules(settled: Project):
    code = (
        "import json, sys\n"
        "from worker.cli import main\n"
        f"sys.argv = ['feedworker', 'run', '--json', '--config', {str(settled.config)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}"
        " or m in ('worker.store.db', 'worker.store.schema', 'worker.store.articles', 'worker.publish.feeds',"
        " 'worker.enrich.stage', 'worker.ingest.frontmatter'))\n"
        "sys.stderr.write('MODULES ' + json.dumps(heavy) + '\\n')\n"
    )

    def modules_loaded() -> tuple[list[str], bool]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=True
        )
        line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES "))
        return json.loads(line[len("MODULES ") :]), finished_event(result.stderr)["idle"]

    loaded, idle = modules_loaded()
    assert idle and loaded == []
    os.utime(settled.inbox / "a.txt", ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    loaded, idle = modules_loaded()  # the same check sees the full path load them
    assert not idle and {"sqlalchemy", "worker.store.db"} <= set(loaded)


# --------------------------------------------------------------------------- what sends a run down the full path


def test_a_touched_but_identical_file_takes_the_full_path_once(settled: Project):
    feeds = settled.feed_files()
    os.utime(settled.inbox / "a.txt", ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    report, idle = run(settled)
    assert not idle
    assert report["files"] == {"seen": 3, "new": 0, "changed": 0, "unchanged": 3, "deleted": 0, "quarantined": 0}
    assert report["feeds"]["written"] == 0 and settled.feed_files() == feeds
    assert run(settled)[1]  # the new stat is stored: idle again


def test_an_edited_file_takes_the_full_path_and_is_published(settled: Project):
    settled.article("a.txt", title="A, edited", web_url="https://a.example/a", topics=["AI"])
    report, idle = run(settled)
    assert not idle and report["files"]["changed"] == 1 and report["feeds"]["written"] > 0
    assert b"A, edited" in settled.feed("topics/ai.rss") and b"A, edited" in settled.feed("all.rss")
    assert run(settled)[1]


def test_a_deleted_file_takes_the_full_path_and_leaves_the_feeds(settled: Project):
    (settled.inbox / "sub" / "b.md").unlink()
    report, idle = run(settled)
    assert not idle and report["files"]["deleted"] == 1 and report["feeds"]["removed"] == 3
    assert report["articles"] == {"total": 2, "published": 1}
    assert not (settled.feeds / "topics" / "space.rss").exists() and b"https://a.example/b" not in settled.feed(
        "all.rss"
    )
    assert run(settled)[1]


def test_a_new_file_takes_the_full_path_and_is_published(settled: Project):
    settled.article("c.txt", title="C", web_url="https://a.example/c", topics=["AI"])
    report, idle = run(settled)
    assert not idle and report["files"]["new"] == 1 and report["articles"]["published"] == 3
    assert b"https://a.example/c" in settled.feed("topics/ai.rss")
    assert run(settled)[1]


@pytest.mark.parametrize("name", ["topics/ai.atom", "all.rss", "index.opml"])
def test_a_missing_feed_file_takes_the_full_path_and_is_written_again(settled: Project, name: str):
    before = settled.feed(name)
    (settled.feeds / name).unlink()
    report, idle = run(settled)
    assert not idle and report["feeds"]["written"] >= 1
    assert settled.feed(name) == before
    assert run(settled)[1]


def test_a_feed_of_a_topic_no_longer_shown_takes_the_full_path_and_is_removed(settled: Project):
    sql(
        settled,
        "INSERT INTO topic (key, name, slug, created_at, dirty) VALUES ('gone', 'Gone', 'gone', '2024-01-01', 0)",
    )
    (settled.feeds / "topics" / "gone.rss").write_bytes(settled.feed("topics/ai.rss"))
    report, idle = run(settled)
    assert not idle and report["feeds"]["removed"] == 1
    assert not (settled.feeds / "topics" / "gone.rss").exists()
    assert run(settled)[1]


def test_a_feed_file_feedworker_did_not_write_is_left_alone_by_the_quick_path(settled: Project):
    (settled.feeds / "topics" / "hand-made.rss").write_bytes(b"<rss/>")
    result = settled.cli("run", "--json")  # (run() would check that file as one of ours)
    assert finished_event(result.stderr).get("idle") is True
    assert (settled.feeds / "topics" / "hand-made.rss").read_bytes() == b"<rss/>"


def test_an_orphan_candidate_a_killed_run_left_takes_the_full_path(settled: Project):
    url = sql(settled, "SELECT url FROM article LIMIT 1")[0][0]
    sql(settled, f"INSERT INTO orphan_candidate (url) VALUES ('{url}')")
    report, idle = run(settled)
    assert not idle and report["status"] == "ok"
    assert sql(settled, "SELECT count(*) FROM orphan_candidate") == [(0,)]
    assert run(settled)[1]


def test_a_temporary_file_left_by_a_killed_write_takes_the_full_path_and_is_cleared(settled: Project):
    (settled.feeds / "topics" / ".feedworker-abc.tmp").write_bytes(b"<half")
    report, idle = run(settled)  # run() also checks that no temporary file is left
    assert not idle and report["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}
    assert run(settled)[1]


def test_a_dirty_topic_takes_the_full_path_and_is_rendered(settled: Project):
    sql(settled, "UPDATE topic SET dirty = 1 WHERE slug = 'space'")
    report, idle = run(settled)
    assert not idle and report["feeds"] == {"written": 0, "unchanged": 3, "removed": 0}
    assert sql(settled, "SELECT count(*) FROM topic WHERE dirty = 1") == [(0,)]
    assert run(settled)[1]


def test_a_dirty_all_feed_takes_the_full_path(settled: Project):
    sql(settled, "UPDATE meta SET value = '1' WHERE key = 'all_feeds_dirty'")
    report, idle = run(settled)
    assert not idle and report["feeds"] == {"written": 0, "unchanged": 3, "removed": 0}
    assert run(settled)[1]


def test_changed_feed_settings_take_the_full_path_and_every_feed_is_written(settled: Project):
    config = yaml.safe_load(settled.config.read_text())
    config["feeds"]["base_url"] = settled.base_url = "https://elsewhere.example/news/"
    settled.config.write_text(yaml.safe_dump(config))
    report, idle = run(settled)  # run() checks every feed names the new base URL
    assert not idle and report["feeds"]["written"] == len(settled.feed_files())
    assert run(settled)[1]
    config["feeds"]["title"] = "Other News"
    settled.config.write_text(yaml.safe_dump(config))
    report, idle = run(settled)
    assert not idle and b"Other News" in settled.feed("all.atom")


@pytest.mark.parametrize("status", ["failed", "running"])
def test_a_last_run_that_failed_or_was_killed_takes_the_full_path(settled: Project, status: str):
    if status == "running":  # what a run killed with SIGKILL leaves behind
        sql(settled, "INSERT INTO run (started_at, status) VALUES ('2024-01-01 00:00:00.000000', 'running')")
    else:
        sql(settled, "UPDATE run SET status = 'failed' WHERE id = (SELECT max(id) FROM run)")
    report, idle = run(settled)
    assert not idle and report["status"] == "ok" and report["files"]["unchanged"] == 3
    assert run(settled)[1]


def test_a_quarantined_file_that_stays_quarantined_keeps_the_run_quick(settled: Project):
    settled.write("bad.txt", "no front matter at all")
    report, idle = run(settled)
    assert not idle and report["files"]["quarantined"] == 1
    for _ in range(2):
        report, idle = run(settled)
        assert idle and report["files"]["quarantined"] == 1
        assert report["errors"] == [
            {"path": str(settled.inbox / "bad.txt"), "message": "front matter must start with a '---' line (line 1)"}
        ]
    settled.article("bad.txt", title="Fixed", web_url="https://a.example/fixed")
    report, idle = run(settled)
    assert not idle and report["files"]["quarantined"] == 0 and report["errors"] == []


def test_a_file_over_max_bytes_stays_quarantined_unread_on_the_quick_path(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox", "max_bytes": 2000}])
    project.article("a.txt", title="A", web_url="https://a.example/a")
    big = project.article("big.txt", title="Big", web_url="https://a.example/big", body="x" * 3000)
    first, idle = run(project)
    assert not idle and first["files"]["quarantined"] == 1
    assert first["errors"][0]["message"].startswith("larger than max_bytes")
    report, idle = run(project)
    assert idle and report["errors"] == first["errors"] and report["files"]["quarantined"] == 1
    big.write_text(big.read_text() + "y" * 1000)
    report, idle = run(project)
    assert not idle and report["files"]["changed"] == 1 and report["files"]["quarantined"] == 1
    project.article("big.txt", title="Big", web_url="https://a.example/big", body="now small")
    report, idle = run(project)
    assert not idle and report["files"]["quarantined"] == 0 and report["articles"]["published"] == 2


def test_a_database_of_a_newer_schema_is_refused_not_reported_as_unchanged(settled: Project):
    sql(settled, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    report, idle = run(settled, check=False)
    assert report["status"] == "failed" and "schema version 99" in report["message"]
    assert not idle


def test_with_fetching_on_a_cycle_is_idle_until_a_page_falls_due(tmp_path: Path):
    """Fetching is the shipped default: the deployed service must find nothing to do too."""
    from tests.test_enrich_run import ETAG, PageServer, fake_names

    with fake_names():
        pages = PageServer()
    try:
        project = settled_project(tmp_path, enrich={"fetch": True, "max_fetches": 5, "allow_private_networks": True})
        report, idle = run(project)
        assert idle and report["files"]["unchanged"] == 3  # no related page asked for

        project.article(
            "r.txt", title="R", web_url="https://a.example/r", topics=["AI"], related=[{"webUrl": pages.url("/og")}]
        )
        report, idle = run(project)
        assert not idle and report["enrich"]["fetched"] == 1 and pages.total == 1
        report, idle = run(project)
        assert idle and pages.total == 1  # fetched a moment ago: fresh for the ttl (a week)

        later = {"FEEDWORKER_CLOCK": (datetime.now(UTC) + timedelta(days=8)).isoformat()}
        report, idle = run(project, env=later)
        assert not idle and report["enrich"]["not_modified"] == 1 and pages.total == 2
        assert pages.headers[-1][1].get("if-none-match") == ETAG
    finally:
        pages.close()


def set_enrich(project: Project, **values: object) -> None:
    config = yaml.safe_load(project.config.read_text())
    config["enrich"] = {**config.get("enrich", {}), **values}
    project.config.write_text(yaml.safe_dump(config))


def test_pages_queued_while_no_fetch_was_allowed_are_fetched_once_it_is(tmp_path: Path):
    """max_fetches 0 queues pages without fetching: raised again, the queue is due at once."""
    from tests.test_enrich_run import PageServer, fake_names

    with fake_names():
        pages = PageServer()
    try:
        project = settled_project(tmp_path, enrich={"fetch": True, "max_fetches": 5, "allow_private_networks": True})
        set_enrich(project, max_fetches=0)
        project.article(
            "r.txt", title="R", web_url="https://a.example/r", topics=["AI"], related=[{"webUrl": pages.url("/og")}]
        )
        report, idle = run(project)
        assert not idle and pages.total == 0
        report, idle = run(project)
        assert idle  # nothing may be fetched: nothing to do
        set_enrich(project, max_fetches=5)
        report, idle = run(project)
        assert not idle and report["enrich"]["fetched"] == 1 and pages.total == 1
    finally:
        pages.close()


def test_an_unmounted_volume_is_reported_by_an_idle_run_as_by_a_working_one(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox"}, {"path": "../vol"}])
    volume = tmp_path / "vol"
    volume.mkdir()
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI"])
    (volume / "b.txt").write_text(article_text(title="B", web_url="https://a.example/b", topics=["AI"]))
    report, _ = run(project)
    assert report["articles"]["total"] == 2
    # The folder now lists nothing and is on another device than when its file was stored.
    sql(project, "UPDATE meta SET value = '999999' WHERE key = ?", "source_device:" + str(volume))
    (volume / "b.txt").unlink()
    idle_report, idle = run(project)
    assert idle and idle_report["files"]["deleted"] == 0
    assert [source["state"] for source in idle_report["sources"]] == ["ok", "empty"]
    assert [error["path"] for error in idle_report["errors"]] == [str(volume)]
    assert "a volume not mounted?" in idle_report["errors"][0]["message"]

    sql(project, "UPDATE run SET status = 'failed' WHERE id = (SELECT max(id) FROM run)")
    working_report, idle = run(project)
    assert not idle and stable(working_report) == stable(idle_report)


def test_a_clock_that_did_not_move_takes_the_full_path(tmp_path: Path):
    pinned = {"FEEDWORKER_CLOCK": "2020-01-01T00:00:00+00:00"}
    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI"])
    run(project, env=pinned)
    report, idle = run(project, env=pinned)  # changes stamped with this very time may still be spreading
    assert not idle and report["files"]["unchanged"] == 1
    report, idle = run(project)  # the clock moved on
    assert idle and report["files"]["unchanged"] == 1


def test_files_still_settling_keep_the_run_quick_until_they_settle(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox", "settle_s": 30}])
    old = project.article("old.txt", title="Old", web_url="https://a.example/old")
    os.utime(old, (time.time() - 60, time.time() - 60))
    run(project)
    fresh = project.article("fresh.txt", title="Fresh", web_url="https://a.example/fresh")
    report, idle = run(project)
    assert idle and report["files"] == {
        "seen": 2,
        "new": 0,
        "changed": 0,
        "unchanged": 1,
        "deleted": 0,
        "quarantined": 0,
    }
    os.utime(fresh, (time.time() - 60, time.time() - 60))
    report, idle = run(project)
    assert not idle and report["files"]["new"] == 1 and report["articles"]["total"] == 2


# --------------------------------------------------------------------------- the shared pieces


def test_plan_reads_classifies_by_the_stored_stat():
    def found(path: str, size: int, mtime_ns: int, max_bytes: int = 100) -> tuple[str, FoundFile]:
        return path, FoundFile(path, size, mtime_ns, max_bytes)

    scan = Scan(
        files=dict(
            [
                found("/in/same", 10, 1),
                found("/in/touched", 10, 2),
                found("/in/new", 5, 1),
                found("/in/big-new", 500, 1),
                found("/in/big-changed", 500, 9),
            ]
        ),
        unreadable_roots=["/locked"],
        unsettled={"/in/settling-known", "/in/settling-new"},
    )
    known = {
        "/in/same": (10, 1),
        "/in/touched": (10, 1),
        "/in/big-changed": (10, 1),
        "/in/settling-known": (3, 3),
        "/locked/kept": (1, 1),
        "/lockedness/gone": (1, 1),
        "/in/gone": (1, 1),
    }
    plan = plan_reads(scan, known)
    assert plan.counts == FileCounts(seen=7, new=2, changed=1, unchanged=2, deleted=2)
    assert plan.read == ["/in/touched", "/in/new"]
    assert plan.too_large == ["/in/big-new", "/in/big-changed"]
    assert plan.deleted == ["/lockedness/gone", "/in/gone"]
    assert not plan.idle
    unchanged = plan_reads(
        Scan(files=dict([found("/in/same", 10, 1)]), unsettled={"/in/settling-known"}),
        {"/in/same": (10, 1), "/in/settling-known": (3, 3)},
    )
    assert unchanged.idle and unchanged.counts.unchanged == 2


def test_the_time_text_of_the_plain_connection_is_the_one_sqlalchemy_writes():
    """An idle cycle writes its run row through sqlite3 (store.sqlite.db_time), the working
    cycle through SQLAlchemy's column type: both must write the same text."""
    import sqlalchemy as sa

    from worker.store.schema import UTCDateTime
    from worker.store.sqlite import db_time

    dialect = sa.create_engine("sqlite://").dialect
    to_text = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)  # SQLAlchemy's own, slow path
    for moment in (
        datetime(2024, 2, 29, 23, 59, 59, 5, tzinfo=UTC),
        datetime(2024, 3, 1, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 12, 0, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ):
        assert db_time(moment) == to_text(moment.astimezone(UTC).replace(tzinfo=None))
        assert UTCDateTime().bind_processor(dialect)(moment) == db_time(moment)
