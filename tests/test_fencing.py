"""The cycle lock on PostgreSQL: a holder whose session is lost writes nothing after another took over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

from tests.conftest import POSTGRES_SERVER, ROOT, fresh_postgres_database, make_project, run_cli
from tests.service_helpers import clean_env, make_corpus, wait_for

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
            holder = admin.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()
            assert holder is not None
            # The lock's session ends (a network cut, a restarted pooler): the process goes on.
            admin.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
            second = run_cli("run", "--json", "--config", str(project.config), env=PINNED, timeout=300)
            out, err = first.communicate(timeout=300)
            taken_over = admin.execute("SELECT max(token) FROM cycle_lease").fetchone()[0]
            runs = admin.execute("SELECT id, status, report_json FROM run ORDER BY id").fetchall()
        assert json.loads(second.stdout)["status"] == "ok"
        assert first.returncode == 1, err.decode()
        report = json.loads(out)
        assert report["status"] == "failed" and "lost the cycle lock" in report["message"]
        assert taken_over >= 2
        # The first run's row was never finished by it (its last write was refused), and the
        # second run found it unfinished: marked interrupted, as after a kill.
        assert runs[0][1] == "interrupted"
        third = json.loads(run_cli("run", "--json", "--config", str(project.config), env=PINNED).stdout)
        assert third["status"] == "ok" and third["articles"]["total"] == 2500
        assert third["files"]["new"] == third["files"]["changed"] == 0
    time.sleep(0)  # the database is gone: nothing of the first process lingers
