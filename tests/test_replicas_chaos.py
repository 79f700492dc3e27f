"""Three `serve` replicas on one PostgreSQL database and one inbox, killed at random while files
arrive and change: once it settles, the store and the feeds are a single SQLite process's."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.conftest import POSTGRES_SERVER, fresh_postgres_database, run_cli
from tests.service_helpers import _WEB_URL, EXAMPLES, Service, free_port, wait_for

PINNED = {"FEEDWORKER_CLOCK": "2026-11-29T12:00:00+00:00"}
TOKEN = "chaos-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
ROUNDS = 10


class Inbox:
    """Article files made from the examples, each with its own webUrl, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.texts = [path.read_text(encoding="utf-8") for path in EXAMPLES]
        self.files: dict[Path, str] = {}  # file -> its webUrl
        folder.mkdir(parents=True)

    def add(self, count: int) -> None:
        for _ in range(count):
            index = len(self.files)
            text = self.texts[index % len(self.texts)]
            match = _WEB_URL.search(text)
            assert match
            url = f"{match.group(1).rstrip('/')}/chaos-{index}"
            text = text[: match.start()] + f'webUrl: "{url}"' + text[match.end() :]
            path = self.folder / f"{index:05d}.txt"
            self._write(path, text)
            self.files[path] = url

    def edit(self, rng: random.Random, count: int, round_: int) -> None:
        for path in rng.sample(sorted(self.files), count):
            text = path.read_text(encoding="utf-8")
            self._write(path, text.replace("title:", f"title: Round {round_} -", 1))

    @staticmethod
    def _write(path: Path, text: str) -> None:
        temp = path.with_name(f".{path.name}.part")  # not an article name: the scan skips it
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)


def replica_config(root: Path, inbox: Path, database: str, port: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "sources": [{"path": str(inbox)}],
        "database": database,
        "feeds": {"dir": "feeds", "base_url": "http://feeds.example.test/feeds/", "title": "Chaos News"},
        "schedule": {"every": "1s"},
        "enrich": {"fetch": False},
        "server": {"host": "127.0.0.1", "port": port, "token": TOKEN, "grace_s": 5},
    }
    path = root / "feedworker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start(config: Path, port: int) -> Service:
    service = Service(config, port, env=PINNED).start()
    service.wait_listening()
    return service


def settled_run(service: Service) -> dict[str, Any]:
    """A run asked for by hand that found nothing to do: files and feeds as they were."""

    def idle_run() -> dict[str, Any] | None:
        asked = service.post("/runs", headers=HEADERS)
        assert asked.status_code == 202, asked.text
        run_id = asked.json()["run_id"]
        done = wait_for(
            lambda: (r := service.get(f"/runs/{run_id}").json()).get("status") in ("ok", "failed") and r, 60, "a run"
        )
        report = done["report"]
        quiet = report["files"]["new"] == report["files"]["changed"] == report["feeds"]["written"] == 0
        return report if done["status"] == "ok" and quiet else None

    return wait_for(idle_run, 120, "a run with nothing left to do", interval=0.5)


def test_three_replicas_killed_at_random_end_as_one_sqlite_process(tmp_path: Path) -> None:
    rng = random.Random(13)
    inbox = Inbox(tmp_path / "inbox")
    inbox.add(150)  # more than a parser pool's inline minimum: the first ingest is shared out
    with fresh_postgres_database() as database:
        ports = [free_port() for _ in range(3)]
        configs = [replica_config(tmp_path / f"replica{i}", inbox.folder, database, ports[i]) for i in range(3)]
        replicas = [start(configs[i], ports[i]) for i in range(3)]
        try:
            for round_ in range(ROUNDS):
                inbox.add(rng.randint(20, 90))
                inbox.edit(rng, 10, round_)
                time.sleep(rng.uniform(0.2, 1.5))  # cycles under way on some replica
                victim = rng.randrange(3)
                os.killpg(replicas[victim].process.pid, signal.SIGKILL)  # type: ignore[union-attr]
                replicas[victim].process.wait(10)  # type: ignore[union-attr]
                replicas[victim] = start(configs[victim], ports[victim])
            report = settled_run(replicas[0])
            assert report["files"]["seen"] == len(inbox.files)

            # Each file's article stored once; none lost.
            with psycopg.connect(f"{POSTGRES_SERVER}/{database.rsplit('/', 1)[1]}") as conn:
                files = conn.execute("SELECT path, state, article_url FROM source_file").fetchall()
                articles = conn.execute("SELECT url FROM article WHERE removed = false").fetchall()
                claims = conn.execute("SELECT count(*) FROM parse_claim").fetchone()
                runs = conn.execute("SELECT count(*), count(DISTINCT replica) FROM run").fetchone()
            assert sorted(path for path, _, _ in files) == sorted(str(path) for path in inbox.files)
            assert {state for _, state, _ in files} == {"ok"}
            assert sorted(url for (url,) in articles) == sorted(inbox.files.values())
            assert claims == (0,)  # every offered file stored, the queue empty
            assert runs[1] >= 3  # cycles ran on more than the first replicas (restarts are new processes)

            # The same files on SQLite, one process, one run.
            single = tmp_path / "single"
            single.mkdir()
            config = yaml.safe_load(configs[0].read_text())
            config["database"] = "data/feedworker.db"
            (single / "feedworker.yaml").write_text(yaml.safe_dump(config))
            result = run_cli("run", "--json", "--config", str(single / "feedworker.yaml"), env=PINNED)
            assert json.loads(result.stdout)["articles"]["total"] == len(inbox.files)
            expected = {
                path.relative_to(single / "feeds").as_posix(): path.read_bytes()
                for path in sorted((single / "feeds").rglob("*"))
                if path.is_file()
            }
            assert len(expected) > 10

            # Every replica serves every feed, byte-identical to the SQLite process's, with the same
            # validators (a document's Last-Modified is sent once the second it was stored in is over).
            time.sleep(1.1)
            for name, body in expected.items():
                answers = [replica.get(f"/feeds/{name}") for replica in replicas]
                assert [answer.status_code for answer in answers] == [200, 200, 200], name
                assert all(answer.content == body for answer in answers), name
                validators = {(answer.headers["etag"], answer.headers.get("last-modified")) for answer in answers}
                assert len(validators) == 1, (name, validators)
            assert replicas[1].get("/feeds/topics/no-such-topic.atom").status_code == 404
        finally:
            for replica in replicas:
                replica.kill_all()
