"""FEEDWORKER_DATABASE_FILE: the database URL read from a file (a container secret), never shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import Project

SECRET = "s3cr3t-pass-word"


def secret_file(tmp_path: Path, text: str, name: str = "database_url") -> Path:
    path = tmp_path / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_the_database_url_is_read_from_the_file_it_names(project: Project, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere" / "store.db"
    env = {"FEEDWORKER_DATABASE_FILE": str(secret_file(tmp_path, f"sqlite:///{elsewhere}\n"))}
    project.article("a.txt", title="A", web_url="https://a.example/a")
    report = json.loads(project.cli("run", "--json", env=env).stdout)
    assert report["status"] == "ok" and report["articles"]["total"] == 1
    assert not project.database.exists()  # the config file's database is not used
    with sqlite3.connect(elsewhere) as conn:
        assert conn.execute("SELECT count(*) FROM article").fetchone() == (1,)
    conn.close()
    status = json.loads(project.cli("status", "--json", env=env).stdout)
    assert status["articles"]["total"] == 1


def test_a_password_in_the_file_appears_in_no_message(project: Project, tmp_path: Path):
    url = f"postgresql+psycopg://feeds:{SECRET}@127.0.0.1:9/feeds"
    env = {"FEEDWORKER_DATABASE_FILE": str(secret_file(tmp_path, url))}
    for command in (["run"], ["run", "--json"], ["status"], ["migrate"]):
        result = project.cli(*command, env=env, check=False)
        assert result.returncode == 1, (command, result.stderr)
        assert SECRET not in result.stdout + result.stderr, command
        assert "database" in result.stderr.strip().splitlines()[-1]


def test_an_unreadable_or_empty_file_and_both_variables_are_refused_in_one_line(project: Project, tmp_path: Path):
    cases = [
        ({"FEEDWORKER_DATABASE_FILE": str(tmp_path / "missing")}, "cannot read"),
        ({"FEEDWORKER_DATABASE_FILE": str(secret_file(tmp_path, "\n", "empty"))}, "on one line"),
        (
            {"FEEDWORKER_DATABASE_FILE": str(secret_file(tmp_path, "sqlite:///x.db")), "FEEDWORKER_DATABASE": "y.db"},
            "not both",
        ),
    ]
    for env, words in cases:
        result = project.cli("run", env=env, check=False)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert words in last and "FEEDWORKER_DATABASE" in last, last
