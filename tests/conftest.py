"""Shared test fixtures: a project folder with a config, an inbox, a database and a feeds folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@dataclass
class Project:
    root: Path
    config: Path
    inbox: Path
    feeds: Path
    database: Path
    base_url: str = "http://feeds.example.test/feeds/"

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
        """Every feed file -> (bytes, mtime_ns)."""
        return {
            str(path.relative_to(self.feeds)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(self.feeds.rglob("*"))
            if path.is_file()
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


def make_project(root: Path, **overrides: Any) -> Project:
    project = Project(
        root=root,
        config=root / "config" / "feedworker.yaml",
        inbox=root / "inbox",
        feeds=root / "out" / "feeds",
        database=root / "data" / "feedworker.db",
    )
    project.inbox.mkdir(parents=True, exist_ok=True)
    config = {
        "sources": [{"path": "../inbox"}],
        "database": "../data/feedworker.db",
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
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path)
