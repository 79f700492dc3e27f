"""Shared test fixtures: a project folder with a config, an inbox, a database and a feeds folder."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.feedcheck import assert_valid_feeds

pytest_plugins = ["tests.nodns"]  # no test resolves a name outside the machine

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "inbox" / "2021" / "01" / "000_5ffeefc380e2a43b.txt"
POSTGRES_SERVER = "postgresql://root@127.0.0.1:5432"  # trust auth, user root


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of the tests, dropped afterwards
    (sessions still on it included): its SQLAlchemy URL."""
    import psycopg

    name = f"feedworker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- both dialects
#
# A store, cycle or service test runs on both dialects without being rewritten: decorate it
# with @both_dialects() and take its store from the `dialect`: the `project` fixture, or
# `make_project(..., database=new_database())`, or `store_database(dialect)` for a fixture of
# a wider scope. On PostgreSQL each such store is a new database, dropped after the test;
# `Project.query` reads (and writes) either. Tests that stay SQLite-only say why in a comment.


def both_dialects(*, postgresql_xfail: str | None = None) -> pytest.MarkDecorator:
    """Run the test once on SQLite and once on PostgreSQL (ids `sqlite`, `postgresql`).

    `postgresql_xfail`: what differs on PostgreSQL (a finding, not a test to fix): that
    param is a strict xfail, so it fails the suite once the difference is gone.
    """
    marks = (
        [pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"PostgreSQL only: {postgresql_xfail}")]
        if postgresql_xfail
        else []
    )
    return pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=marks)], indirect=True)


@pytest.fixture(scope="module")  # a module-scoped fixture (a running service) may depend on it
def dialect(request: pytest.FixtureRequest) -> str:
    """The store's dialect for this test: `sqlite` unless @both_dialects() parametrises it."""
    return getattr(request, "param", "sqlite")


@contextmanager
def store_database(dialect: str) -> Iterator[str | None]:
    """The database URL of a new, empty store of `dialect`: None for SQLite (the project's
    own file, as the config has it), a new PostgreSQL database (dropped afterwards) else."""
    if dialect == "sqlite":
        yield None
        return
    assert dialect == "postgresql", dialect
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def new_database(dialect: str) -> Iterator[Callable[[], str | None]]:
    """Each call: the URL of one more new store of this test's dialect (see store_database)."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(store_database(dialect))


def store_rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """One statement (`:name` parameters) on the store at `url`, committed; its rows as tuples.

    sqlite3 on an SQLite file (as the tests always read it), SQLAlchemy with psycopg on
    PostgreSQL. Values are the driver's: SQLite gives booleans as 0/1 (equal to True/False)
    and times as text, PostgreSQL datetimes.
    """
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        try:
            with conn:
                return [tuple(row) for row in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@dataclass
class Project:
    root: Path
    config: Path
    inbox: Path
    feeds: Path
    database: Path  # the SQLite file, when `database_url` is None
    base_url: str = "http://feeds.example.test/feeds/"
    database_url: str | None = None  # the store the config names instead (PostgreSQL)

    @property
    def url(self) -> str:
        """The store's SQLAlchemy URL, whichever the dialect."""
        return self.database_url or f"sqlite:///{self.database}"

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """`sql` on the store, on either dialect (see store_rows)."""
        return store_rows(self.url, sql, **params)

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def article(self, name: str, **fields: Any) -> Path:
        return self.write(name, article_text(**fields))

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120):
        """`feedworker ARGS --config CONFIG` as a real subprocess."""
        return run_cli(*args, "--config", str(self.config), check=check, env=env, timeout=timeout)

    def run(self, *extra: str, check: bool = True) -> dict[str, Any]:
        """One cycle; returns the run report (and checks every feed on disk)."""
        result = self.cli("run", "--json", *extra, check=check)
        report = json.loads(result.stdout)
        if report["status"] == "ok":
            assert_valid_feeds(self.feeds, self.base_url)
        return report

    def feed(self, name: str) -> bytes:
        return (self.feeds / name).read_bytes()

    def feed_files(self) -> dict[str, tuple[bytes, int]]:
        """Every feed file -> (bytes, mtime_ns); not the feeds page (index.html), which is no feed
        (tests/test_index_page.py checks it)."""
        return {
            str(path.relative_to(self.feeds)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(self.feeds.rglob("*"))
            if path.is_file() and path != self.feeds / "index.html"
        }


def article_text(
    *,
    title: str = "A title",
    web_url: str = "https://news.example.com/a",
    topics: list[str] | str | None = ("AI",),
    body: str = "",
    **extra: Any,
) -> str:
    fields: dict[str, Any] = {"title": title, "webUrl": web_url}
    if topics is not None:
        fields["topics"] = list(topics) if not isinstance(topics, str) else topics
    fields.setdefault("excerpt", f"Excerpt of {title}")
    fields.setdefault("publishedDateTime", "2021-01-26T22:12:00Z")
    fields.update(extra)
    front = yaml.safe_dump(fields, allow_unicode=True, sort_keys=False)
    return f"---\n{front}---\n{body}"


def run_cli(*args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"feedworker {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def make_project(root: Path, *, database: str | None = None, **overrides: Any) -> Project:
    """A project under `root`; its store is `database` (a URL) if given, else data/feedworker.db."""
    project = Project(
        root=root,
        config=root / "config" / "feedworker.yaml",
        inbox=root / "inbox",
        feeds=root / "out" / "feeds",
        database=root / "data" / "feedworker.db",
        database_url=database,
    )
    project.inbox.mkdir(parents=True, exist_ok=True)
    config = {
        "sources": [{"path": "../inbox"}],
        "database": database or "../data/feedworker.db",
        "feeds": {"dir": "../out/feeds", "base_url": project.base_url, "title": "Test News", "max_entries": 50},
        "enrich": {"fetch": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    project.config.parent.mkdir(parents=True, exist_ok=True)
    project.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    return project


@pytest.fixture
def project(tmp_path: Path, new_database: Callable[[], str | None]) -> Project:
    """A project over a new store of the test's dialect (SQLite unless @both_dialects())."""
    return make_project(tmp_path, database=new_database())
