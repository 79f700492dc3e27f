"""`feedworker serve` and `trigger` as real processes: schedule, HTTP endpoints, races, signals.

The service over the examples (`served`: runs, feeds, /healthz, /metrics, /runs) and the race
of runs and triggers run on both dialects (@both_dialects()); the tests of signals, sockets
and the cycle's lock file are about the process and SQLite's flock, and stay on SQLite.
"""

from __future__ import annotations

import gzip
import itertools
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import both_dialects, store_database, store_rows
from tests.service_helpers import (
    EXAMPLES,
    ROOT,
    Service,
    clean_env,
    copy_examples,
    free_port,
    lock_held,
    make_corpus,
    raw_get,
    resolve_feed_path,
    wait_for,
    wait_idle,
    write_config,
)
from worker.config import Config, ScheduleConfig
from worker.report import CycleError, RunReport
from worker.service.http import health, newest_report
from worker.service.metrics import ServiceMetrics
from worker.service.scheduler import Runner, RunnerState, RunnerStopped, build_trigger, cron_weekdays

TOKEN = "s3cret-token-for-tests-0123456789"
SECRET = "TOP-SECRET-OUTSIDE-THE-FEEDS-FOLDER"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def db_rows(database: Path, query: str) -> list[tuple]:
    """The SQLite file itself (the SQLite-only tests)."""
    with sqlite3.connect(database, timeout=30) as conn:
        return conn.execute(query).fetchall()


@dataclass
class Served:
    service: Service
    root: Path
    config: Path
    feeds: Path
    url: str  # the store's


def dated_get(service: Service, path: str) -> httpx.Response:
    """GET a feed once it carries its Last-Modified: not while the second it was written in
    lasts (a version written later in that second would share the date)."""
    return wait_for(lambda: (r := service.get(path)).headers.get("last-modified") and r, 5, f"{path} dated")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dialect: str) -> Iterator[Served]:
    """One service over the example articles, scheduled every 2s, triggers enabled; its tests
    are @both_dialects() (all of them, or the SQLite one would be started twice)."""
    root = tmp_path_factory.mktemp("served")
    copy_examples(root / "inbox")
    (root / "secret.txt").write_text(SECRET, encoding="utf-8")
    port = free_port()
    with store_database(dialect) as database:
        config = write_config(root, port=port, database=database, schedule={"every": "2s"}, server={"token": TOKEN})
        with Service(config, port) as service:
            service.wait_healthy(60)
            yield Served(
                service, root, config, root / "feeds", database or f"sqlite:///{root / 'db' / 'feedworker.db'}"
            )


# --- units -------------------------------------------------------------------------------


def test_crontab_weekdays_are_translated_for_apscheduler_3() -> None:
    assert cron_weekdays("*") == "*"
    assert cron_weekdays("0") == "sun"
    assert cron_weekdays("7") == "sun"
    assert cron_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert cron_weekdays("5-7") == "sun,fri,sat"
    assert cron_weekdays("sat,SUN") == "sun,sat"
    assert cron_weekdays("*/2") == "sun,tue,thu,sat"
    with pytest.raises(ValueError):
        cron_weekdays("8")


def test_interval_and_cron_triggers() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)  # a Monday
    cron = build_trigger(ScheduleConfig(cron="0 9 * * 0"))
    assert cron.get_next_fire_time(None, now) == datetime(2024, 1, 7, 9, 0, tzinfo=UTC)  # Sunday
    interval = build_trigger(ScheduleConfig(every="30s"))
    assert interval.interval.total_seconds() == 30


def test_health_rules() -> None:
    base = {"accepting": True, "running": False, "queued": False, "last_message": None}
    assert (
        health(RunnerState(**base, last_status=None, last_finished_at=None, last_success_at=None), 100, 60)[1]["reason"]
        == "no run yet"
    )
    ok = RunnerState(**base, last_status="ok", last_finished_at=90, last_success_at=90)
    assert health(ok, 100, 60)[0] == 200
    assert health(ok, 200, 60)[0] == 503
    failed = RunnerState(
        **{**base, "last_message": "disk full"}, last_status="failed", last_finished_at=95, last_success_at=90
    )
    assert health(failed, 100, 60)[1]["reason"] == "last run failed: disk full"
    stopping = RunnerState(**{**base, "accepting": False}, last_status="ok", last_finished_at=90, last_success_at=90)
    assert health(stopping, 100, 60)[0] == 503 and health(stopping, 100, 60)[1]["reason"] == "shutting down"


