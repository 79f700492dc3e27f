"""PostgreSQL as the store: a real database on 127.0.0.1 (one new database a test), the CLI in subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lxml import etree

from tests.conftest import POSTGRES_SERVER, ROOT, Project, fresh_postgres_database, make_project, run_cli

SERVER = POSTGRES_SERVER  # tests/test_migrate_to.py imports it from here
PINNED = {"FEEDWORKER_CLOCK": "2026-11-29T12:00:00+00:00"}


@pytest.fixture
def database() -> Iterator[str]:
    """A new, empty database, dropped afterwards: its SQLAlchemy URL."""
    with fresh_postgres_database() as url:
        yield url


def use_database(project: Project, url: str) -> None:
    config = yaml.safe_load(project.config.read_text())
    config["database"] = url
    project.config.write_text(yaml.safe_dump(config))


def twins(tmp_path: Path, url: str) -> tuple[Project, Project]:
    """The bundled examples, once on SQLite and once on PostgreSQL."""
    on_sqlite, on_postgres = make_project(tmp_path / "sqlite"), make_project(tmp_path / "postgres")
    for project in (on_sqlite, on_postgres):
        shutil.copytree(ROOT / "examples" / "inbox", project.inbox, dirs_exist_ok=True)
    use_database(on_postgres, url)
    return on_sqlite, on_postgres


def run(project: Project, env: dict[str, str] | None = None) -> tuple[dict[str, object], bool]:
    result = project.cli("run", "--json", env={**PINNED, **(env or {})})
    ends = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{") and "run.finished" in line]
    return json.loads(result.stdout), bool(ends and ends[-1].get("idle"))


def test_the_same_files_give_the_same_feeds_on_postgresql_as_on_sqlite(tmp_path: Path, database: str):
    on_sqlite, on_postgres = twins(tmp_path, database)
    for project in (on_sqlite, on_postgres):
        report, idle = run(project)
        assert report["status"] == "ok" and report["articles"] == {"total": 33, "published": 29} and not idle
    assert on_postgres.feed_files().keys() == on_sqlite.feed_files().keys()
    assert {name: data for name, (data, _) in on_postgres.feed_files().items()} == {
        name: data for name, (data, _) in on_sqlite.feed_files().items()
    }
    written = on_postgres.feed_files()
    report, idle = run(on_postgres, {"FEEDWORKER_CLOCK": "2026-11-29T12:00:01+00:00"})
    assert idle and report["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}
    assert on_postgres.feed_files() == written  # not even touched

    # An edit and a deletion, on both: the same feeds again.
    for project in (on_sqlite, on_postgres):
        edited = sorted(project.inbox.rglob("*.txt"))[3]
        edited.write_text(edited.read_text().replace("title:", "title: Edited", 1))
        sorted(project.inbox.rglob("*.txt"))[5].unlink()
        report, idle = run(project, {"FEEDWORKER_CLOCK": "2026-11-29T13:00:00+00:00"})
        assert report["files"]["changed"] == 1 and report["files"]["deleted"] == 1 and not idle
    assert {name: data for name, (data, _) in on_postgres.feed_files().items()} == {
        name: data for name, (data, _) in on_sqlite.feed_files().items()
    }
    statuses = [json.loads(project.cli("status", "--json").stdout) for project in (on_sqlite, on_postgres)]
    assert statuses[0]["articles"] == statuses[1]["articles"] and statuses[1]["articles"]["total"] == 32


def test_a_run_waits_for_a_cycle_holding_the_advisory_lock(tmp_path: Path, database: str):
    from worker.store.lock import cycle_lock, cycle_running

    project = make_project(tmp_path)
    use_database(project, database)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    assert run_cli("migrate", "--config", str(project.config)).returncode == 0
    assert cycle_running(database) is False
    with cycle_lock(database):
        assert cycle_running(database) is True
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--config", str(project.config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert process.poll() is None  # waiting for the lock
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and time.monotonic() - started >= 2
    assert "another cycle is running on this database; waiting" in err
    assert out.startswith("ok: 1 files (1 new")


def test_a_killed_cycle_releases_the_lock(tmp_path: Path, database: str):
    """The session ends with the process, and the advisory lock with it (kill -9)."""
    from worker.store.lock import cycle_running

    code = (
        "import sys, time\n"
        "from worker.store.lock import cycle_lock\n"
        f"with cycle_lock({database!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert cycle_running(database) is True
    finally:
        holder.kill()
        holder.wait(timeout=10)
    deadline = time.monotonic() + 10
    while cycle_running(database) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cycle_running(database) is False


def test_a_topic_new_in_a_batch_is_named_alike_on_both_databases(tmp_path: Path, database: str):
    """Two spellings of a new topic in one batch: which one names it must not depend on the
    order a database returns rows in."""
    on_sqlite, on_postgres = make_project(tmp_path / "sqlite"), make_project(tmp_path / "postgres")
    use_database(on_postgres, database)
    for project in (on_sqlite, on_postgres):
        older = project.article("1.txt", title="One", web_url="https://z.example/1", topics=["Économie"])
        os.utime(older, (1_600_000_000, 1_600_000_000))
        project.article("2.txt", title="Two", web_url="https://a.example/2", topics=["économie"])
        run(project)
    names = [
        etree.fromstring(project.feed("topics/economie.atom")).findtext("{http://www.w3.org/2005/Atom}title")
        for project in (on_sqlite, on_postgres)
    ]
    assert names[0] == names[1], names
