"""The store's schema: Alembic's history arrives at exactly the declared tables, only the cycle
and `feedworker migrate` write it, and readers (status, the HTTP server) never write at all.

The @both_dialects() tests run on a new PostgreSQL database too; the others are about the
SQLite file (its bytes, WAL, its flock, a store of feedworker 0.1, which only stored SQLite).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Project, both_dialects, make_project, store_rows
from tests.test_run import version_1_store
from worker.urls import page_cut


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def schema_differences(url: str) -> list:
    """What Alembic's autogenerate finds between the database at `url` and the declared tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from worker.store.db import connect
    from worker.store.schema import metadata

    engine = connect(url, readonly=True)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in the database's folder -> (bytes, mtime_ns)."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(folder.iterdir())}


def tables(database: Path) -> set[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}


def store_tables(project: Project) -> set[str]:
    """The tables of the project's store, on either dialect."""
    if project.dialect == "sqlite":
        return tables(project.database)
    return {name for (name,) in project.query("select tablename from pg_tables where schemaname = current_schema()")}


# --------------------------------------------------------------------------- the history


@both_dialects()
def test_a_new_database_migrated_to_head_has_exactly_the_declared_schema(tmp_path: Path, new_database):
    from worker.store.db import check_schema, connect, migrate

    url = new_database() or sqlite_url(tmp_path / "new" / "store.db")
    engine = connect(url)
    try:
        migrate(engine)
        assert check_schema(engine) is True
    finally:
        engine.dispose()
    assert schema_differences(url) == []
    if url.startswith("sqlite"):
        assert store_rows(url, "pragma journal_mode") == [("wal",)]
    store_rows(url, "drop index ix_page_next_fetch_at")  # the comparison does see a difference
    assert [difference[0] for difference in schema_differences(url)] == ["add_index"]