def test_newest_report() -> None:
    assert newest_report(None, None) is None
    assert newest_report({"run_id": 3}, None) == {"run_id": 3}
    assert newest_report({"run_id": 3}, {"run_id": 2}) == {"run_id": 3}
    assert newest_report({"run_id": 3}, {"run_id": 4}) == {"run_id": 4}
    assert newest_report({"run_id": 3}, {"run_id": None, "status": "failed"}) == {"run_id": None, "status": "failed"}


def test_resolve_feed_path_refuses_everything_outside(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    (feeds / "topics").mkdir(parents=True)
    (feeds / "all.rss").write_text("x")
    (feeds / "topics" / "ai.rss").write_text("x")
    (tmp_path / "secret").write_text(SECRET)
    (feeds / "out").symlink_to(tmp_path / "secret")
    (feeds / "dir-out").symlink_to(tmp_path)
    assert resolve_feed_path(feeds, "all.rss") == (feeds / "all.rss").resolve()
    assert resolve_feed_path(feeds, "topics/ai.rss") == (feeds / "topics" / "ai.rss").resolve()
    for bad in [
        "",
        "/",
        "../secret",
        "topics/../../secret",
        "/etc/passwd",
        "//etc/passwd",
        "./all.rss",
        "topics//ai.rss",
        "out",
        "dir-out/secret",
        "..\\secret",
        "all.rss\x00",
        ".feedworker-tmp",
    ]:
        assert resolve_feed_path(feeds, bad) is None, bad


def _runner_config(tmp_path: Path) -> Config:
    return Config.model_validate({"sources": [{"path": str(tmp_path)}], "database": str(tmp_path / "db")})


def test_runner_queues_exactly_one_follow_up(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def cycle(config: Config, *, on_wait: object, should_stop: object) -> RunReport:
        calls.append(len(calls) + 1)
        started.set()
        assert release.wait(10)
        return RunReport(run_id=calls[-1])

    runner = Runner(_runner_config(tmp_path), cycle=cycle)
    runner.start()
    first, joined = runner.request("http")
    assert not joined
    assert started.wait(10)
    second, joined_second = runner.request("http")
    third, joined_third = runner.request("schedule")
    assert not joined_second and joined_third and third is second and second.status == "queued"
    release.set()
    assert wait_idle(runner, 10)
    assert calls == [1, 2]
    assert (first.status, first.store_run_id, second.status, second.store_run_id) == ("ok", 1, "ok", 2)
    assert runner.get(second.id) is second and runner.last_report()["run_id"] == 2
    assert runner.stop(1, 1)
    with pytest.raises(RunnerStopped):
        runner.request("http")


def test_runner_records_failures_and_stops_at_a_safe_point(tmp_path: Path) -> None:
    started = threading.Event()
    results: list[str] = []

    def cycle(config: Config, *, on_wait: object, should_stop: Callable[[], bool]) -> RunReport:
        if not results:
            results.append("boom")
            raise RuntimeError("boom")
        started.set()
        deadline = time.monotonic() + 10
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        results.append("stopped" if should_stop() else "timeout")
        raise CycleError("stopped", RunReport(status="failed", message="stopped at a safe point"))

    metrics = ServiceMetrics()
    runner = Runner(_runner_config(tmp_path), cycle=cycle, metrics=metrics)
    runner.start()
    failed, _ = runner.request("http")
    assert failed.done.wait(10) and failed.status == "failed" and "boom" in failed.message
    assert runner.state().last_status == "failed"
    running, _ = runner.request("http")
    assert started.wait(10)
    queued, _ = runner.request("http")
    assert runner.stop(0.2, 10)  # grace over -> should_stop() turns true -> the cycle returns
    assert results == ["boom", "stopped"] and running.status == "failed"
    assert queued.status == "cancelled" and queued.done.is_set()
    assert metrics.runs.labels("failed")._value.get() == 2


# --- the running service -----------------------------------------------------------------


@both_dialects()
def test_schedule_publishes_feeds_on_its_own(served: Served) -> None:
    for name in ("all.rss", "all.atom", "index.opml"):
        assert (served.feeds / name).exists()
    first = served.service.get("/runs/latest").json()["run_id"]
    (served.root / "inbox" / "scheduled.txt").write_text(
        '---\ntitle: "Arrived between two scheduled runs"\nwebUrl: "https://news.example.com/scheduled"\n'
        "topics: [Scheduling]\npublishedDateTime: 2031-01-01T00:00:00Z\n---\n",
        encoding="utf-8",
    )
    wait_for(
        lambda: b"Arrived between two scheduled runs" in served.service.get("/feeds/all.rss").content,
        20,
        "the scheduler to publish the new article without a trigger",
    )
    # The feeds are out before the cycle ends (the first ones first): its run a moment later.
    wait_for(lambda: served.service.get("/runs/latest").json()["run_id"] > first, 20, "the scheduled run's report")
    assert served.service.get("/feeds/topics/scheduling.rss").status_code == 200


@both_dialects()
def test_feeds_have_the_right_content_types(served: Served) -> None:
    expected = {
        "all.rss": "application/rss+xml; charset=utf-8",
        "all.atom": "application/atom+xml; charset=utf-8",
        "index.opml": "text/x-opml; charset=utf-8",
    }
    topic = min((served.feeds / "topics").glob("*.rss")).name
    expected[f"topics/{topic}"] = "application/rss+xml; charset=utf-8"
    expected[f"topics/{topic[:-4]}.atom"] = "application/atom+xml; charset=utf-8"
    for name, content_type in expected.items():
        response = dated_get(served.service, f"/feeds/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == content_type, name
        assert response.content == (served.feeds / name).read_bytes()
        assert response.headers["etag"].startswith('"')
        assert response.headers["last-modified"].endswith("GMT")
    head = served.service.client().head("/feeds/all.rss", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == (served.feeds / "all.rss").stat().st_size
    assert served.service.get("/feeds/nothing-here.rss").status_code == 404
    assert served.service.get("/feeds/").headers["content-type"] == "text/html; charset=utf-8"  # the feeds page
    assert served.service.get("/feeds/topics").status_code == 404


@both_dialects()
def test_conditional_gets_and_etags_that_follow_the_bytes(served: Served) -> None:
    service = served.service
    first = dated_get(service, "/feeds/all.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert service.get("/feeds/all.atom", headers={"If-None-Match": etag}).status_code == 304
    assert service.get("/feeds/all.atom", headers={"If-None-Match": f'"nope", W/{etag}'}).status_code == 304
    assert service.get("/feeds/all.atom", headers={"If-None-Match": '"other"'}).status_code == 200
    not_modified = service.get("/feeds/all.atom", headers={"If-Modified-Since": modified})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert service.get("/feeds/all.atom", headers={"If-Modified-Since": formatdate(0, usegmt=True)}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110).
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert service.get("/feeds/all.atom", headers=both).status_code == 200

    # Same bytes after more runs -> same ETag; new bytes -> new ETag, and the old one no longer matches.
    run_id = service.get("/runs/latest").json()["run_id"]
    wait_for(lambda: service.get("/runs/latest").json()["run_id"] > run_id + 1, 20, "two more scheduled runs")
    again = service.get("/feeds/all.atom")
    if again.content == first.content:
        assert again.headers["etag"] == etag
    (served.root / "inbox" / "edited.txt").write_text(
        '---\ntitle: "An edit that changes the feed"\nwebUrl: "https://news.example.com/edit"\n'
        "publishedDateTime: 2032-01-01T00:00:00Z\n---\n",
        encoding="utf-8",
    )
    changed = wait_for(
        lambda: (r := service.get("/feeds/all.atom")).headers["etag"] != etag and r,
        20,
        "the ETag of all.atom to change with its bytes",
    )
    assert b"An edit that changes the feed" in changed.content
    assert service.get("/feeds/all.atom", headers={"If-None-Match": etag}).status_code == 200
    assert service.get("/feeds/all.atom", headers={"If-None-Match": changed.headers["etag"]}).status_code == 304


@both_dialects()
def test_gzip(served: Served) -> None:
    with served.service.client() as client:
        response = client.get("/feeds/all.rss", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert response.content == (served.feeds / "all.rss").read_bytes()  # httpx decompressed it
    with (
        served.service.client() as client,
        client.stream("GET", "/feeds/all.rss", headers={"Accept-Encoding": "gzip"}) as raw,
    ):
        body = b"".join(raw.iter_raw())
    assert gzip.decompress(body) == (served.feeds / "all.rss").read_bytes()
    identity = served.service.get("/feeds/all.rss", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers


@both_dialects()
@pytest.mark.parametrize(
    "target",
    [
        "/feeds/../secret.txt",
        "/feeds/../feedworker.yaml",
        "/feeds/%2e%2e/secret.txt",
        "/feeds/%2E%2E/feedworker.yaml",
        "/feeds/..%2fsecret.txt",
        "/feeds/..%2Ffeedworker.yaml",
        "/feeds/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/feeds/topics/..%2f..%2fsecret.txt",
        "/feeds/topics/%2e%2e/%2e%2e/secret.txt",
        "/feeds//etc/passwd",
        "/feeds/%2fetc%2fpasswd",
        "/feeds/..\\secret.txt",
        "/feeds/..%5csecret.txt",
        "/feeds/all.rss%00.txt",
        "/feeds/link-out",
        "/feeds/dir-out/secret.txt",
        "/feeds/.hidden",
        "/feeds/./../secret.txt",
        "/../secret.txt",
        "/feeds/%252e%252e/secret.txt",
    ],
)
def test_no_path_outside_the_feeds_folder(served: Served, target: str) -> None:
    link = served.feeds / "link-out"
    if not link.is_symlink():
        link.symlink_to(served.root / "secret.txt")
    folder = served.feeds / "dir-out"
    if not folder.is_symlink():
        folder.symlink_to(served.root)
    (served.feeds / ".hidden").write_text(SECRET, encoding="utf-8")
    status, body = raw_get(served.service.port, target)
    assert status in (400, 404), (target, status)
    assert SECRET.encode() not in body
    assert TOKEN.encode() not in body
    assert b"root:" not in body


@both_dialects()
def test_healthz_and_metrics(served: Served) -> None:
    healthz = served.service.get("/healthz")
    assert healthz.status_code == 200 and healthz.json()["status"] == "ok"
    response = served.service.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("feedworker_runs_total", (("outcome", "ok"),))] >= 1
    assert ("feedworker_runs_total", (("outcome", "failed"),)) in samples
    assert samples[("feedworker_run_duration_seconds_count", ())] >= 1
    for state in ("new", "changed", "unchanged", "deleted", "quarantined"):
        assert ("feedworker_files", (("state", state),)) in samples
    assert samples[("feedworker_articles", ())] >= len(EXAMPLES)  # the .txt examples, and what other tests add
    assert 0 < samples[("feedworker_articles_published", ())] <= samples[("feedworker_articles", ())]
    assert abs(samples[("feedworker_last_success_timestamp_seconds", ())] - time.time()) < 600


@both_dialects()
def test_post_runs_needs_the_bearer_token(served: Served) -> None:
    service = served.service
    missing = service.post("/runs")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert service.post("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert service.post("/runs", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert service.get("/runs").status_code == 405
    accepted = service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] in ("queued", "running") and body["run_id"]
    assert accepted.headers["location"] == f"/runs/{body['run_id']}"
    done = wait_for(
        lambda: (r := service.get(f"/runs/{body['run_id']}").json())["status"] in ("ok", "failed") and r,
        30,
        "the triggered run to finish",
    )
    assert done["status"] == "ok"
    assert done["report"]["status"] == "ok" and done["store_run_id"] == done["report"]["run_id"]
    stored = service.get(f"/runs/{done['store_run_id']}")
    assert stored.status_code == 200 and stored.json()["report"]["run_id"] == done["store_run_id"]
    assert service.get("/runs/no-such-run").status_code == 404
    assert service.get("/runs/999999").status_code == 404


@both_dialects()
def test_runs_latest(served: Served) -> None:
    latest = served.service.get("/runs/latest")
    assert latest.status_code == 200
    report = latest.json()
    assert report["status"] == "ok"
    assert set(report) >= {"files", "articles", "feeds", "errors", "duration_s", "run_id"}
    assert report["files"]["seen"] >= len(EXAMPLES)


@both_dialects()
def test_trigger_command(served: Served, tmp_path: Path) -> None:
    config = str(served.config)
    waited = cli("trigger", "--wait", "--config", config)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.startswith("run ") and " ok: " in waited.stdout and len(waited.stdout.splitlines()) == 1
    plain = cli("trigger", "--config", config)
    assert plain.returncode == 0 and plain.stdout.split()[2] in ("queued", "running")
    # What the README shows a user is what the program prints.
    queued = re.compile(r"run [0-9a-f]{16} (queued|running)")
    finished = re.compile(
        r"run [0-9a-f]{16} ok: \d+ files \(\d+ new, \d+ changed, \d+ deleted, \d+ quarantined\); "
        r"\d+ of \d+ articles published in \d+\.\d\ds"
    )
    assert queued.fullmatch(plain.stdout.strip()) and finished.fullmatch(waited.stdout.strip()), (
        plain.stdout,
        waited.stdout,
    )
    readme = (ROOT / "README.md").read_text().splitlines()
    shown = [line[2:] for line in readme if line.startswith("# run ")]
    assert len(shown) == 2 and queued.fullmatch(shown[0]) and finished.fullmatch(shown[1]), shown

    wrong = cli("trigger", "--config", config, env={"FEEDWORKER_SERVER__TOKEN": "wrong"})
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    no_token = cli("trigger", "--config", config, env={"FEEDWORKER_SERVER__TOKEN": ""})
    assert no_token.returncode == 1 and "server.token is empty" in no_token.stderr
    elsewhere = cli("trigger", "--config", config, env={"FEEDWORKER_SERVER__PORT": str(free_port())})
    assert elsewhere.returncode == 1 and "cannot reach" in elsewhere.stderr
    assert len(elsewhere.stderr.strip().splitlines()) == 1


@both_dialects()
def test_the_token_is_never_logged(served: Served) -> None:
    served.service.post("/runs", headers={"Authorization": "Bearer wrong-guess"})
    served.service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    log = served.service.log()
    assert "trigger.refused" in log and "run.requested" in log
    assert TOKEN not in log and "wrong-guess" not in log


# --- separate services -------------------------------------------------------------------


# SQLite-only: holds the flock beside the database file.
def test_health_before_the_first_run_and_triggers_refused_without_token(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port, server={"token": "", "healthy_within": "4s"})
    database = tmp_path / "db" / "feedworker.db"
    database.parent.mkdir(parents=True)
    # Hold the cycle lock, as a `feedworker run` in another process would: serve must wait.
    import fcntl
    import os

    fd = os.open(str(database) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with Service(config, port) as service:
            service.wait_listening()
            wait_for(lambda: "run.waiting" in service.log(), 20, "serve to wait for the lock")
            healthz = service.get("/healthz")
            assert healthz.status_code == 503
            assert healthz.json()["reason"] == "no run yet" and healthz.json()["running"] is True
            assert service.get("/runs/latest").status_code == 404
            refused = service.post("/runs", headers={"Authorization": "Bearer anything"})
            assert refused.status_code == 403 and "server.token" in refused.json()["error"]
            os.close(fd)
            fd = -1
            service.wait_healthy(30)
            assert service.get("/runs/latest").json()["status"] == "ok"
            stale = wait_for(
                lambda: (r := service.get("/healthz")).status_code == 503 and r.json(),
                20,
                "healthz to turn 503 once the last success is older than healthy_within",
            )
            assert "healthy_within" in stale["reason"]
    finally:
        if fd >= 0:
            os.close(fd)


# SQLite-only: the run fails on the SQLite file's folder.
def test_a_failed_run_makes_healthz_503(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    (tmp_path / "blocker").write_text("a file where the feeds folder's parent should be")
    port = free_port()
    config = write_config(tmp_path, port=port, database="blocker/feedworker.db")
    with Service(config, port) as service:
        service.wait_listening()
        failed = wait_for(
            lambda: (r := service.get("/healthz")).json().get("reason", "").startswith("last run failed") and r,
            30,
            "the failed run to show in healthz",
        )
        assert failed.status_code == 503
        latest = service.get("/runs/latest").json()
        assert latest["status"] == "failed" and latest["message"]
        metrics = service.get("/metrics").text
        assert 'feedworker_runs_total{outcome="failed"} 1.0' in metrics


@both_dialects()
def test_a_trigger_races_two_manual_runs_and_the_scheduler(tmp_path: Path, new_database) -> None:
    urls = make_corpus(tmp_path / "inbox", 300)
    port = free_port()
    url = new_database()
    config = write_config(tmp_path, port=port, database=url, schedule={"every": "1s"}, server={"token": TOKEN})
    url = url or f"sqlite:///{tmp_path / 'db' / 'feedworker.db'}"
    with Service(config, port) as service:
        service.wait_listening()
        env = clean_env()
        command = [sys.executable, "-m", "worker"]
        processes = [
            subprocess.Popen(
                [*command, "run", "--json", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for _ in range(2)
        ]
        processes.append(
            subprocess.Popen(
                [*command, "trigger", "--wait", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
        )
        outputs = [process.communicate(timeout=120) for process in processes]
        for process, (_, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, err
        service.wait_healthy(30)
        assert service.get("/runs/latest").json()["files"]["seen"] == 300
        service.signal(signal.SIGTERM)
        assert service.wait_exit(60) == 0

    assert store_rows(url, "SELECT url, COUNT(*) FROM article GROUP BY url HAVING COUNT(*) > 1") == []
    assert {row[0] for row in store_rows(url, "SELECT url FROM article WHERE NOT removed")} == urls
    assert store_rows(url, "SELECT COUNT(*) FROM source_file") == [(300,)]
    runs = store_rows(url, "SELECT started_at, finished_at, status FROM run ORDER BY started_at")
    assert len(runs) >= 4 and all(status == "ok" for _, _, status in runs)
    for (_, finished, _), (started, _, _) in itertools.pairwise(runs):
        assert finished <= started, "two cycles overlapped"


SIGNAL_CORPUS = 1000  # two batches at least: a safe point comes after the first


@pytest.fixture
def slow_project(tmp_path: Path) -> tuple[Path, Path, int]:
    """A corpus big enough that the first cycle takes a few seconds."""
    make_corpus(tmp_path / "inbox", SIGNAL_CORPUS)
    return tmp_path, tmp_path / "db" / "feedworker.db", free_port()


def _wait_mid_cycle(service: Service, database: Path) -> None:
    def under_way() -> bool:
        if "run.started" not in service.log() or not database.exists() or not lock_held(database):
            return False
        try:
            return db_rows(database, "SELECT COUNT(*) FROM run WHERE status = 'running'")[0][0] == 1
        except sqlite3.OperationalError:  # the schema is still being created
            return False

    wait_for(under_way, 60, "a cycle under way", interval=0.02)


def test_sigterm_mid_cycle_lets_it_finish_and_exits_0(slow_project: tuple[Path, Path, int]) -> None:
    root, database, port = slow_project
    config = write_config(root, port=port, server={"token": TOKEN, "grace_s": 60})
    with Service(config, port) as service:
        service.wait_listening()
        _wait_mid_cycle(service, database)
        service.signal(signal.SIGTERM)
        refused = wait_for(
            lambda: service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 503,
            10,
            "new triggers to be refused while draining",
            interval=0.05,
        )
        assert refused
        assert service.wait_exit(90) == 0
        assert "shutdown.requested" in service.log()
    rows = db_rows(database, "SELECT status FROM run ORDER BY id")
    assert rows == [("ok",)]
    assert db_rows(database, "SELECT COUNT(*) FROM article")[0][0] == SIGNAL_CORPUS


def test_sigterm_after_grace_stops_at_a_safe_point(slow_project: tuple[Path, Path, int]) -> None:
    root, database, port = slow_project
    config = write_config(root, port=port, server={"grace_s": 0})
    with Service(config, port) as service:
        service.wait_listening()
        _wait_mid_cycle(service, database)
        service.signal(signal.SIGTERM)
        assert service.wait_exit(60) == 0
    status, report = db_rows(database, "SELECT status, report_json FROM run ORDER BY id")[-1]
    assert status == "failed" and "safe point" in report
    assert not lock_held(database)
    after = cli("run", "--json", "--config", str(config))
    assert after.returncode == 0, after.stderr
    assert db_rows(database, "SELECT COUNT(*) FROM article WHERE removed = 0")[0][0] == SIGNAL_CORPUS


def test_a_second_signal_exits_at_once(slow_project: tuple[Path, Path, int]) -> None:
    root, database, port = slow_project
    config = write_config(root, port=port, server={"grace_s": 120})
    with Service(config, port) as service:
        service.wait_listening()
        _wait_mid_cycle(service, database)
        service.signal(signal.SIGTERM)
        wait_for(lambda: "shutdown.requested" in service.log(), 10, "the first signal to be handled")
        service.signal(signal.SIGINT)
        assert service.wait_exit(10) == 128 + signal.SIGINT
        # The kernel dropped the lock with the process: the next cycle will not wait.
        assert not lock_held(database)


def test_kill_9_mid_cycle_then_a_restart_recovers_the_lock(slow_project: tuple[Path, Path, int]) -> None:
    root, database, port = slow_project
    config = write_config(root, port=port)
    first = Service(config, port).start()
    try:
        first.wait_listening()
        _wait_mid_cycle(first, database)
        assert first.process is not None
        first.process.kill()  # SIGKILL to serve only: no handler, no cleanup
        first.process.wait(10)
        assert db_rows(database, "SELECT status FROM run ORDER BY id")[-1] == ("running",)
        with Service(config, port) as second:
            second.wait_healthy(90)
            latest = second.get("/runs/latest").json()
            assert latest["status"] == "ok" and latest["files"]["seen"] == SIGNAL_CORPUS
        assert db_rows(database, "SELECT COUNT(*) FROM article WHERE removed = 0")[0][0] == SIGNAL_CORPUS
    finally:
        first.kill_all()


def test_sighup_rereads_the_configuration(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port, server={"token": ""})
    with Service(config, port) as service:
        service.wait_healthy(30)
        assert service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
        write_config(tmp_path, port=port, server={"token": TOKEN})
        service.signal(signal.SIGHUP)
        wait_for(
            lambda: service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202,
            10,
            "the reloaded token to be used",
        )
        config.write_text("sources: [oops", encoding="utf-8")
        service.signal(signal.SIGHUP)
        wait_for(lambda: "config.reload_failed" in service.log(), 10, "the bad config to be refused")
        assert service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 202
        service.signal(signal.SIGTERM)
        assert service.wait_exit(30) == 0


def test_serve_reports_a_taken_port(tmp_path: Path) -> None:
    import socket

    copy_examples(tmp_path / "inbox")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port=port)
        result = cli("serve", "--config", str(config), timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_ctrl_c_to_the_whole_process_group_still_exits_0(slow_project: tuple[Path, Path, int]) -> None:
    import os

    root, database, port = slow_project
    config = write_config(root, port=port)
    with Service(config, port) as service:
        service.wait_listening()
        _wait_mid_cycle(service, database)
        assert service.process is not None
        os.killpg(service.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert service.wait_exit(60) == 0
    assert "Exception in thread" not in service.log()
    status = db_rows(database, "SELECT status FROM run ORDER BY id")[-1][0]
    assert status == "ok", service.log()[-3000:]  # parser processes ignore the group SIGINT
