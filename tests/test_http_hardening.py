"""The HTTP server under abuse: non-feed files, FIFOs, slow, silent and numerous clients, odd run ids."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.service_helpers import (
    ServedExamples,
    Service,
    copy_examples,
    free_port,
    raw_get,
    serve_examples,
    serving_in_process,
    wait_for,
    write_config,
)
from worker.publish.writer import TEMP_PREFIX

MARK = "NOT-A-FEED-DOCUMENT-5f1c"
DEADLINE_S = 10.0  # worker.service.app.REQUEST_TIMEOUT_S, the default `serve` runs with


Served = ServedExamples


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `feedworker serve` over the example articles, with the default HTTP limits."""
    with serve_examples(tmp_path_factory.mktemp("hardening")) as served:
        yield served


def _log_since(service: Service, offset: int) -> str:
    return service.log()[offset:]


# --- (A) only feed documents --------------------------------------------------------------


def test_only_feed_documents_are_served(served: Served) -> None:
    feeds = served.feeds
    planted = [
        "secret.db",
        "config.yaml",
        "notes.txt",
        "all.rss.tmp",
        "all.rss~",
        "rss",
        ".rss",
        f"{TEMP_PREFIX}k2j3h4.tmp",
        f"topics/{TEMP_PREFIX}abc.tmp",
        "topics/notes.txt",
        "topics/feedworker.db-wal",
        f"{TEMP_PREFIX}x.rss",
    ]
    for name in planted:
        (feeds / name).write_text(f"{MARK} {name}", encoding="utf-8")
    (served.root / "outside.rss").write_text(MARK, encoding="utf-8")
    (feeds / "topics" / "out.rss").symlink_to(served.root / "outside.rss")  # leaves the folder
    (feeds / "alias.rss").symlink_to(feeds / "secret.db")  # a feed name for a file that is none
    (feeds / "hidden-alias.atom").symlink_to(feeds / f"{TEMP_PREFIX}x.rss")
    for name in [*planted, "topics/out.rss", "alias.rss", "hidden-alias.atom"]:
        status, body = raw_get(served.service.port, f"/feeds/{name}")
        assert status == 404, name
        assert MARK.encode() not in body, name

    topic = min((feeds / "topics").glob("[!.]*.rss")).stem
    for name in ("all.rss", "all.atom", "index.opml", f"topics/{topic}.rss", f"topics/{topic}.atom"):
        response = served.service.get(f"/feeds/{name}")
        assert response.status_code == 200, name
        assert response.content == (feeds / name).read_bytes()
    # The documents feedworker is to write next (JSON Feed, the HTML index) are served as such.
    (feeds / "all.json").write_text('{"version": "https://jsonfeed.org/version/1.1"}', encoding="utf-8")
    (feeds / "index.html").write_text("<!doctype html><title>Feeds</title>", encoding="utf-8")
    assert served.service.get("/feeds/all.json").headers["content-type"] == "application/feed+json; charset=utf-8"
    assert served.service.get("/feeds/index.html").headers["content-type"] == "text/html; charset=utf-8"


# --- (D) run ids ---------------------------------------------------------------------------


def test_run_ids_that_are_not_plain_decimals_are_404_without_a_traceback(served: Served) -> None:
    offset = len(served.service.log())
    targets = [
        "/runs/" + "9" * 5000,
        "/runs/9223372036854775808",
        "/runs/99999999999999999999999",
        "/runs/%C2%B2",  # '²': str.isdigit() says yes, int() says no
        "/runs/%EF%BC%91",  # a full-width '1'
        "/runs/%D9%A3",  # an Arabic-Indic '3', which int() would take
        "/runs/0",
        "/runs/-1",
        "/runs/+1",
        "/runs/1e3",
        "/runs/%201",
        "/runs/9223372036854775807",  # the largest id a store can hold: no such run
    ]
    for target in targets:
        status, body = raw_get(served.service.port, target)
        assert status == 404, target[:40]
        assert b"9999999999" not in body  # the id is not echoed back
    stored = served.service.get("/runs/latest").json()["run_id"]
    assert served.service.get(f"/runs/{stored}").json()["run_id"] == stored
    log = _log_since(served.service, offset)
    assert "Traceback" not in log and "request.error" not in log


# --- (C) slow and silent clients, on `serve` with its defaults --------------------------------


