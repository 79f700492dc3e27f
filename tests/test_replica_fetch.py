"""Related pages fetched by several replicas on PostgreSQL: a host at a time, so its limit holds for the group."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from tests.conftest import POSTGRES_SERVER, article_text, fresh_postgres_database
from tests.nodns import fake_names
from tests.service_helpers import Service, free_port, wait_for, write_config

HOSTS = [f"127.0.0.{n}" for n in range(1, 9)]  # loopback addresses: one host each for the fetcher
PAGES_PER_HOST = 4
PER_HOST = 2
DELAY_S = 0.4
TOKEN = "fetch-token"


class Pages:
    """One page server per loopback address, counting requests in flight per host."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most: dict[str, int] = defaultdict(int)
        self.served = 0
        pages = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                host = self.server.server_address[0]
                with pages.lock:
                    pages.in_flight[host] += 1
                    pages.most[host] = max(pages.most[host], pages.in_flight[host])
                try:
                    time.sleep(DELAY_S)
                finally:
                    # Out of flight before the answer goes: once the client has it, it may send the
                    # next request at once, before this thread would run again to count this one out.
                    with pages.lock:
                        pages.in_flight[host] -= 1
                        pages.served += 1
                body = f"<html><head><title>Page {self.path}</title></head><body>x</body></html>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        with fake_names():  # http.server asks for the name of the address it binds
            self.servers = [ThreadingHTTPServer((host, self.port), Handler) for host in HOSTS]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def url(self, host: str, page: int) -> str:
        return f"http://{host}:{self.port}/p/{page}"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def fetched_by(log: str) -> int:
    """The pages a replica's log says it fetched for the group."""
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return sum(event["pages"] for event in events if event.get("event") == "fetches.helped")


def test_replicas_share_the_fetches_a_host_at_a_time(tmp_path: Path) -> None:
    pages = Pages()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    enrich = {
        "fetch": True,
        "allow_private_networks": True,
        "per_host": PER_HOST,
        "concurrency": 8,
        "max_seconds": "30s",
    }
    try:
        with fresh_postgres_database() as database:
            replicas = []
            for name in ("a", "b"):
                root = tmp_path / name
                root.mkdir()
                (root / "inbox").symlink_to(inbox)
                port = free_port()
                config = write_config(
                    root, port=port, database=database, enrich=enrich, server={"token": TOKEN}, schedule={"every": "1h"}
                )
                replicas.append(Service(config, port).start())
            try:
                for replica in replicas:
                    replica.wait_listening()
                    replica.wait_healthy()  # its first run is over: the inbox was empty then
                for index, host in enumerate(HOSTS):
                    related = [{"webUrl": pages.url(host, page)} for page in range(PAGES_PER_HOST)]
                    text = article_text(
                        title=f"Article {index}", web_url=f"https://news.example.com/{index}", related=related
                    )
                    (inbox / f"{index}.txt").write_text(text)
                asked = replicas[0].post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
                run_id = asked.json()["run_id"]
                done = wait_for(
                    lambda: (r := replicas[0].get(f"/runs/{run_id}").json())["status"] in ("ok", "failed") and r,
                    90,
                    "the run",
                )
                assert done["status"] == "ok", done
                total = len(HOSTS) * PAGES_PER_HOST
                assert done["report"]["enrich"]["fetched"] == total
                name = database.rsplit("/", 1)[1]
                with psycopg.connect(f"{POSTGRES_SERVER}/{name}") as conn:
                    statuses = conn.execute("SELECT status, count(*) FROM page GROUP BY status").fetchall()
                    left = conn.execute("SELECT count(*) FROM fetch_claim").fetchone()
                assert statuses == [("ok", total)] and left == (0,)
                assert pages.served == total  # each page fetched once, by one replica
                # Never more than per_host requests at once to one host, across both replicas.
                assert max(pages.most.values()) <= PER_HOST
                assert max(pages.most.values()) == PER_HOST  # and the limit was used
                # Both replicas fetched: the leader took the first hosts, the other the rest.
                helped = {name: fetched_by(service.log()) for name, service in zip("ab", replicas, strict=True)}
                assert all(count > 0 for count in helped.values()), helped
                assert sum(helped.values()) == total
            finally:
                for replica in replicas:
                    replica.kill_all()
    finally:
        pages.close()
