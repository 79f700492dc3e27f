"""`feedworker migrate --to URL`: an SQLite store copied into an empty PostgreSQL database (a new
real database a test), the CLI in subprocesses."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, Project, fresh_postgres_database, make_project
from tests.test_postgres import run, use_database


@pytest.fixture
def database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards: its SQLAlchemy URL."""
    with fresh_postgres_database() as url:
        yield url


LATER = {"FEEDWORKER_CLOCK": "2026-11-29T12:00:01+00:00"}


def examples_on_sqlite(tmp_path: Path) -> Project:
    """The bundled examples, run once on SQLite."""
    project = make_project(tmp_path)
    shutil.copytree(ROOT / "examples" / "inbox", project.inbox, dirs_exist_ok=True)
    report, _ = run(project)
    assert report["status"] == "ok" and report["articles"] == {"total": 33, "published": 29}
    return project


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlite_rows(project: Project, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(project.database) as conn:
        rows = conn.execute(query).fetchall()
    conn.close()
    return rows


def postgres_rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq(url)) as conn:
        return conn.execute(query).fetchall()


# What a store holds, read alike from both databases (times as the text SQLite keeps).
CONTENT = {
    "article": "SELECT id, url, web_url, title, is_published, removed FROM article ORDER BY id",
    "topic": "SELECT id, key, name, slug FROM topic ORDER BY id",
    "source_file": "SELECT id, path, size, mtime_ns, hash, state, article_url FROM source_file ORDER BY id",
    "article_topic": "SELECT article_id, topic_id FROM article_topic ORDER BY article_id, topic_id",
    "related_item": "SELECT article_id, position, url FROM related_item ORDER BY article_id, position",
    "meta": "SELECT key, value FROM meta ORDER BY key",
    "run": "SELECT id, status, report_json FROM run ORDER BY id",
}
TIMES = "SELECT id, published_at, first_seen, updated_at FROM article ORDER BY id"


def times_of(project: Project) -> list[tuple[object, ...]]:
    """TIMES from the SQLite store, its text read as the naive UTC datetimes PostgreSQL keeps."""
    return [(row[0], *(datetime.fromisoformat(str(value)) for value in row[1:])) for row in sqlite_rows(project, TIMES)]