class SlowClient:
    """A connection that sends `head`, then `payload` one byte every `interval` s, and notes when the server ends it."""

    def __init__(self, port: int, payload: bytes, interval: float, head: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.opened = time.monotonic()
        self.sock.sendall(head)
        self.payload, self.interval = payload, interval
        self.closed_after: float | None = None
        self.received = b""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowClient:
        self.thread.start()
        return self

    def _run(self) -> None:
        self.sock.settimeout(self.interval)
        sent = 0
        try:
            while True:
                if sent < len(self.payload):
                    self.sock.sendall(self.payload[sent : sent + 1])
                    sent += 1
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                self.received += chunk
        except OSError:
            pass  # reset or broken pipe: the server closed it too
        self.closed_after = time.monotonic() - self.opened
        self.sock.close()

    def wait(self, timeout: float) -> float:
        self.thread.join(timeout)
        assert self.closed_after is not None, f"still open after {time.monotonic() - self.opened:.1f}s"
        return self.closed_after


def _endless_headers(count: int = 100_000) -> bytes:
    return b"GET /feeds/all.rss HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: a\r\n" * count


def test_slow_and_silent_clients_are_cut_off_at_the_deadline(served: Served) -> None:
    port = served.service.port
    silent = SlowClient(port, b"", 0.5).start()
    # One header byte every 0.5 s: each byte used to reset uvicorn's only timer.
    drippers = [SlowClient(port, _endless_headers(), 0.5).start() for _ in range(60)]
    try:
        time.sleep(1.0)
        started = time.monotonic()
        with served.service.client() as client:
            response = client.get("/feeds/all.rss")
        assert response.status_code == 200 and time.monotonic() - started < 3
        assert response.content == (served.feeds / "all.rss").read_bytes()
        for client in [silent, *drippers]:
            assert DEADLINE_S - 1 <= client.wait(DEADLINE_S + 5) <= DEADLINE_S + 3
        assert silent.received == b""  # nothing was asked: the connection just ends
        assert all(client.received.startswith(b"HTTP/1.1 408 ") for client in drippers)
    finally:
        for client in [silent, *drippers]:
            client.sock.close()
    assert served.service.get("/feeds/all.rss").status_code == 200


def test_a_connection_flood_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """256 descriptors, 400 idle connections: feeds still answer, and the log stays short."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit (util-linux) is not installed")
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port)
    command = ["prlimit", "--nofile=256:256", "--", sys.executable, "-m", "worker", "serve", "--config", str(config)]
    with Service(config, port, command=command) as service:
        service.wait_healthy(60)
        offset = len(service.log())
        idle: list[socket.socket] = []
        try:
            for _ in range(400):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            for _ in range(3):
                started = time.monotonic()
                response = service.get("/feeds/all.rss")
                assert response.status_code == 200 and time.monotonic() - started < 3
            time.sleep(1.5)  # asyncio used to log a failed accept() up to 128 times a second
        finally:
            for sock in idle:
                sock.close()
        assert service.get("/feeds/all.atom").status_code == 200
        log = _log_since(service, offset)
        # A burst can still hit the descriptor limit between accept() and the cap (seen when
        # another test loads the machine): then one line a minute, without a traceback.
        assert "Traceback" not in log and log.count("Too many open files") <= 1, log[-3000:]
        assert log.count("http.connection_evicted") == 1, log[-3000:]  # once a minute, not per connection


# --- (B) a FIFO in the feeds folder -------------------------------------------------------


def test_a_fifo_in_the_feeds_folder_answers_404_at_once(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port)
    with Service(config, port) as service:
        service.wait_healthy(60)
        feeds = tmp_path / "feeds"
        os.mkfifo(feeds / "topics" / "x.rss")
        os.mkfifo(feeds / "pipe.atom")
        targets = ["/feeds/topics/x.rss", "/feeds/pipe.atom"] * 25  # more than the 40 threads of the pool
        started = time.monotonic()
        with ThreadPoolExecutor(len(targets)) as pool:
            statuses = list(pool.map(lambda target: raw_get(port, target, timeout=5)[0], targets))
        assert statuses == [404] * len(targets)
        assert time.monotonic() - started < 5
        assert service.get("/feeds/all.rss").status_code == 200
        assert service.get("/healthz").status_code == 200


# --- (C) the same server in this process, with small limits ---------------------------------


@contextlib.contextmanager
def in_process(tmp_path: Path, **options: float) -> Iterator[int]:
    """`serve`'s HTTP server on 127.0.0.1 with a small `all.rss`; yields the port."""
    (tmp_path / "feeds").mkdir(parents=True, exist_ok=True)
    (tmp_path / "feeds" / "all.rss").write_bytes(b"<?xml version='1.0'?><rss version='2.0'><channel/></rss>")
    with serving_in_process(tmp_path, **options) as port:
        yield port


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_the_request_deadline_in_process(tmp_path: Path) -> None:
    with in_process(tmp_path, request_timeout_s=2.0) as port:
        silent = SlowClient(port, b"", 0.1).start()
        dripper = SlowClient(port, _endless_headers(), 0.1).start()
        # The body counts too: this POST is answered (403, triggers are off) without being read.
        body_dripper = SlowClient(
            port, b"x" * 100_000, 0.05, head=b"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        ).start()
        # Slow but complete within the deadline: answered.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for piece in (b"GET /feeds/all.rss HT", b"TP/1.1\r\nHost: x\r\n", b"\r\n"):
                sock.sendall(piece)
                time.sleep(0.2)
            assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
            # On a kept-alive connection the deadline starts again with each response.
            time.sleep(0.5)
            sock.sendall(b"GET /feeds/all.rss HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
            opened = time.monotonic()
            for byte in b"GET /feeds/all.rss HTTP/1.1\r\nHost: x\r\n":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
            sock.settimeout(6)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
            assert 1.4 <= time.monotonic() - opened <= 4.5
        assert 1.4 <= silent.wait(8) <= 4.5 and silent.received == b""
        assert 1.4 <= dripper.wait(8) <= 4.5 and dripper.received.startswith(b"HTTP/1.1 408 ")
        assert 1.4 <= body_dripper.wait(8) <= 4.5 and body_dripper.received.startswith(b"HTTP/1.1 403 ")


def test_at_the_connection_cap_the_oldest_waiting_connection_makes_room(tmp_path: Path) -> None:
    with in_process(tmp_path, request_timeout_s=60.0, max_connections=8) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
        try:
            for _ in range(3):
                status, body = raw_get(port, "/feeds/all.rss", timeout=5)
                assert status == 200 and body.startswith(b"<?xml")

            def closed(sock: socket.socket) -> bool:
                sock.settimeout(0.01)
                try:
                    return sock.recv(1) == b""
                except TimeoutError:
                    return False
                except OSError:
                    return True

            def open_ones() -> list[socket.socket] | None:
                left = [sock for sock in idle if not closed(sock)]
                return left if len(left) <= 8 else None

            still_open = wait_for(open_ones, 5, "the oldest idle connections to be closed", interval=0.05)
            assert still_open and all(sock in idle[-8:] for sock in still_open)  # the newest stay
        finally:
            for sock in idle:
                sock.close()


# --- units ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_log_throttle_lets_one_line_a_minute_through() -> None:
    from worker.service.app import LogThrottle, Throttle

    clock = FakeClock()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("tests.http_hardening.throttle")
    logger.propagate = False
    handler = Keep()
    logger.addHandler(handler)
    log_filter = LogThrottle(Throttle(60.0, clock))
    logger.addFilter(log_filter)
    try:
        error = OSError(errno.EMFILE, "Too many open files")
        for _ in range(1000):
            logger.error("socket.accept() out of system resource\nsocket: <fd=3>", exc_info=error)
            logger.warning("Exceeded concurrency limit.")
            clock.now += 0.01
        assert len(records) == 2
        first = records[0]
        assert first.exc_info is None and first.getMessage().endswith("Too many open files")
        assert "not logged" not in first.getMessage()
        clock.now += 60
        logger.error("socket.accept() out of system resource\nsocket: <fd=3>", exc_info=error)
        logger.error("Another message %s", "entirely")
        assert len(records) == 4
        assert "999 more like this in the last 60s not logged" in records[2].getMessage()
        assert records[3].getMessage() == "Another message entirely"
        text = logging.Formatter().format(records[2])
        assert "Traceback" not in text
    finally:
        logger.removeFilter(log_filter)
        logger.removeHandler(handler)


def test_connection_limit_follows_the_descriptor_limit() -> None:
    from worker.service.app import LISTEN_BACKLOG, MAX_CONNECTIONS, REQUEST_TIMEOUT_S, connection_limit

    assert REQUEST_TIMEOUT_S == DEADLINE_S
    assert connection_limit(1_048_576) == MAX_CONNECTIONS
    assert connection_limit(1024) == 1024 - 256 - LISTEN_BACKLOG
    assert connection_limit(64) == 16  # never so few that nothing is served


def test_a_client_that_stops_reading_its_response_is_dropped(tmp_path: Path) -> None:
    # The slow-client attack aimed at the response: ask for a feed larger than the socket
    # buffers and never read it; the connection would otherwise be held for good.
    with in_process(tmp_path, send_timeout_s=1.0, max_connections=4) as port:
        (tmp_path / "feeds" / "all.rss").write_bytes(
            b"<?xml version='1.0'?><rss version='2.0'><channel>"
            + b"<item><title>x</title></item>" * 300_000
            + b"</channel></rss>"
        )
        stuck = []
        for _ in range(4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /feeds/all.rss HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            stuck.append(sock)
        try:
            time.sleep(4)  # past the send timeout: the stuck connections are gone
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        finally:
            for sock in stuck:
                sock.close()
