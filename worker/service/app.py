"""`feedworker serve`: wires the runner, the scheduler and the HTTP server, and handles signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import structlog
import uvicorn

from worker.config import Config, ConfigError, load_config
from worker.logging import configure_logging
from worker.pipeline import start_parser_server
from worker.service.http import create_app
from worker.service.metrics import ServiceMetrics
from worker.service.scheduler import Runner, ServiceScheduler, build_trigger

__all__ = ["SAFE_POINT_WAIT_S", "ServiceError", "serve"]

log = structlog.get_logger("worker.service")

# After server.grace_s the cycle is asked to stop at its next safe point (between batches);
# this bounds how long that may take before the process gives up on it.
SAFE_POINT_WAIT_S = 30.0
HTTP_SHUTDOWN_S = 5.0  # open keep-alive connections do not hold the exit longer than this


class ServiceError(Exception):
    """The service cannot start (address in use, bad schedule); the message says why."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling.

    uvicorn >= 0.29 restores the previous SIGTERM handler after a graceful shutdown and
    raises the signal again, so the process would die with -15; `serve` handles signals.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Service:
    """The running pieces and what signals do to them."""

    def __init__(self, config: Config, sock: socket.socket) -> None:
        self.metrics = ServiceMetrics()
        self.runner = Runner(config, metrics=self.metrics)
        self.scheduler = ServiceScheduler(self.runner)
        app = create_app(self.runner, self.metrics)
        self.server = _Server(
            uvicorn.Config(
                app, log_config=None, access_log=False, lifespan="off", server_header=False,
                timeout_graceful_shutdown=HTTP_SHUTDOWN_S,
            )
        )
        self.sock = sock
        self.clean = True
        self._stopping = False
        self._reload_lock = threading.Lock()

    def run(self) -> int:
        config = self.runner.config
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self.runner.start()
            self.scheduler.start(config.schedule)
            host, port = self.sock.getsockname()[:2]
            log.info(
                "service.started", host=host, port=port, every_s=config.schedule.every, cron=config.schedule.cron,
                triggers_enabled=bool(config.server.token), feeds_dir=str(config.feeds.dir),
            )
            self.server.run(sockets=[self.sock])
        finally:
            # Also reached when the HTTP server stops on its own: never leave a cycle behind.
            if not self._stopping:
                self._stopping = True
                self._drain()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("service.stopped", clean=self.clean)
        if not self.clean:
            # The abandoned cycle's thread and parser pool would hold up interpreter exit;
            # leaving now is safe (transactions, atomic feed replacement).
            os._exit(1)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: hand the work to threads, return fast.
        if signum == signal.SIGHUP:
            threading.Thread(target=self._reload, name="feedworker-reload", daemon=True).start()
            return
        if self._stopping:
            os.write(2, f"feedworker: second {signal.Signals(signum).name}: exiting now\n".encode())
            # Safe: every store write is a transaction and feeds are replaced atomically.
            os._exit(128 + signum)
        self._stopping = True
        threading.Thread(target=self._drain, args=(signum,), name="feedworker-shutdown", daemon=True).start()

    def _drain(self, signum: int | None = None) -> None:
        grace_s = self.runner.config.server.grace_s
        if signum is not None:
            log.info("shutdown.requested", signal=signal.Signals(signum).name, grace_s=grace_s)
        self.scheduler.shutdown()
        self.clean = self.runner.stop(grace_s, SAFE_POINT_WAIT_S)
        if not self.clean:
            log.error("shutdown.run_abandoned", reason="the cycle did not reach a safe point in time")
        self.server.should_exit = True

    def _reload(self) -> None:
        with self._reload_lock:
            if self._stopping:
                return
            old = self.runner.config
            try:
                new = load_config(old.path)
                build_trigger(new.schedule)  # refuse an unusable schedule before applying anything
            except (ConfigError, ValueError) as exc:
                log.error("config.reload_failed", reason=str(exc), kept="the running configuration")
                return
            new.feeds.dir.mkdir(parents=True, exist_ok=True)
            configure_logging(new.log_level)
            self.runner.config = new
            self.scheduler.reschedule(new.schedule)
            if (new.server.host, new.server.port) != (old.server.host, old.server.port):
                log.warning("config.restart_needed", keys=["server.host", "server.port"])
            log.info("config.reloaded", every_s=new.schedule.every, cron=new.schedule.cron,
                     triggers_enabled=bool(new.server.token))


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns 0 after a clean shutdown (exits 1 if a cycle had to be abandoned)."""
    try:
        build_trigger(config.schedule)
    except ValueError as exc:
        raise ServiceError(f"schedule: {exc}") from None
    try:
        config.feeds.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot create the feeds folder {config.feeds.dir}: {exc.strerror}") from None
    sock = _listen(config.server.host, config.server.port)
    start_parser_server()
    try:
        return _Service(config, sock).run()
    finally:
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a taken port is a clear one-line error, not a half-started service."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock
