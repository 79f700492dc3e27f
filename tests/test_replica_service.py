"""Several `serve` replicas on one PostgreSQL database (issue 13 item 2), as real processes:
POST /runs on any replica queues one run for the group; /runs/<id> and /runs/latest answer
the same on every replica; /metrics and /healthz report the replica's role and the group's
last run. And the same fields on SQLite, where a `serve` is a group of one ("single")."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import fresh_postgres_database
from tests.service_helpers import Service, copy_examples, free_port, wait_for, write_config
from worker.config import Config
from worker.report import RunReport
from worker.service import FINISHED
from worker.service.scheduler import Runner

TOKEN = "replica-token-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FAR = {"every": "365d"}  # no scheduled run but the one every `serve` starts with
ROLES = ("single", "leader", "helper", "standby")
NEW_ARTICLE = '---\ntitle: "Replica news"\nwebUrl: "https://news.example.com/replica-news"\ntopics: [Replicas]\n---\n'


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def roles(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """feedworker_replica_role by role: every role is a series, whichever is current."""
    return {role: metrics[("feedworker_replica_role", (("role", role),))] for role in ROLES}


def run_rows(url: str) -> list[tuple[int, str, str | None]]:
    """(id, status, replica) of every row of the run table, oldest first."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        return conn.execute("SELECT id, status, replica FROM run ORDER BY id").fetchall()