def comparable(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """SQLite keeps booleans as 0/1 and times as text: compare as text."""
    return [tuple(str(int(value)) if isinstance(value, bool) else str(value) for value in row) for row in rows]


def test_a_copied_store_runs_on_postgresql_without_rewriting_a_feed(tmp_path: Path, database: str):
    project = examples_on_sqlite(tmp_path)
    feeds = project.feed_files()
    stored = {name: comparable(sqlite_rows(project, query)) for name, query in CONTENT.items()}

    result = project.cli("migrate", "--to", database)
    assert result.stdout == f"copied 33 articles, 33 files, 12 topics, 0 pages, 1 run to {database}\n"
    assert {name: comparable(postgres_rows(database, query)) for name, query in CONTENT.items()} == stored
    assert postgres_rows(database, TIMES) == times_of(project)
    assert postgres_rows(database, "SELECT version_num FROM alembic_version") == sqlite_rows(
        project, "SELECT version_num FROM alembic_version"
    )

    use_database(project, database)  # the one-line switch
    report, idle = run(project, LATER)
    assert report["status"] == "ok" and report["articles"] == {"total": 33, "published": 29}
    assert report["feeds"]["written"] == 0 and report["files"]["unchanged"] == 33 and report["files"]["new"] == 0
    assert idle  # nothing to do at all: the copy is the store the SQLite runs left
    assert project.feed_files() == feeds  # the same bytes, not even touched
    assert len(postgres_rows(database, "SELECT id FROM run")) == 2
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["articles"]["total"] == 33 and status["topics"] == 12


def test_a_new_article_after_the_copy_takes_the_next_ids(tmp_path: Path, database: str):
    project = examples_on_sqlite(tmp_path)
    project.cli("migrate", "--to", database)
    use_database(project, database)
    project.article(
        "new.txt", title="New after the copy", web_url="https://new.example/copied", topics=["Brand new topic"]
    )
    report, _ = run(project, LATER)
    assert report["status"] == "ok" and report["files"]["new"] == 1
    assert report["articles"] == {"total": 34, "published": 30}
    assert report["feeds"]["written"] > 0
    for table, before in (("article", 33), ("source_file", 33), ("topic", 12), ("run", 1)):
        ids = [row[0] for row in postgres_rows(database, f"SELECT id FROM {table} ORDER BY id")]
        assert len(ids) == len(set(ids)) and max(ids) > before, (table, ids)
    assert b"New after the copy" in project.feed("all.atom")
    assert b"New after the copy" in project.feed(f"topics/{_slug(database, 'brand new topic')}.atom")


def _slug(url: str, key: str) -> str:
    rows = postgres_rows(url, f"SELECT slug FROM topic WHERE key = '{key}'")
    assert len(rows) == 1
    return str(rows[0][0])


def test_a_database_that_is_not_empty_is_refused_and_left_as_it_was(tmp_path: Path, database: str):
    project = examples_on_sqlite(tmp_path)
    project.cli("migrate", "--to", database)
    before = {name: postgres_rows(database, query) for name, query in CONTENT.items()}
    project.article("more.txt", title="More", web_url="https://more.example/m")
    run(project, LATER)  # the SQLite store moves on

    refused = project.cli("migrate", "--to", database, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        f"Error: the database {database} already holds a feedworker store: "
        "migrate --to copies only into an empty database\n"
    )
    assert {name: postgres_rows(database, query) for name, query in CONTENT.items()} == before

    # Tables of its own, without Alembic's version: refused too, and none of them touched.
    with psycopg.connect(libpq(database), autocommit=True) as conn:
        conn.execute("DROP TABLE alembic_version")
    refused = project.cli("migrate", "--to", database, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith(f"Error: the database {database} already holds")
    assert len(refused.stderr.splitlines()) == 1 and "feedworker tables (article, " in refused.stderr
    assert {name: postgres_rows(database, query) for name, query in CONTENT.items()} == before


def line_within(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line of the process's stderr, without its newline; fails after `timeout` s."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    return process.stderr.readline().rstrip("\n")


def test_the_copy_waits_for_a_cycle_on_either_database(tmp_path: Path, database: str):
    from worker.store.lock import cycle_lock

    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    source = f"sqlite:///{project.database}"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
    with cycle_lock(database):
        source_lock = contextlib.ExitStack()
        source_lock.enter_context(cycle_lock(source))
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "migrate", "--to", database, "--config", str(project.config)],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Each wait says so on a line of its own (whatever time the process takes to start).
        assert line_within(process, 60) == f"feedworker: a cycle is running on {source}; waiting for it to finish"
        source_lock.close()
        assert line_within(process, 60) == f"feedworker: a cycle is running on {database}; waiting for it to finish"
        time.sleep(0.5)
        assert process.poll() is None  # still waiting for the PostgreSQL database's cycle
        assert postgres_rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err == ""  # nothing more was said
    assert out == f"copied 1 article, 1 file, 1 topic, 0 pages, 1 run to {database}\n"


def test_a_password_in_the_url_is_never_shown(tmp_path: Path, database: str):
    project = examples_on_sqlite(tmp_path)
    with_password = database.replace("postgresql+psycopg://root@", "postgresql+psycopg://root:s3cret@", 1)
    shown = database.replace("postgresql+psycopg://root@", "postgresql+psycopg://root:***@", 1)
    copied = project.cli("migrate", "--to", with_password)  # trust authentication: the password is not asked for
    assert copied.stdout.endswith(f" to {shown}\n") and "s3cret" not in copied.stdout + copied.stderr
    refused = project.cli("migrate", "--to", with_password, check=False)
    assert refused.returncode == 1 and f"the database {shown} already holds" in refused.stderr
    unreachable = with_password.replace("127.0.0.1:5432", "127.0.0.1:9")  # nothing listens there
    failed = project.cli("migrate", "--to", unreachable, check=False)
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
    assert "root:***@127.0.0.1:9" in failed.stderr
    for result in (copied, refused, failed):
        assert "s3cret" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "sqlite:///{root}/copy.db",
            (
                "Error: migrate --to copies into a PostgreSQL database (postgresql+psycopg://user@host/database), "
                "not sqlite:///{root}/copy.db\n"
            ),
        ),
        (
            "mysql+pymysql://root:s3cret@127.0.0.1/feedworker",
            (
                "Error: migrate --to copies into a PostgreSQL database (postgresql+psycopg://user@host/database), "
                "not mysql+pymysql://root:***@127.0.0.1/feedworker\n"
            ),
        ),
        (
            "s3cret",
            (
                "Error: migrate --to: not a database URL; a PostgreSQL one looks like "
                "postgresql+psycopg://user@host/database\n"
            ),
        ),
    ],
)
def test_a_target_that_is_not_postgresql_is_refused(tmp_path: Path, url: str, message: str):
    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    result = project.cli("migrate", "--to", url.format(root=tmp_path), check=False)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message.format(root=tmp_path))
    assert not (tmp_path / "copy.db").exists()


def test_the_source_must_exist_and_be_at_this_schema(tmp_path: Path, database: str):
    project = make_project(tmp_path)
    missing = project.cli("migrate", "--to", database, check=False)
    assert missing.returncode == 1
    assert missing.stderr == f"Error: no database at {project.database}: there is no store to copy\n"
    assert not project.database.exists()

    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    with sqlite3.connect(project.database) as conn:  # as if an older feedworker had left it
        conn.execute("UPDATE alembic_version SET version_num = '0003_orphan_candidate'")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()
    older = project.cli("migrate", "--to", database, check=False)
    assert older.returncode == 1 and len(older.stderr.splitlines()) == 1
    assert older.stderr.startswith(f"Error: cannot copy {project.database}: the database has schema version 3")
    assert "run `feedworker migrate`" in older.stderr
    assert postgres_rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []

    use_database(project, database)  # a PostgreSQL database is not a store to copy from
    other = project.cli("migrate", "--to", database, check=False)
    assert other.returncode == 1 and other.stderr == (
        f"Error: migrate --to copies an SQLite store; the database {database} is not one\n"
    )


