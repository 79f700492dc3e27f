"""What operators and newcomers are told (issue 11): source folders that cannot be read,
`check` output and near-miss field names, configuration messages in plain words, and a run
report that tells the truth (articles of a stopped run, the wait for the lock apart).

Real `feedworker` subprocesses on a real SQLite file, except where a cycle must be stopped
from inside (run_cycle in-process).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Project, article_text, make_project, run_cli
from tests.test_config_hardening import write as write_config
from worker.config import ConfigError, load_config


def events(stderr: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def store_rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(database) as conn:
        rows = {
            "articles": conn.execute("select url, title, removed, is_published from article order by url").fetchall(),
            "files": conn.execute(
                "select path, size, mtime_ns, hash, state, error from source_file order by path"
            ).fetchall(),
            "topics": conn.execute("select key, slug, dirty from topic order by key").fetchall(),
        }
    conn.close()
    return rows


def click_error(stderr: str) -> list[str]:
    """The lines of stderr that are not JSON log events (click's `Error: ...`)."""
    lines = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------- 5. source folders


def test_a_run_with_no_readable_source_fails_and_changes_nothing(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI"])
    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["Space"])
    first = project.run()
    assert first["sources"] == [{"path": str(project.inbox), "state": "ok", "files": 2}]
    feeds = project.feed_files()
    rows = store_rows(project.database)

    project.inbox.rename(project.root / "inbox-away")
    result = project.cli("run", "--json", check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "failed"
    assert report["sources"] == [{"path": str(project.inbox), "state": "missing", "files": 0}]
    assert report["message"] == f"no source folder could be read: {project.inbox} (No such file or directory)"
    assert report["files"]["deleted"] == 0
    assert report["articles"] == {"total": 2, "published": 2}  # what the store holds
    (line,) = click_error(result.stderr)
    assert line == f"Error: no source folder could be read: {project.inbox} (No such file or directory)"
    assert project.feed_files() == feeds  # same bytes, same mtimes: no feed rewritten
    assert store_rows(project.database) == rows  # no file taken as deleted, no article removed

    text = project.cli("run", check=False)
    assert text.returncode == 1 and text.stdout == ""
    assert project.feed_files() == feeds

    status = json.loads(project.cli("status", "--json").stdout)
    assert status["sources"] == [
        {
            "path": str(project.inbox),
            "state": "missing",
            "files": 0,
            "reason": "No such file or directory",
            "last_run_state": "missing",
        }
    ]
    assert status["last_run"]["status"] == "failed"
    shown = project.cli("status").stdout
    assert f"  {project.inbox}: missing (No such file or directory)" in shown.splitlines()

    (project.root / "inbox-away").rename(project.inbox)
    back = project.run()
    assert back["status"] == "ok" and back["files"]["unchanged"] == 2 and back["articles"]["total"] == 2
    assert back["sources"] == [{"path": str(project.inbox), "state": "ok", "files": 2}]
    assert project.feed_files() == feeds


def test_a_first_run_with_no_readable_source_writes_no_feeds(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../nowhere"}])
    result = project.cli("run", check=False)
    assert result.returncode == 1
    assert click_error(result.stderr) == [
        f"Error: no source folder could be read: {tmp_path / 'nowhere'} (No such file or directory)"
    ]
    assert not project.feeds.exists()


def test_a_run_with_some_sources_unreadable_says_which(tmp_path: Path):
    project = make_project(
        tmp_path, sources=[{"path": "../inbox"}, {"path": "../inbox2"}, {"path": "../plain-file"}, {"path": "../more"}]
    )
    (tmp_path / "plain-file").write_text("not a folder")
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.article("b.txt", title="B", web_url="https://a.example/b")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "c.txt").write_text(article_text(title="C", web_url="https://a.example/c"))

    expected = [
        {"path": str(project.inbox), "state": "ok", "files": 2},
        {"path": str(tmp_path / "inbox2"), "state": "missing", "files": 0},
        {"path": str(tmp_path / "plain-file"), "state": "unreadable", "files": 0},
        {"path": str(tmp_path / "more"), "state": "ok", "files": 1},
    ]
    full = project.cli("run", "--json")
    assert [e.get("idle") for e in events(full.stderr) if e.get("event") == "run.finished"] == [False]
    assert json.loads(full.stdout)["sources"] == expected and json.loads(full.stdout)["status"] == "ok"

    # The same state again: the no-change path reports the same, and the summary line says it.
    result = project.cli("run", check=False)
    assert result.returncode == 0, result.stderr
    assert [e.get("idle") for e in events(result.stderr) if e.get("event") == "run.finished"] == [True]
    (line,) = result.stdout.splitlines()
    assert line.startswith("ok: 3 files (0 new, 0 changed, 0 deleted, 0 quarantined)")
    assert line.endswith(
        f"; 2 sources unreadable: {tmp_path / 'inbox2'} (No such file or directory), "
        f"{tmp_path / 'plain-file'} (Not a directory)"
    )
    quick = project.cli("run", "--json")
    assert [e.get("idle") for e in events(quick.stderr) if e.get("event") == "run.finished"] == [True]
    assert json.loads(quick.stdout)["sources"] == expected

    single = make_project(tmp_path / "one", sources=[{"path": "../inbox"}, {"path": "../gone"}])
    single.article("a.txt")
    line = single.cli("run").stdout.strip()
    assert line.endswith(f"; 1 source unreadable: {tmp_path / 'one' / 'gone'} (No such file or directory)")

    status = json.loads(project.cli("status", "--json").stdout)
    reasons = [None, "No such file or directory", "Not a directory", None]
    assert status["sources"] == [
        {**source, "reason": reason, "last_run_state": source["state"]}
        for source, reason in zip(expected, reasons, strict=True)
    ]
    shown = project.cli("status").stdout.splitlines()
    assert f"  {project.inbox}: ok, 2 files" in shown
    assert f"  {tmp_path / 'inbox2'}: missing (No such file or directory)" in shown
    assert f"  {tmp_path / 'plain-file'}: unreadable (Not a directory)" in shown
    assert f"  {tmp_path / 'more'}: ok, 1 file" in shown


def test_status_checks_the_folders_now(project: Project):
    project.article("a.txt")
    project.run()
    project.inbox.rename(project.root / "elsewhere")
    status = json.loads(project.cli("status", "--json").stdout)
    # The last run counted 1 file there; the folder is gone now.
    assert status["sources"] == [
        {
            "path": str(project.inbox),
            "state": "missing",
            "files": 1,
            "reason": "No such file or directory",
            "last_run_state": "ok",
        }
    ]
    assert f"  {project.inbox}: missing (No such file or directory); ok at the last run, 1 file" in (
        project.cli("status").stdout.splitlines()
    )


def test_status_before_any_run_lists_the_sources(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox"}, {"path": "../gone"}])
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["sources"] == [
        {"path": str(project.inbox), "state": "ok", "files": None, "reason": None, "last_run_state": None},
        {
            "path": str(tmp_path / "gone"),
            "state": "missing",
            "files": None,
            "reason": "No such file or directory",
            "last_run_state": None,
        },
    ]
    shown = project.cli("status").stdout.splitlines()
    assert f"  {project.inbox}: ok" in shown


# --------------------------------------------------------------------------- 6. check, near misses


def test_check_says_valid_and_draft(project: Project):
    good = project.article("good.txt", title="Good", web_url="https://a.example/g")
    draft = project.article("draft.txt", title="Draft", web_url="https://a.example/d", published=False)
    lonely = project.article("lonely.txt", title="Lonely", web_url="https://a.example/l", topics=None)
    result = project.cli("check", str(good), str(draft), str(lonely))
    assert result.stdout.splitlines() == [
        f"{good}: valid",
        f"{draft}: valid (draft: in no feed)",
        f"{lonely}: valid (no topics: in the all-articles feeds only)",
    ]
    assert result.stderr.strip() == "3 files valid"


@pytest.mark.parametrize(
    ("field", "meant"),
    [
        ("topcis", "topics"),
        ("webURL", "webUrl"),
        ("published_date_time", "publishedDateTime"),
        ("Title", "title"),
        ("exerpt", "excerpt"),
        ("image", "images"),
        ("web-url", "webUrl"),
    ],
)
def test_a_near_miss_field_name_names_the_likely_field(field: str, meant: str):
    from worker.ingest.frontmatter import parse_article

    text = article_text(title="T", web_url="https://a.example/t", **{field: "x"})
    article = parse_article(text.encode(), "a.txt")
    (warning,) = article.warnings
    assert warning.startswith(f"{field}: unknown field, stored but not used; did you mean {meant}? (line ")
    assert article.extra == {field: "x"}


def test_fields_far_from_any_known_one_give_no_warning():
    from worker.ingest.frontmatter import parse_article

    text = article_text(title="T", web_url="https://a.example/t", mood="x", secured={"a": 1}, tags=["x"], id="x1")
    assert parse_article(text.encode(), "a.txt").warnings == ()


def test_near_misses_are_warnings_in_check_and_in_the_run_log(project: Project):
    path = project.write(
        "a.txt",
        "---\ntitle: T\nwebUrl: https://a.example/t\ntopcis: [AI]\npublished_date_time: 2021-01-01T00:00:00Z\n---\n",
    )
    result = project.cli("check", str(path))
    assert result.stdout.splitlines() == [
        f"{path}: valid (no topics: in the all-articles feeds only)",
        f"{path}: warning: topcis: unknown field, stored but not used; did you mean topics? (line 4)",
        f"{path}: warning: published_date_time: unknown field, stored but not used; did you mean publishedDateTime? (line 5)",
    ]
    run = project.cli("run", "--json")
    report = json.loads(run.stdout)
    assert report["files"]["quarantined"] == 0 and report["articles"]["total"] == 1
    warnings = [e for e in events(run.stderr) if e.get("event") == "file.warning"]
    assert [w["reason"] for w in warnings] == [
        "topcis: unknown field, stored but not used; did you mean topics? (line 4)",
        "published_date_time: unknown field, stored but not used; did you mean publishedDateTime? (line 5)",
    ]


def test_a_required_field_missing_beside_its_near_miss_says_so(project: Project):
    path = project.write("a.txt", "---\ntitle: T\nwebURL: https://a.example/t\n---\n")
    result = project.cli("check", str(path), check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}: webUrl: required field is missing; found webURL (line 3): did you mean webUrl?"
    ]


# --------------------------------------------------------------------------- 7. configuration messages


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """The one-line message for a config, without the config file's path before it."""
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith((f"{path}: ", "environment variable "))
    return message.removeprefix(f"{path}: ")


def test_every_problem_is_shown_unknown_keys_first(tmp_path: Path):
    assert refused(tmp_path, "source: [{path: in}]\n") == (
        "source: unknown key (did you mean sources?); sources: required key is missing"
    )
    assert refused(tmp_path, "sources: [{path: in, max_byte: 5}]\nfeeds: {max_entries: lots, titel: x}\n") == (
        "sources[0].max_byte: unknown key (did you mean max_bytes?); feeds.titel: unknown key (did you mean title?); "
        "feeds.max_entries: must be a whole number"
    )
    assert refused(tmp_path, "sources: [{path: in}]\nfeeds: {colour: red}\n") == "feeds.colour: unknown key"
    assert refused(tmp_path, "sources: [{path: in}]\ntoken: abc\n") == "token: unknown key (did you mean server.token?)"


def test_problems_from_the_file_and_the_environment_say_where_each_is(tmp_path: Path):
    message = refused(tmp_path, "sources: [{path: in}]\nfeeds: {titel: x}\n", {"FEEDWORKER_SERVER__PORT": "lots"})
    path = tmp_path / "conf" / "feedworker.yaml"
    assert message == (
        "feeds.titel: unknown key (did you mean title?); "
        "environment variable FEEDWORKER_SERVER__PORT: server.port: must be a whole number"
    )
    assert str(path) not in message


def test_the_cli_shows_every_problem_on_one_line(tmp_path: Path):
    config = write_config(tmp_path, "source: [{path: in}]\n")
    result = run_cli("run", "--config", str(config), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: configuration: {config}: source: unknown key (did you mean sources?); sources: required key is missing"
    ]


JARGON = (
    "Input should",
    "pydantic",
    "tuple",
    "dict_type",
    "type=",
    "Value error",
    "Field required",
    "Extra inputs",
    "instance of",
    "errors.pydantic.dev",
    "model_type",
    "validation error",
)

BAD_CONFIGS = [
    ("sources: [{path: in}]\nfeeds: {max_entries: lots}\n", {}, "feeds.max_entries: must be a whole number"),
    ("sources: [{path: in}]\nfeeds: {max_entries: 1.5}\n", {}, "feeds.max_entries: must be a whole number"),
    ("sources: [{path: in}]\nfeeds: {max_entries: 0}\n", {}, "feeds.max_entries: must be at least 1"),
    ("sources: [{path: in}]\nfeeds: {max_entries: 100000}\n", {}, "feeds.max_entries: must be at most 10000"),
    ("sources: [{path: in}]\nserver: {port: 70000}\n", {}, "server.port: must be at most 65535"),
    ("sources: [{path: in, max_bytes: 0}]\n", {}, "sources[0].max_bytes: must be more than 0"),
    ("sources: [{path: in}]\nfeeds: 3\n", {}, "feeds: must be a section of keys"),
    ("sources: [{path: in}]\nfeeds: [a, b]\n", {}, "feeds: must be a section of keys"),
    ("sources: 5\n", {}, "sources: must be a list of folders"),
    ("sources: [5]\n", {}, "sources[0]: must be a section of keys"),
    ("sources: []\n", {}, "sources: must list at least one folder"),
    ("sources: [{include: ['*.txt']}]\n", {}, "sources[0].path: required key is missing"),
    ("sources: [{path: in, include: 3}]\n", {}, "sources[0].include: must be a list"),
    ("sources: [{path: in, include: [3]}]\n", {}, "sources[0].include[0]: must be text"),
    ("sources: [{path: [a]}]\n", {}, "sources[0].path: must be a path"),
    ("sources: [{path: in}]\nlog_level: loud\n", {}, "log_level: must be one of debug, info, warning, error"),
    ("sources: [{path: in}]\nfeeds: {title: [1]}\n", {}, "feeds.title: must be text"),
    ("sources: [{path: in}]\ndatabase: [x]\n", {}, "database: must be text"),
    ("sources: [{path: in}]\nschedule: {cron: 5}\n", {}, "schedule.cron: must be text"),
    ("sources: [{path: in}]\nenrich: {fetch: maybe}\n", {}, "enrich.fetch: must be true or false"),
    ("sources: [{path: in}]\nenrich: {concurrency: .inf}\n", {}, "enrich.concurrency: must be a finite number"),
    ("sources: [{path: in}]\nbusy_timeout_s: [1]\n", {}, "busy_timeout_s: "),
    ("sources: [{path: in}]\n", {"FEEDWORKER_FEEDS": "[1, 2]"}, "feeds: must be a section of keys"),
    ("sources: [{path: in}]\n", {"FEEDWORKER_SOURCES": "[5]"}, "sources[0]: must be a section of keys"),
    ("sources: [{path: in}]\n", {"FEEDWORKER_SOURCES": "[{path: in, nope: 1}]"}, "sources[0].nope: unknown key"),
    ("sources: [{path: in}]\n", {"FEEDWORKER_SERVER__PORT": "x"}, "server.port: must be a whole number"),
]


@pytest.mark.parametrize(("text", "environ", "expected"), BAD_CONFIGS)
def test_config_messages_are_plain_words(tmp_path: Path, text: str, environ: dict[str, str], expected: str):
    message = refused(tmp_path, text, environ)
    assert expected in message
    for word in JARGON:
        assert word not in message, (word, message)


@pytest.mark.parametrize(
    ("value", "paths"),
    [
        ("/data/inbox", ["/data/inbox"]),
        ("/data/inbox, /data/inbox2", ["/data/inbox", "/data/inbox2"]),
        ("/data/inbox,/data/other,", ["/data/inbox", "/data/other"]),
        ("/data/in #1", ["/data/in #1"]),
        ("relative", ["{conf}/relative"]),
        ("[{path: /data/inbox, max_bytes: 1000}]", ["/data/inbox"]),
        ("[/data/a, /data/b]", ["/data/a", "/data/b"]),
        ("{path: /data/inbox}", ["/data/inbox"]),
        ("- path: /data/inbox\n- path: /data/b\n", ["/data/inbox", "/data/b"]),
    ],
)
def test_feedworker_sources_takes_a_plain_path_or_a_list(tmp_path: Path, value: str, paths: list[str]):
    config = load_config(write_config(tmp_path, "sources: [{path: in}]\n"), {"FEEDWORKER_SOURCES": value})
    conf = tmp_path / "conf"
    assert [str(source.path) for source in config.sources] == [p.format(conf=conf) for p in paths]
    if not value.startswith("["):
        assert all(source.include == ("**/*.txt", "**/*.md") for source in config.sources)
        assert all(source.max_bytes == 10 * 1024 * 1024 for source in config.sources)


def test_an_empty_feedworker_sources_is_refused_in_plain_words(tmp_path: Path):
    message = refused(tmp_path, "sources: [{path: in}]\n", {"FEEDWORKER_SOURCES": " , "})
    assert message == "environment variable FEEDWORKER_SOURCES: sources: must list at least one folder"


def test_run_takes_feedworker_sources_as_a_plain_path(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    other = project.root / "other"
    other.mkdir()
    (other / "b.txt").write_text(article_text(title="B", web_url="https://a.example/b"))
    result = project.cli("run", "--json", env={"FEEDWORKER_SOURCES": f"{project.inbox},{other}"})
    report = json.loads(result.stdout)
    assert report["articles"]["total"] == 2
    assert [source["path"] for source in report["sources"]] == [str(project.inbox), str(other)]


# --------------------------------------------------------------------------- 8. the run report tells the truth


def test_a_stopped_run_reports_the_articles_it_stored(project: Project):
    from worker.pipeline import BATCH, CycleError, run_cycle

    for index in range(BATCH + 100):
        project.write(f"{index:04d}.txt", article_text(title=f"T{index}", web_url=f"https://a.example/{index}"))
    config = load_config(project.config, {})
    with pytest.raises(CycleError) as info:
        run_cycle(config, should_stop=lambda: True)  # asked after the first batch
    report = info.value.report
    with sqlite3.connect(project.database) as conn:
        stored = conn.execute("select count(*) from article where removed = 0").fetchone()[0]
    conn.close()
    assert stored == BATCH
    assert report.status == "failed" and "stopped at a safe point" in (report.message or "")
    assert (report.articles.total, report.articles.published) == (BATCH, BATCH)
    assert report.files.new == BATCH + 100
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["last_run"]["articles"]["total"] == BATCH


def test_a_run_failing_after_storing_reports_the_articles_stored(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.feeds.mkdir(parents=True)
    (project.feeds / "topics").write_text("a file where the topics folder goes")
    result = project.cli("run", "--json", check=False)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "failed" and report["message"]
    assert report["articles"] == {"total": 1, "published": 1}


def _run_while_locked(project: Project, hold_s: float) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    from worker.store.lock import cycle_lock

    config = load_config(project.config, {})
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cycle_lock(config.database_url):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--json", "--config", str(project.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=ROOT,
    )
    seen = []
    while not any("waiting for it to finish" in line for line in seen):  # it is waiting now
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
    time.sleep(hold_s)
    released = time.monotonic()
    release.set()
    stdout, stderr = process.communicate(timeout=120)
    after_release = time.monotonic() - released  # the run's work, and the process's exit
    stderr = "".join(seen) + stderr
    holder.join(10)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    # The work alone: it fits in the time from the release to the end of the process, which
    # the wait does not (a loaded machine makes the work slower, never the inequality false).
    assert report["waited_s"] >= hold_s and report["duration_s"] <= after_release, (report, after_release)
    return report, subprocess.CompletedProcess(process.args, 0, stdout, stderr)


def test_duration_is_the_work_alone_and_the_wait_is_reported_apart(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    full, result = _run_while_locked(project, 1.5)
    assert "waiting for it to finish" in result.stderr
    assert full["waited_s"] >= 1.5
    finished = [e for e in events(result.stderr) if e.get("event") == "run.finished"]
    assert finished[0]["duration_s"] == full["duration_s"] and finished[0]["idle"] is False

    quick, result = _run_while_locked(project, 1.5)  # nothing changed: the no-change path
    finished = [e for e in events(result.stderr) if e.get("event") == "run.finished"]
    assert finished[0]["idle"] is True
    assert quick["waited_s"] >= 1.5


# --------------------------------------------------------------------------- an emptied folder


def test_a_volume_not_mounted_on_its_mount_point_deletes_nothing(tmp_path: Path):
    # The image creates its mount point: a container started without the volume sees an
    # empty, readable folder on another device. Taking every stored file as deleted would
    # empty every feed, and bring every article back as new once the volume returns.
    from tests.test_failures import tmpfs

    project = make_project(tmp_path)
    texts = {f"{n}.txt": article_text(title=f"T{n}", web_url=f"https://e.example/{n}") for n in range(3)}
    with tmpfs(project.inbox, "4m"):
        for name, text in texts.items():
            project.write(name, text)
        project.run()
    before = project.feed_files()
    result = project.cli("run", "--json", check=False)  # the volume is gone; its mount point stays
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["status"] == "failed"
    assert report["sources"][0]["state"] == "empty" and report["files"]["deleted"] == 0
    assert "on another device than when 3 stored files came from it" in report["message"]
    assert report["articles"]["total"] == 3
    assert project.feed_files() == before  # every feed as it was, bytes and mtimes
    assert "empty" in project.cli("status").stdout
    with tmpfs(project.inbox, "4m"):  # mounted again
        for name, text in texts.items():
            project.write(name, text)
        back = project.run()
    assert back["status"] == "ok" and back["files"]["deleted"] == 0 and back["articles"]["total"] == 3


def test_a_folder_emptied_on_purpose_takes_its_articles_out(project):
    project.article("a.txt", title="A", web_url="https://e.example/a")
    project.run()
    (project.inbox / "a.txt").unlink()
    report = project.run()
    assert report["status"] == "ok" and report["files"]["deleted"] == 1 and report["articles"]["total"] == 0
    assert report["sources"][0]["state"] == "ok"
