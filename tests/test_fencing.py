"""The cycle lock on PostgreSQL: a holder whose session is lost writes nothing after another took over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import yaml

from tests.conftest import POSTGRES_SERVER, ROOT, fresh_postgres_database, make_project, run_cli
from tests.service_helpers import clean_env, make_corpus, wait_for
from worker.store.postgres import _LOCK_KEY

PINNED = {"FEEDWORKER_CLOCK": "2026-11-29T12:00:00+00:00"}


def test_a_holder_that_lost_its_lock_session_writes_nothing_after_the_takeover(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    make_corpus(project.inbox, 2500)
    with fresh_postgres_database() as database:
        config = yaml.safe_load(project.config.read_text())
        config["database"] = database
        project.config.write_text(yaml.safe_dump(config))
        name = database.rsplit("/", 1)[1]
        first = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--json", "--config", str(project.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(PINNED),
            cwd=ROOT,
        )
        with psycopg.connect(f"{POSTGRES_SERVER}/{name}", autocommit=True) as admin:

            def storing() -> bool:
                # Past the first batches: the holder is writing articles.
                try:
                    return admin.execute("SELECT count(*) FROM article").fetchone()[0] > 0
                except psycopg.errors.UndefinedTable:
                    return False

            wait_for(storing, 60, "the first cycle to store articles", interval=0.02)
            # The holder stalls (a paused container, a long GC) while its lock's session ends (a
            # network cut, a restarted pooler), and another holder takes the lock over.
            os.kill(first.pid, signal.SIGSTOP)
            # This database's holder: pg_locks lists the whole server's, and tests running beside
            # this one (replicas on their own databases) hold advisory locks of the same key.
            holder = admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            assert holder is not None
            admin.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
            admin.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            os.kill(first.pid, signal.SIGCONT)  # it goes on, with a lock it no longer holds
            # Raising the token waits for the transaction it may be in, then fences it out.
            admin.execute("UPDATE cycle_lease SET token = token + 1, holder = 'test' WHERE id = 1")
            stored_at_takeover = admin.execute("SELECT count(*), max(updated_at) FROM article").fetchone()
            out, err = first.communicate(timeout=300)
            after = admin.execute("SELECT count(*), max(updated_at) FROM article").fetchone()
            run_row = admin.execute("SELECT id, status FROM run ORDER BY id").fetchall()
            admin.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
            second = json.loads(run_cli("run", "--json", "--config", str(project.config), env=PINNED).stdout)
            runs = admin.execute("SELECT id, status, report_json FROM run ORDER BY id").fetchall()
        assert first.returncode == 1, err.decode()
        report = json.loads(out)
        assert report["status"] == "failed" and "lost the cycle lock" in report["message"]
        assert after == stored_at_takeover  # not one article written by it after the takeover
        assert run_row[0][1] == "running"  # not even its run row's end
        assert second["status"] == "ok" and second["articles"]["total"] == 2500
        # The first run's row was never finished by it (its last write was refused), and the
        # next run found it unfinished: marked interrupted, as after a kill.
        assert runs[0][1] == "interrupted"
        third = json.loads(run_cli("run", "--json", "--config", str(project.config), env=PINNED).stdout)
        assert third["status"] == "ok" and third["files"]["new"] == third["files"]["changed"] == 0


def first_run_on(project, database: str) -> str:
    """The project's store moved to the PostgreSQL `database` and a first run done there; the
    database's address for an administrator's connection."""
    config = yaml.safe_load(project.config.read_text())
    config["database"] = database
    project.config.write_text(yaml.safe_dump(config))
    run_cli("run", "--config", str(project.config))
    return f"{POSTGRES_SERVER}/{database.rsplit('/', 1)[1]}"


def test_a_request_whose_serving_run_died_is_served_by_the_next_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    with fresh_postgres_database() as database:
        with psycopg.connect(first_run_on(project, database), autocommit=True) as admin:
            # A replica's run took request R, then died (kill -9): its row stays "running".
            dead = admin.execute(
                "INSERT INTO run (started_at, status, replica) VALUES (now(), 'running', 'gone:1') RETURNING id"
            ).fetchone()[0]
            admin.execute(
                "INSERT INTO run_request (id, source, replica, requested_at, run_id)"
                " VALUES ('00000000000000aa', 'http', 'gone:1', now() AT TIME ZONE 'UTC', %s)",
                (dead,),
            )
            report = json.loads(run_cli("run", "--json", "--config", str(project.config)).stdout)
            served = admin.execute("SELECT run_id FROM run_request WHERE id = '00000000000000aa'").fetchone()[0]
            statuses = dict(admin.execute("SELECT id, status FROM run").fetchall())
        assert statuses[dead] == "interrupted"
        assert served == report["run_id"] and statuses[served] == "ok"  # not left on the dead run


def test_a_request_for_a_run_is_served_by_a_full_cycle_never_by_a_watchers_cycle_of_some_paths(
    tmp_path: Path,
) -> None:
    """`POST /runs` asks the group for a full run. A replica's watcher cycle, which looked at
    the paths that changed alone (working or idle), started after the request must leave it
    waiting (its report would say "files seen: 1" for a run asked to scan everything); the
    next full cycle serves it."""
    from worker.config import load_config
    from worker.pipeline import run_cycle

    project = make_project(tmp_path)
    for number in range(3):
        project.article(f"a{number}.txt", title=f"A{number}", web_url=f"https://a.example/{number}")
    with fresh_postgres_database() as database:
        with psycopg.connect(first_run_on(project, database), autocommit=True) as admin:
            admin.execute(
                "INSERT INTO run_request (id, source, replica, requested_at)"
                " VALUES ('00000000000000bb', 'http', 'other:1', now() AT TIME ZONE 'UTC' - interval '1 second')"
            )
            loaded = load_config(project.config)
            changed = project.article("a1.txt", title="A1, edited", web_url="https://a.example/1")
            working = run_cycle(loaded, paths=[str(changed)])  # stores the edit: a working cycle
            idle = run_cycle(loaded, paths=[str(changed)])  # nothing left: an idle one
            assert working.files.changed == 1 and idle.files.changed == 0
            waiting = admin.execute("SELECT run_id FROM run_request WHERE id = '00000000000000bb'").fetchone()[0]
            full = run_cycle(loaded)
            served = admin.execute("SELECT run_id FROM run_request WHERE id = '00000000000000bb'").fetchone()[0]
        assert waiting is None
        assert served == full.run_id