def test_a_failed_copy_leaves_the_database_empty(tmp_path: Path, database: str):
    """A row PostgreSQL refuses (a NUL in a text, which an SQLite store edited by hand may hold)
    fails the copy part-way: the schema and the rows copied before it go too, and the same
    command succeeds once the row is fixed."""
    project = examples_on_sqlite(tmp_path)
    with sqlite3.connect(project.database) as conn:
        title = conn.execute("SELECT title FROM article WHERE id = (SELECT max(id) FROM article)").fetchone()[0]
        conn.execute("UPDATE article SET title = 'a' || char(0) || 'b' WHERE id = (SELECT max(id) FROM article)")
    conn.close()
    failed = project.cli("migrate", "--to", database, check=False)
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
    assert failed.stderr.startswith(f"Error: copying into {database} failed, nothing was written: ")
    assert postgres_rows(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
    with sqlite3.connect(project.database) as conn:
        conn.execute("UPDATE article SET title = ? WHERE id = (SELECT max(id) FROM article)", (title,))
    conn.close()
    assert project.cli("migrate", "--to", database).stdout.startswith("copied 33 articles, ")


def test_tables_are_copied_in_bounded_chunks(tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch):
    """Keyset chunks, composite keys included: every row once, whatever the chunk size."""
    from worker.store import transfer

    project = examples_on_sqlite(tmp_path)
    with sqlite3.connect(project.database) as conn:  # times to the microsecond
        conn.execute(
            "UPDATE article SET first_seen = '2021-02-03 04:05:06.789012', updated_at = '2021-02-03 04:05:07.000001'"
        )
    conn.close()
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 7)
    monkeypatch.setattr(transfer, "_FIRST_CHUNK_ROWS", 3)
    seen: dict[str, list[int]] = {}
    copied = transfer.copy_store(
        f"sqlite:///{project.database}",
        database,
        busy_timeout_s=5,
        progress=lambda table, rows: seen.setdefault(table, []).append(rows),
    )
    for table, query in CONTENT.items():
        rows = sqlite_rows(project, query)
        assert copied[table] == len(rows) and comparable(postgres_rows(database, query)) == comparable(rows), table
    assert postgres_rows(database, TIMES) == times_of(project)
    related = seen["related_item"]
    assert related[0] == 3 and all(later - earlier <= 7 for earlier, later in itertools.pairwise(related))
    assert related[-1] == copied["related_item"] > 7


def test_only_feedworker_s_own_feed_files_become_served_documents(tmp_path: Path, database: str):
    project = examples_on_sqlite(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("postgresql+psycopg://app:S3cretPassw0rd@db/feeds\n")
    topics = project.feeds / "topics"
    (topics / "leak.rss").symlink_to(secret)  # a link planted in the feeds folder
    (topics / "other.rss").write_text("<rss version='2.0'><channel/></rss>")  # someone else's feed
    (topics / "privacy.rss").unlink()
    (topics / "privacy.rss").symlink_to(secret)  # one of ours, replaced by a link

    project.cli("migrate", "--to", database)
    paths = {path for (path,) in postgres_rows(database, "SELECT path FROM feed_document")}
    assert "topics/leak.rss" not in paths and "topics/other.rss" not in paths
    assert "topics/privacy.rss" not in paths and "topics/privacy.atom" in paths
    bodies = postgres_rows(database, "SELECT body FROM feed_document")
    assert not any(b"S3cret" in bytes(body) for (body,) in bodies)

    use_database(project, database)
    report, _ = run(project, LATER)
    assert report["status"] == "ok" and report["feeds"]["written"] == 1  # topics/privacy.rss, rendered again
    assert "topics/leak.rss" not in {path for (path,) in postgres_rows(database, "SELECT path FROM feed_document")}


def test_archive_pages_are_copied_and_the_next_cycle_on_postgresql_is_idle(tmp_path: Path, database: str):
    project = make_project(tmp_path, feeds={"max_entries": 3})
    shutil.copytree(ROOT / "examples" / "inbox", project.inbox, dirs_exist_ok=True)
    run(project)
    pages = {name: data for name, (data, _) in project.feed_files().items() if name.startswith("archive/")}
    assert "archive/ai/1.atom" in pages and len(pages) > 5  # AI has 11 articles: 3 pages

    project.cli("migrate", "--to", database)
    stored = dict(postgres_rows(database, "SELECT path, body FROM feed_document WHERE path LIKE 'archive/%'"))
    assert {path: bytes(body) for path, body in stored.items()} == pages
    use_database(project, database)
    for _ in range(2):  # the copy, and then the store PostgreSQL runs left: nothing to do
        report, idle = run(project, LATER)
        assert idle and report["feeds"]["written"] == 0
