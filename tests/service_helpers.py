"""Helpers for the `serve` tests: free ports, corpora, configs, a running service, polling with deadlines."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import yaml

__all__ = [
    "EXAMPLES",
    "ROOT",
    "ServedExamples",
    "Service",
    "clean_env",
    "copy_examples",
    "free_port",
    "lock_held",
    "make_corpus",
    "raw_get",
    "resolve_feed_path",
    "serve_examples",
    "serving_in_process",
    "wait_for",
    "wait_idle",
    "write_config",
]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "inbox").rglob("*.txt"))
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_feed_path(root: Path, relative: str) -> Path | None:
    """The feed file /feeds/<relative> serves from `root`, as worker.service.http resolves it; None if refused."""
    from worker.service.http import _resolve

    resolved = _resolve(root, relative)
    return None if resolved is None else Path(resolved[0], *resolved[1])


def wait_idle(runner: Any, timeout: float) -> bool:
    """Wait until `runner` (a worker.service.scheduler.Runner) has nothing running or queued."""
    deadline = time.monotonic() + timeout
    while True:
        state = runner.state()
        if not state.running and not state.queued:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (httpx.TransportError, OSError, ValueError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" ({last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


_WEB_URL = re.compile(r'^webUrl: "?([^"\n]+?)"?\s*$', re.MULTILINE)


def copy_examples(inbox: Path) -> int:
    """The bundled example articles, as they are; returns how many."""
    inbox.mkdir(parents=True, exist_ok=True)
    for path in EXAMPLES:
        (inbox / path.name).write_bytes(path.read_bytes())
    return len(EXAMPLES)


def make_corpus(inbox: Path, count: int) -> set[str]:
    """`count` articles made from the examples, each with its own webUrl; returns the URLs."""
    inbox.mkdir(parents=True, exist_ok=True)
    texts = [path.read_text(encoding="utf-8") for path in EXAMPLES]
    urls: set[str] = set()
    for index in range(count):
        text = texts[index % len(texts)]
        match = _WEB_URL.search(text)
        assert match, "an example without webUrl"
        url = f"{match.group(1).rstrip('/')}/copy-{index}"
        urls.add(url)
        text = text[: match.start()] + f'webUrl: "{url}"' + text[match.end() :]
        (inbox / f"{index:05d}.txt").write_text(text, encoding="utf-8")
    return urls


def write_config(root: Path, *, port: int, database: str | None = None, **sections: Any) -> Path:
    """A config under `root` (inbox, db, feeds beside it); `database` a store's URL (or path)
    instead of db/feedworker.db (see conftest.store_database); `sections` override whole keys."""
    config: dict[str, Any] = {
        "sources": [{"path": "inbox"}],
        "database": database or "db/feedworker.db",
        "feeds": {"dir": "feeds", "base_url": "http://feeds.example.test/feeds/", "title": "Test News"},
        "schedule": {"every": "1h"},
        "enrich": {"fetch": False},
        "server": {"host": "127.0.0.1", "port": port, "token": "", "grace_s": 30},
        # Runs only by the schedule and by hand, so each test knows which run did what;
        # tests/test_watch.py turns the watcher on.
        "watch": False,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = root / "feedworker.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without FEEDWORKER_* (and proxies), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FEEDWORKER_") and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(extra or {})
    return env


def lock_held(database: Path) -> bool:
    """True while some process holds the cycle lock of this database (a cycle is under way)."""
    path = Path(str(database) + ".lock")
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we got it
    return False


def raw_get(port: int, target: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (clients normalise `..` away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


@dataclass
class Service:
    """`feedworker serve` as a real subprocess in its own session; stderr goes to a log file."""

    config: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> Self:
        self.log_path = self.config.parent / f"serve-{time.monotonic_ns()}.log"
        command = self.command or [sys.executable, "-m", "worker", "serve", "--config", str(self.config)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(self.env),
                cwd=ROOT,
                start_new_session=True,  # so teardown can end its parser processes too
            )
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10.0, trust_env=False, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.post(path, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_listening(self, timeout: float = 20.0) -> None:
        def listening() -> bool:
            if not self.alive():
                raise AssertionError(f"serve exited early:\n{self.log()}")
            return self.get("/metrics").status_code == 200

        wait_for(listening, timeout, "serve to listen")

    def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: (r := self.get("/healthz")).status_code == 200 and r.json(), timeout, "GET /healthz to answer 200"
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running {timeout}s later:\n{self.log()[-3000:]}") from None

    def kill_all(self) -> None:
        """Teardown: end serve and whatever it started, whatever state it is in."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


@dataclass
class ServedExamples:
    service: Service
    root: Path
    feeds: Path


@contextmanager
def serve_examples(root: Path, **config: Any) -> Iterator[ServedExamples]:
    """A healthy `feedworker serve` over the example articles in `root`, configured with `config`."""
    copy_examples(root / "inbox")
    port = free_port()
    with Service(write_config(root, port=port, **config), port) as service:
        service.wait_healthy(60)
        yield ServedExamples(service, root, root / "feeds")


@contextmanager
def serving_in_process(tmp_path: Path, *, clock: Callable[[], float] | None = None, **options: Any) -> Iterator[int]:
    """`serve`'s HTTP server (create_app + http_server) in this process, on 127.0.0.1 port 0,
    over an empty store and `tmp_path/feeds`; `options` go to http_server. Yields the port."""
    import threading

    from worker.config import Config
    from worker.service.app import http_server
    from worker.service.http import create_app
    from worker.service.metrics import ServiceMetrics
    from worker.service.scheduler import Runner

    feeds = tmp_path / "feeds"
    feeds.mkdir(parents=True, exist_ok=True)
    config = Config.model_validate(
        {
            "sources": [{"path": str(tmp_path / "inbox")}],
            "database": str(tmp_path / "db.sqlite"),
            "feeds": {"dir": str(feeds)},
        }
    )
    metrics = ServiceMetrics()
    app = create_app(Runner(config, metrics=metrics), metrics, **({"clock": clock} if clock else {}))
    server = http_server(app, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, "the in-process server to start")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