def test_the_schema_revision_is_alembics_head_and_the_history_numbers_the_versions():
    from alembic.script import ScriptDirectory

    from worker.store.db import alembic_config
    from worker.store.version import SCHEMA_REVISION, SCHEMA_VERSION, version_of

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [SCHEMA_REVISION]
    history = [revision.revision for revision in reversed(list(script.walk_revisions()))]
    assert len(history) == SCHEMA_VERSION  # one line of revisions, `000N_...` is version N
    assert [version_of(revision) for revision in history] == list(range(1, SCHEMA_VERSION + 1))
    # version.py, lock.py and sqlite.py load before anything decides whether SQLAlchemy is needed.
    code = (
        "import sys\n"
        "import worker.store.version, worker.store.lock, worker.store.sqlite, worker.store.errors\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel', 'alembic')]\n"
        "assert not heavy, heavy\n"
        "assert worker.store.version.SCHEMA_REVISION\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_a_version_1_store_is_upgraded_by_migrate_to_exactly_the_declared_schema(tmp_path: Path):
    project = version_1_store(tmp_path)
    assert "alembic_version" not in tables(project.database)
    result = project.cli("migrate")
    assert result.stdout == "schema upgraded from version 1 (0001_initial) to version 6 (0006_archived_entries)\n"
    assert schema_differences(project.url) == []
    with sqlite3.connect(project.database) as conn:
        assert conn.execute("select version_num from alembic_version").fetchall() == [("0006_archived_entries",)]
        assert conn.execute("select value from meta where key = 'schema_version'").fetchall() == [("6",)]
    again = project.cli("migrate")
    assert again.stdout == "schema already at version 6 (0006_archived_entries): nothing to do\n"
    report = project.run()  # the store the command upgraded is the run's
    assert report["status"] == "ok" and report["files"]["new"] == 0 and report["files"]["changed"] == 0


@both_dialects()
def test_a_store_of_schema_3_from_before_alembic_is_stamped_without_a_change(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    project.query("drop table alembic_version")  # as feedworker stored it before Alembic
    assert project.cli("status").returncode == 0  # the same schema: readable as it is
    assert "alembic_version" not in store_tables(project)
    assert project.cli("migrate").stdout == "schema already at version 6 (0006_archived_entries): nothing to do\n"
    assert project.query("select version_num from alembic_version") == [("0006_archived_entries",)]


# SQLite-only, as every test of a feedworker 0.1 store (version_1_store).
def test_an_upgrade_that_fails_part_way_leaves_the_store_as_it_was(tmp_path: Path):
    project = version_1_store(tmp_path)
    with sqlite3.connect(project.database) as conn:
        # Revision 3 creates this table: the upgrade fails after revision 2 dropped columns and made tables.
        conn.execute("create table orphan_candidate (something int)")
    conn.close()
    before = sqlite3.connect(project.database).execute("select sql from sqlite_master order by name").fetchall()
    result = project.cli("migrate", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "orphan_candidate" in result.stderr
    with sqlite3.connect(project.database) as conn:
        assert conn.execute("select sql from sqlite_master order by name").fetchall() == before
        assert conn.execute("select value from meta where key = 'schema_version'").fetchall() == [("1",)]


def test_the_ddl_transaction_takes_its_create_table_back_on_failure(tmp_path: Path):
    from worker.store import sqlite as dialect
    from worker.store.db import connect, migrate

    engine = connect(sqlite_url(tmp_path / "store.db"))
    try:
        migrate(engine)
        with engine.connect() as conn, pytest.raises(RuntimeError), dialect.ddl_transaction(conn):
            conn.exec_driver_sql("CREATE TABLE made_then_undone (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO made_then_undone VALUES (1)")
            raise RuntimeError("killed here")
    finally:
        engine.dispose()
    assert "made_then_undone" not in tables(tmp_path / "store.db")


@both_dialects()
def test_migrate_at_head_reads_only_and_does_not_load_alembic(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    code = (
        "import sys\n"
        "from worker.store.db import connect, migrate\n"
        f"engine = connect({project.url!r})\n"
        "migrate(engine)\n"
        "engine.dispose()\n"
        "assert not [m for m in sys.modules if m.startswith('alembic')]\n"
    )
    if project.dialect == "sqlite":  # reads only: the file's bytes and time stay
        before = project.database.stat().st_mtime_ns, project.database.read_bytes()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    if project.dialect == "sqlite":
        assert (project.database.stat().st_mtime_ns, project.database.read_bytes()) == before


# --------------------------------------------------------------------------- readers never write


def test_status_on_an_older_store_writes_nothing_and_says_how_to_upgrade(tmp_path: Path):
    project = version_1_store(tmp_path)
    before = files_of(project.database.parent)
    time.sleep(0.01)
    for args in (("status",), ("status", "--json")):
        result = project.cli(*args, check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            "Error: the database has schema version 1, older than this feedworker's 6: "
            "run `feedworker migrate` or a run to upgrade it\n"
        )
    assert files_of(project.database.parent) == before  # the same files, bytes and times: no -wal, no -shm
    assert "alembic_version" not in tables(project.database)
    project.cli("migrate")
    assert project.cli("status").returncode == 0


# SQLite-only: "nothing written" is seen as the same files, bytes and times, in the database's folder.
def test_status_and_the_http_reader_write_nothing_to_a_current_store(tmp_path: Path):
    from worker.config import load_config
    from worker.service.http import StoreReader
    from worker.store import runs

    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    report = project.run()
    before = files_of(project.database.parent)
    time.sleep(0.01)
    assert project.cli("status").returncode == 0
    reader = StoreReader()
    try:
        assert reader.read(load_config(project.config), runs.last_report)["run_id"] == report["run_id"]
    finally:
        reader.close()
    after = files_of(project.database.parent)
    assert after == before


def test_the_http_reader_keeps_one_read_only_engine_and_refuses_an_older_store(tmp_path: Path, monkeypatch):
    from worker.config import load_config
    from worker.service.http import StoreReader
    from worker.store import db, runs

    made = []
    real_connect = db.connect

    def counting_connect(*args, **kwargs):
        made.append(kwargs.get("readonly"))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(db, "connect", counting_connect)
    project = version_1_store(tmp_path)
    config = load_config(project.config)
    before = files_of(project.database.parent)
    reader = StoreReader()
    try:
        assert reader.read(config, runs.last_report) is None  # schema 1: refused (and logged), not read
        assert files_of(project.database.parent) == before
        project.cli("migrate")
        project.run()
        assert [reader.read(config, runs.last_report)["status"] for _ in range(3)] == ["ok"] * 3
        with reader._engine.connect() as conn, pytest.raises(Exception, match="readonly"):
            conn.exec_driver_sql("DELETE FROM run")
    finally:
        reader.close()
    assert made == [True]  # one engine for every request, read-only


# SQLite-only: a PostgreSQL database exists before feedworker (it creates tables, not databases).
def test_readers_never_create_the_database(tmp_path: Path):
    from worker.store.db import check_schema, connect
    from worker.store.errors import StoreError

    database = tmp_path / "data" / "store.db"
    for readonly in (True, False):
        engine = connect(sqlite_url(database), readonly=readonly)
        with pytest.raises(
            StoreError, match=f"^no database at {database} yet: a run or `feedworker migrate` creates it$"
        ):
            check_schema(engine)
        engine.dispose()
    assert not (tmp_path / "data").exists()

    project = make_project(tmp_path / "fresh")
    result = project.cli("status")
    assert "last run: never" in result.stdout
    assert not project.database.parent.exists()


@both_dialects()
def test_a_newer_store_is_refused_with_one_line_by_status_migrate_and_run(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    project.query("update alembic_version set version_num = '0007_from_the_future'")
    project.query("update meta set value = '7' where key = 'schema_version'")
    if project.dialect == "sqlite":
        before = files_of(project.database.parent)
    for command in ("status", "migrate", "run"):
        result = project.cli(command, check=False)
        assert result.returncode == 1, command
        assert (
            result.stderr.strip().splitlines()[-1]
            == "Error: the database has schema version 7; this feedworker knows 6"
        )
    if project.dialect == "sqlite":
        assert files_of(project.database.parent)["feedworker.db"] == before["feedworker.db"]
    assert project.query("select version_num from alembic_version") == [("0007_from_the_future",)]
    assert project.query("select count(*) from run") == [(1,)]  # the refused run stored nothing


# --------------------------------------------------------------------------- feedworker migrate


@both_dialects()
def test_migrate_creates_a_new_store_and_refuses_to(project: Project):
    result = project.cli("migrate")
    assert result.stdout == "schema created: version 6 (0006_archived_entries)\n"
    assert schema_differences(project.url) == []
    refused = project.cli("migrate", "--to", "sqlite:///x.db", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: migrate --to copies into a PostgreSQL database")


def test_migrate_waits_for_a_running_cycle(tmp_path: Path):
    from worker.store.lock import cycle_lock

    project = version_1_store(tmp_path)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
    with cycle_lock(sqlite_url(project.database)):
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "migrate", "--config", str(project.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=environment,
        )
        time.sleep(1.5)
        assert process.poll() is None  # waiting for the lock
        assert "alembic_version" not in tables(project.database)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "another cycle is running on this database; waiting for it to finish" in stderr
    assert stdout == "schema upgraded from version 1 (0001_initial) to version 6 (0006_archived_entries)\n"


# SQLite-only: the state its driver's CREATE TABLE outside the transaction left (not PostgreSQL's DDL).
def test_a_first_run_killed_with_tables_but_no_version_row_is_completed_by_migrate(tmp_path: Path):
    project: Project = make_project(tmp_path)
    project.database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(project.database) as conn:  # what a killed first run of an earlier feedworker left
        conn.execute("CREATE TABLE meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY (key))")
        conn.execute(
            "CREATE TABLE run (id INTEGER NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME,"
            " status VARCHAR NOT NULL, report_json VARCHAR, PRIMARY KEY (id))"
        )
    conn.close()
    assert "last run: never" in project.cli("status").stdout  # no schema yet: as before any run
    assert project.cli("migrate").stdout == "schema created: version 6 (0006_archived_entries)\n"
    assert schema_differences(project.url) == []


def test_a_reader_closing_while_a_cycle_opens_the_store_never_deletes_the_wal_it_writes(project: Project):
    """A cycle in `serve` opens the store while the server's reader engine has it open. Were the
    database file opened and closed by path then (as creating it once did), the kernel would drop
    every POSIX lock of the process on it: a `status` closing in another process next takes
    itself for the last connection and deletes the -wal file the service goes on writing into,
    and every later write of the service is lost."""
    from worker.store.db import connect, migrate

    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    url = project.url
    reader = connect(url)  # as serve's HTTP reader
    writer = None
    try:
        with reader.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM article").fetchone()
            writer = connect(url)  # as the next cycle: the database exists
            migrate(writer)  # every cycle starts with it: at head, it reads only
            probe = (
                "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM article').fetchone()"
            )
            subprocess.run([sys.executable, "-c", probe, str(project.database)], check=True)  # `status`, closing
            with writer.begin() as write:
                write.exec_driver_sql("INSERT INTO meta (key, value) VALUES ('wal-test', 'kept')")
        seen = store_rows(url, "SELECT value FROM meta WHERE key = 'wal-test'")  # by another connection
        assert seen == [("kept",)]
        assert os.path.exists(str(project.database) + "-wal")
    finally:
        reader.dispose()
        if writer is not None:
            writer.dispose()
    # And after every connection of this process closed, the write is in the database file.
    assert store_rows(url, "SELECT value FROM meta WHERE key = 'wal-test'") == [("kept",)]


@both_dialects()
def test_a_store_of_schema_4_is_upgraded_with_every_feed_as_it_was_and_following_later_changes(project: Project):
    """Schema 5 copies each article's place in its topics' feeds (shown, published_at, url) into
    article_topic. A store of schema 4 (drafts and a removed article among its articles) is
    upgraded by `feedworker migrate`: the next run writes no feed, and later changes (a draft
    published, an article removed, a date moved) show in the topic feeds as in a new store's."""
    project.article("a.txt", title="Alpha", web_url="https://a.example/a", topics=["AI", "Space"])
    project.article(
        "b.txt", title="Beta", web_url="https://b.example/b", topics=["AI"], publishedDateTime="2021-01-27T08:00:00Z"
    )
    project.article("d.txt", title="Draft", web_url="https://d.example/d", topics=["Space"], published=False)
    project.article("g.txt", title="Gone", web_url="https://g.example/g", topics=["AI"])
    project.run()
    (project.inbox / "g.txt").unlink()
    project.run()
    before = project.feed_files()
    schema_4 = [
        (
            "CREATE TABLE article_topic_v4 (article_id INTEGER NOT NULL REFERENCES article (id) ON DELETE CASCADE,"
            " topic_id INTEGER NOT NULL REFERENCES topic (id), PRIMARY KEY (article_id, topic_id))"
        ),
        "INSERT INTO article_topic_v4 SELECT article_id, topic_id FROM article_topic",
        "DROP TABLE article_topic",
        "ALTER TABLE article_topic_v4 RENAME TO article_topic",
        "CREATE INDEX ix_article_topic_topic_id ON article_topic (topic_id)",
        "DROP INDEX ix_article_updated_at",
        "DROP INDEX ix_source_file_state",
        "ALTER TABLE article DROP COLUMN content_at",
        "UPDATE alembic_version SET version_num = '0004_replicas'",
        "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
    ]
    for statement in schema_4:
        project.query(statement)
    assert project.cli("migrate").stdout == (
        "schema upgraded from version 4 (0004_replicas) to version 6 (0006_archived_entries)\n"
    )
    assert schema_differences(project.url) == []
    assert sorted(project.query("SELECT url, shown FROM article_topic")) == [
        ("https://a.example/a", True),
        ("https://a.example/a", True),
        ("https://b.example/b", True),
        ("https://d.example/d", False),
        ("https://g.example/g", False),
    ]
    report = project.run()
    assert report["feeds"]["written"] == 0 and project.feed_files() == before

    project.article("d.txt", title="Draft", web_url="https://d.example/d", topics=["Space"])  # published now
    (project.inbox / "a.txt").unlink()
    project.article(
        "b.txt", title="Beta", web_url="https://b.example/b", topics=["AI"], publishedDateTime="2020-01-27T08:00:00Z"
    )
    project.run()
    fresh = make_project(project.root / "fresh")
    for path in sorted(project.inbox.iterdir()):
        (fresh.inbox / path.name).write_bytes(path.read_bytes())
    fresh.run()
    for name in ("topics/ai.atom", "topics/space.atom"):
        titles = [line.strip() for line in project.feed(name).splitlines() if b"<title" in line][1:]
        assert titles == [line.strip() for line in fresh.feed(name).splitlines() if b"<title" in line][1:], name
    assert b"Draft" in project.feed("topics/space.atom") and b"Alpha" not in project.feed("topics/space.atom")


@both_dialects()
def test_a_store_of_schema_5_is_upgraded_and_its_archive_pages_rendered_again(project: Project):
    """Schema 6 leaves reverse links out of archive pages (`article.content_at`) and ends pages
    where their articles' URLs say (`article_topic.cut`). The upgrade makes the next run render
    every archive page again: a page as schema 5 wrote it (here, one whose bytes differ) is
    replaced by the page a new store writes; the current feeds stay."""
    project.config.write_text(project.config.read_text().replace("max_entries: 50", "max_entries: 2"))
    for number in range(6):
        project.article(
            f"a{number}.txt",
            title=f"Story {number}",
            web_url=f"https://news.example.com/{number}",
            publishedDateTime=f"2021-01-0{number + 1}T08:00:00Z",
            related=[{"webUrl": "https://news.example.com/0"}] if number == 5 else [],
        )
    project.run()
    fresh = project.feed_files()
    page = project.feeds / "archive" / "ai" / "1.atom"
    page.write_bytes(page.read_bytes().replace(b"Story 0", b"Story 0, linked from Story 5"))
    if project.database_url:  # the feeds are documents in the store, the folder their copy
        project.query("UPDATE feed_document SET etag = 'as schema 5 wrote it' WHERE path = 'archive/ai/1.atom'")
    for statement in [
        "ALTER TABLE article DROP COLUMN content_at",
        "DROP INDEX ix_article_topic_feed",
        "ALTER TABLE article_topic DROP COLUMN cut",
        "CREATE INDEX ix_article_topic_feed ON article_topic (topic_id, shown, published_at, url)",
        "UPDATE alembic_version SET version_num = '0005_topic_feed_index'",
        "UPDATE meta SET value = '5' WHERE key = 'schema_version'",
    ]:
        project.query(statement)
    assert project.cli("migrate").stdout == (
        "schema upgraded from version 5 (0005_topic_feed_index) to version 6 (0006_archived_entries)\n"
    )
    assert schema_differences(project.url) == []
    assert project.query("SELECT count(*) FROM article WHERE content_at = updated_at") == [(6,)]
    assert all(cut == page_cut(url) for url, cut in project.query("SELECT url, cut FROM article_topic"))
    report = project.run()
    assert report["feeds"]["written"] == 1
    assert {name: data for name, (data, _) in project.feed_files().items()} == {
        name: data for name, (data, _) in fresh.items()
    }