def request_rows(url: str) -> dict[str, tuple[str, int | None]]:
    """run_request id -> (replica that took it, run that served it or None)."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute("SELECT id, replica, run_id FROM run_request")}


@contextmanager
def group_lock(url: str) -> Iterator[None]:
    """The group's cycle lock, held by this test: every replica's cycle waits until it ends."""
    from worker.store.lock import cycle_lock

    with cycle_lock(url, holder="the test"):
        yield


def finished_everywhere(services: tuple[Service, ...], request_id: str, timeout: float = 30) -> list[dict[str, Any]]:
    """GET /runs/<id> on each service until every one says it has finished; their answers."""

    def check() -> list[dict[str, Any]] | None:
        answers = []
        for service in services:
            response = service.get(f"/runs/{request_id}")
            assert response.status_code == 200, (service.port, response.text)
            answers.append(response.json())
        return answers if all(answer["status"] in FINISHED for answer in answers) else None

    return wait_for(check, timeout, f"run {request_id} to finish on every replica")


def _replica_config(root: Path, inbox: Path, url: str) -> tuple[Path, int]:
    port = free_port()
    config = write_config(
        root, port=port, sources=[{"path": str(inbox)}], database=url, schedule=FAR, server={"token": TOKEN}
    )
    return config, port


def test_two_replicas_on_one_postgresql_database_act_as_one_group(tmp_path: Path) -> None:
    host = socket.gethostname()
    inbox = tmp_path / "inbox"  # the one source folder both replicas read
    copy_examples(inbox)
    with fresh_postgres_database() as url:
        a_root, b_root = tmp_path / "a", tmp_path / "b"
        a_root.mkdir()
        b_root.mkdir()
        with Service(*_replica_config(a_root, inbox, url)) as a:
            a.wait_healthy(60)  # A's first run (every `serve` starts with one) made the store
            a_name = f"{host}:{a.process.pid}" if a.process else ""
            first = a.get("/healthz").json()
            assert first["replica"] == {"name": a_name, "role": "standby"}
            assert first["group_last_run"]["status"] == "ok" and first["group_last_run"]["replica"] == a_name
            a_run = first["group_last_run"]["run_id"]

            # B starts while the test holds the group's lock: its own first run waits, so B
            # has run nothing, yet it is healthy: the group's last run (A's) succeeded.
            b = Service(*_replica_config(b_root, inbox, url))
            try:
                with group_lock(url):
                    b.start()
                    b.wait_listening()
                    wait_for(lambda: "run.waiting" in b.log(), 20, "B's first run to wait for the lock")
                    b_name = f"{host}:{b.process.pid}" if b.process else ""
                    healthz = b.get("/healthz")
                    assert healthz.status_code == 200, healthz.text
                    body = healthz.json()
                    assert body["status"] == "ok" and body["running"] is True  # its own run: waiting
                    assert body["replica"] == {"name": b_name, "role": "standby"}
                    assert body["group_last_run"] == first["group_last_run"]
                    b_metrics = samples(b.get("/metrics").text)
                    assert b_metrics[("feedworker_runs_total", (("outcome", "ok"),))] == 0
                    assert b_metrics[("feedworker_runs_total", (("outcome", "failed"),))] == 0
                    assert roles(b_metrics) == {"single": 0, "leader": 0, "helper": 0, "standby": 1}
                    assert b_metrics[("feedworker_group_last_run_id", ())] == a_run
                    assert b_metrics[("feedworker_group_last_run_success", ())] == 1
                    assert ("feedworker_replica_files_read_total", ()) in b_metrics
                wait_for(lambda: not b.get("/healthz").json()["running"], 30, "B's first run to end")

                # A run asked of A, with a new file: every replica answers the same for its id.
                (inbox / "replica-news.txt").write_text(NEW_ARTICLE, encoding="utf-8")
                accepted = a.post("/runs", headers=BEARER)
                assert accepted.status_code == 202, accepted.text
                request_id = accepted.json()["run_id"]
                on_a, on_b = finished_everywhere((a, b), request_id)
                assert on_a == on_b
                assert on_a["run_id"] == request_id and on_a["source"] == "http" and on_a["status"] == "ok"
                assert on_a["replica"] == a_name and isinstance(on_a["store_run_id"], int)
                assert on_a["report"]["run_id"] == on_a["store_run_id"] and on_a["report"]["files"]["new"] == 1
                stored = [service.get(f"/runs/{on_a['store_run_id']}") for service in (a, b)]
                assert stored[0].status_code == 200 and stored[0].json() == stored[1].json()

                # Both asked at the same moment while nothing changed: both requests are in the
                # store, waiting, before either cycle can start (the test holds the lock). The
                # first replica to get the lock starts one run, which serves every waiting
                # request; the other's cycle then finds its request served and takes that run's
                # report instead of running. No other run can come (the schedule is a year
                # away), so exactly one run row is added and both requests name it.
                before = run_rows(url)
                with group_lock(url):
                    with ThreadPoolExecutor(2) as pool:
                        answers = list(pool.map(lambda service: service.post("/runs", headers=BEARER), (a, b)))
                    assert [answer.status_code for answer in answers] == [202, 202]
                    ids = [answer.json()["run_id"] for answer in answers]
                    waiting = request_rows(url)
                    assert waiting[ids[0]] == (a_name, None) and waiting[ids[1]] == (b_name, None)
                results = [finished_everywhere((a, b), request_id) for request_id in ids]
                for on_a, on_b in results:
                    assert on_a == on_b and on_a["status"] == "ok"
                after = run_rows(url)
                assert len(after) == len(before) + 1, (before, after)
                new_id, new_status, new_replica = after[-1]
                assert new_status == "ok" and new_replica in (a_name, b_name)
                assert [on_a["store_run_id"] for on_a, _ in results] == [new_id, new_id]
                assert [on_a["replica"] for on_a, _ in results] == [new_replica, new_replica]
                assert {request_id: request_rows(url)[request_id][1] for request_id in ids} == dict.fromkeys(
                    ids, new_id
                )

                latest = [service.get("/runs/latest") for service in (a, b)]
                assert latest[0].status_code == 200 and latest[0].json() == latest[1].json()
                assert latest[0].json()["run_id"] == new_id

                for service, name in ((a, a_name), (b, b_name)):
                    metrics = samples(service.get("/metrics").text)
                    assert roles(metrics) == {"single": 0, "leader": 0, "helper": 0, "standby": 1}
                    assert metrics[("feedworker_group_last_run_id", ())] == new_id
                    assert metrics[("feedworker_group_last_run_success", ())] == 1
                    assert abs(metrics[("feedworker_group_last_run_timestamp_seconds", ())] - time.time()) < 120
                    healthz = service.get("/healthz")
                    assert healthz.status_code == 200, healthz.text
                    assert healthz.json()["replica"] == {"name": name, "role": "standby"}
                    assert healthz.json()["group_last_run"]["run_id"] == new_id
                    assert healthz.json()["group_last_run"]["replica"] == new_replica
            finally:
                b.kill_all()


def test_a_replica_on_sqlite_is_single(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    with Service(write_config(tmp_path, port=port, schedule=FAR), port) as service:
        body = service.wait_healthy(60)
        name = f"{socket.gethostname()}:{service.process.pid}" if service.process else ""
        assert body["status"] == "ok" and body["replica"] == {"name": name, "role": "single"}
        latest = service.get("/runs/latest").json()
        assert body["group_last_run"]["run_id"] == latest["run_id"]
        assert body["group_last_run"]["status"] == "ok" and body["group_last_run"]["replica"] == name
        metrics = samples(service.get("/metrics").text)
        assert roles(metrics) == {"single": 1, "leader": 0, "helper": 0, "standby": 0}
        assert metrics[("feedworker_replica_files_read_total", ())] == 0
        assert metrics[("feedworker_group_last_run_id", ())] == latest["run_id"]
        assert metrics[("feedworker_group_last_run_success", ())] == 1


# --- the runner, with a stand-in cycle ------------------------------------------------------


@pytest.mark.parametrize("database", ["db.sqlite", "postgresql+psycopg://root@127.0.0.1:1/unused"])
def test_the_runner_leads_only_while_its_cycle_holds_the_lock(tmp_path: Path, database: str) -> None:
    """On PostgreSQL the cycle gets the request id and says when it holds the lock (the replica
    is leader until it returns); on SQLite it is called exactly as before."""
    config = Config.model_validate({"sources": [{"path": str(tmp_path)}], "database": database})
    seen: list[tuple[set[str], str]] = []
    done = threading.Event()

    def cycle(config: Config, **kwargs: Any) -> RunReport:
        before = runner.replica.role()
        if "on_locked" in kwargs:
            kwargs["on_locked"]()
        seen.append((set(kwargs), f"{before}->{runner.replica.role()}"))
        done.set()
        return RunReport()

    runner = Runner(config, cycle=cycle)
    runner.start()
    try:
        # On PostgreSQL the request cannot be recorded (nothing listens on port 1): logged, and
        # this runner's own run still serves it.
        request, _ = runner.request("http")
        assert done.wait(10)
        wait_for(lambda: request.done.is_set(), 10, "the run to end")
    finally:
        runner.stop(5, 5)
    if database.startswith("postgresql"):
        assert seen == [({"on_wait", "should_stop", "request_id", "on_locked", "on_read"}, "standby->leader")]
        assert runner.replica.role() == "standby" and request.status == "ok"
    else:
        assert seen == [({"on_wait", "should_stop"}, "single->single")]
        assert runner.replica.role() == "single"


def test_the_group_s_last_run_decides_health_on_postgresql() -> None:
    from datetime import UTC, datetime

    from worker.service.http import group_state, health
    from worker.service.scheduler import RunnerState
    from worker.store.runs import LastRun

    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    base = {"accepting": True, "running": True, "queued": False}
    waiting = RunnerState(**base, last_status=None, last_finished_at=None, last_success_at=None, last_message=None)
    ok = LastRun(run_id=7, status="ok", finished_at=at(90), replica="peer:1", last_success_at=at(90), report={})
    state, _ = group_state(waiting, None, ok)
    assert health(state, 100, 60)[0] == 200  # no run of its own; its peer's succeeded
    assert health(state, 200, 60)[1]["reason"].startswith("last successful run 110s ago")
    failed = LastRun(
        run_id=8,
        status="failed",
        finished_at=at(95),
        replica="peer:1",
        last_success_at=at(90),
        report={"message": "disk full"},
    )
    code, body = health(group_state(waiting, None, failed)[0], 100, 60)
    assert code == 503 and body["reason"] == "last run failed: disk full" and body["last_success_age_s"] == 10
    # Its own run failed after the group's last one, before it reached the database: that decides.
    unreachable = RunnerState(
        **base, last_status="failed", last_finished_at=99, last_success_at=None, last_message="database unreachable"
    )
    mine = {"run_id": None, "status": "failed"}
    assert (
        health(group_state(unreachable, mine, ok)[0], 100, 60)[1]["reason"] == "last run failed: database unreachable"
    )
    assert group_state(waiting, None, None) == (waiting, None)  # nothing read from the store: its own state
