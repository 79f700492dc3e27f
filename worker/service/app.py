"""`feedworker serve`: wires the runner, the scheduler and the HTTP server, and handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from types import FrameType
from typing import Any, ClassVar

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.config import Config, ConfigError, load_config
from worker.ingest.parsers import start_parser_server
from worker.logging import configure_logging
from worker.pipeline import replica_name, run_cycle, warm_entries
from worker.service.http import StoreReader, create_app
from worker.service.metrics import ServiceMetrics
from worker.service.replica import GroupHelper, ReplicaState
from worker.service.scheduler import Runner, ServiceScheduler, build_trigger
from worker.service.watch import SourceWatcher, WatchState
from worker.store.postgres import is_postgres

__all__ = [
    "KEEP_ALIVE_S",
    "LISTEN_BACKLOG",
    "LOG_INTERVAL_S",
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT_S",
    "SAFE_POINT_WAIT_S",
    "SEND_TIMEOUT_S",
    "LogThrottle",
    "OrphanReaper",
    "ServiceError",
    "Throttle",
    "connection_limit",
    "http_server",
    "serve",
]

log = structlog.get_logger("worker.service")

# After server.grace_s the cycle is asked to stop at its next safe point (between batches);
# this bounds how long that may take before the process gives up on it.
SAFE_POINT_WAIT_S = 30.0
HTTP_SHUTDOWN_S = (
    5  # uvicorn takes whole seconds (an int); open keep-alive connections do not hold the exit longer than this
)

# uvicorn has no deadline for receiving a request, and every byte resets its keep-alive
# timer: a client sending one header line every few seconds held a connection for as long
# as it liked. A complete request (headers and body) must now arrive within this many
# seconds of the connection opening, or of the previous response on a kept-alive one.
REQUEST_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5  # idle time allowed between two requests on one connection
# A response the client stops reading holds its connection too: once the socket's buffer is
# full and stays full this long, the connection is dropped.
SEND_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000  # open connections at most (fewer under a low descriptor limit)
_MIN_CONNECTIONS = 16
# Descriptors kept for everything but connections: the database, feed files being served,
# source files of a cycle, the parser processes' pipes, enrichment fetches.
_DESCRIPTOR_RESERVE = 256
# Both the listen queue and how many connections asyncio accepts in one go: each is a
# descriptor before the cap below can close it, so a burst must fit beside the reserve.
LISTEN_BACKLOG = 128
LOG_INTERVAL_S = 60.0  # a message repeated by every connection is logged at most this often
# accept() failures asyncio reports: it retries them itself, so one line a minute is enough.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Loggers third-party code writes per connection on: asyncio logs every failed accept() (with
# a traceback, up to LISTEN_BACKLOG times a second), uvicorn every malformed or refused request.
_THROTTLED_LOGGERS = ("asyncio", "uvicorn.error")
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\nconnection: close\r\n\r\nRequest Timeout"
)


class ServiceError(Exception):
    """The service cannot start (address in use, bad schedule); the message says why."""


class Throttle:
    """At most one event per key and interval; counts the ones it holds back in between."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._quiet_until: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        """None to hold this event back; else how many with this key were held back since the last."""
        with self._lock:
            now = self._clock()
            if now < self._quiet_until.get(key, now):
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._quiet_until) >= 1024:
                # Keys come from message texts: a bound, should some text vary without end.
                self._quiet_until.clear()
                self._held.clear()
            self._quiet_until[key] = now + self.interval_s
            return self._held.pop(key, 0)


class LogThrottle(logging.Filter):
    """A logging filter: each message (by its first line) once per interval, with a count of the
    ones held back, and without the traceback of an out-of-descriptors error."""

    def __init__(self, throttle: Throttle | None = None) -> None:
        super().__init__()
        self.throttle = throttle or Throttle()

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).partition("\n")[0]
        held = self.throttle(f"{record.name}\x00{first_line}")
        if held is None:
            return False
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
            # Where asyncio's accept() failed says nothing the error's text does not.
            record.msg, record.args = f"{record.getMessage()}\n{error.strerror}", ()
            record.exc_info, record.exc_text = None, None
        if held:
            record.msg, record.args = (
                f"{record.getMessage()}\n({held} more like this in the last {self.throttle.interval_s:g}s not logged)",
                (),
            )
        return True


def _throttled(throttle: Throttle, level: int, event: str, **fields: Any) -> None:
    held = throttle(event)
    if held is not None:
        log.log(level, event, not_logged_since_last=held, **fields)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each complete request and a cap on connections.

    Connections waiting for a request are kept oldest first; at the cap, a new connection
    closes the oldest of them: a client that sends its request at once is served even while
    slow or silent ones hold every other connection. One class per server (http_server).
    """

    request_timeout_s: ClassVar[float]
    send_timeout_s: ClassVar[float]
    max_connections: ClassVar[int]
    throttle: ClassVar[Throttle]
    waiting: ClassVar[dict[_GuardedH11Protocol, None]]  # insertion order: the oldest first

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._stalled: asyncio.TimerHandle | None = None

    # Narrowed to Transport as uvicorn's H11Protocol narrows it: a stream server hands its protocols a Transport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # see above
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._evict_oldest():
            # Every other connection has a request in progress: nothing to make room with.
            _throttled(
                self.throttle,
                logging.WARNING,
                "http.connection_refused",
                reason="connection limit reached",
                limit=self.max_connections,
            )
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._writing_resumed()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.send_timeout_s, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writing_resumed()

    def _writing_resumed(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _send_timed_out(self) -> None:
        self._stalled = None
        _throttled(self.throttle, logging.INFO, "http.send_timeout", timeout_s=self.send_timeout_s)
        self.transport.abort()  # close() would wait for the buffer the client does not read

    def handle_events(self) -> None:
        super().handle_events()
        if self._deadline is not None and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the request is in; answering it has no deadline here

    def on_response_complete(self) -> None:
        # Armed before uvicorn looks at pipelined requests, which may complete (and disarm) at once.
        if not self.transport.is_closing():
            self._arm()
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._timed_out)
        self.waiting[self] = None

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.waiting.pop(self, None)

    def _timed_out(self) -> None:
        self._deadline = None
        self.waiting.pop(self, None)
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            # Part of a request line or headers came: say why the connection ends. (Once the
            # headers are in, the app has the request and may be answering it: no 408 then.)
            self.transport.write(_TIMEOUT_RESPONSE)
        _throttled(self.throttle, logging.INFO, "http.request_timeout", timeout_s=self.request_timeout_s)
        self.transport.close()

    def _evict_oldest(self) -> bool:
        victim = next((other for other in self.waiting if other is not self), None)
        if victim is None:
            return False
        victim._disarm()
        victim.transport.close()
        _throttled(
            self.throttle,
            logging.WARNING,
            "http.connection_evicted",
            reason="connection limit reached: the oldest connection waiting for a request was closed",
            limit=self.max_connections,
        )
        return True


def connection_limit(descriptors: int | None = None) -> int:
    """How many connections to keep open at most, given the descriptor limit (default: this process's)."""
    if descriptors is None:
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if descriptors < 0 or descriptors == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(_MIN_CONNECTIONS, min(MAX_CONNECTIONS, descriptors - _DESCRIPTOR_RESERVE - LISTEN_BACKLOG))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling, and with per-connection log lines throttled.

    uvicorn >= 0.29 restores the previous SIGTERM handler after a graceful shutdown and
    raises the signal again, so the process would die with -15; `serve` handles signals.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.log_filter = LogThrottle()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        loggers = [logging.getLogger(name) for name in _THROTTLED_LOGGERS]
        for logger in loggers:
            logger.addFilter(self.log_filter)
        try:
            await super().serve(sockets)
        finally:
            for logger in loggers:
                logger.removeFilter(self.log_filter)


def http_server(
    app: Any,
    *,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int | None = None,
    send_timeout_s: float = SEND_TIMEOUT_S,
) -> uvicorn.Server:
    """The uvicorn server of `serve` for `app`; run it with `.run(sockets=[a listening socket])`."""
    limit = connection_limit() if max_connections is None else max_connections
    protocol = type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {
            "request_timeout_s": request_timeout_s,
            "send_timeout_s": send_timeout_s,
            "max_connections": limit,
            "throttle": Throttle(),
            "waiting": {},
        },
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=HTTP_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=LISTEN_BACKLOG,
        # uvicorn answers 503 from this many connections or requests in flight. The protocol
        # keeps connections at `limit`, so this is the backstop for requests in flight.
        limit_concurrency=limit + 1,
    )
    return _Server(config)


_PR_GET_CHILD_SUBREAPER = 37


def adopts_orphans() -> bool:
    """Whether processes that lose their parent below this one become its children: it is
    PID 1 (a container without an init) or a child subreaper (Linux)."""
    if os.getpid() == 1:
        return True
    flag = ctypes.c_int(0)
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0
    except (OSError, AttributeError):  # not Linux
        return False


class OrphanReaper:
    """Reaps the <defunct> children this process adopted and nobody else will wait for.

    As PID 1 of a container without an init (or as a subreaper) `serve` becomes the parent
    of every process below it that loses its own, e.g. the parser processes of a fork server
    that died (killed by the OOM killer), or those of a `feedworker run` started with
    `docker exec` and killed. Once they exit they stay zombies unless `serve` waits for them.

    Children that their creator waits for itself are left alone: the fork server and the
    resource tracker (multiprocessing waits for them when it starts them again, and fails if
    they were reaped), any multiprocessing Process, and, for any other child, whoever waits
    for it does so at once: only a zombie seen on two sweeps in a row, `interval_s` apart, is
    reaped. No signal handler, no waitpid(-1): each reap names its pid.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self._seen: set[tuple[int, int]] = set()  # (pid, start time): a reused pid is another process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="feedworker-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep(self) -> list[int]:
        """Reap the zombie children already seen on the last sweep; returns their pids."""
        own = _waited_for_by_their_creator()
        zombies = {(pid, started) for pid, started in _zombie_children() if pid not in own}
        reaped = []
        for pid, started in sorted(zombies & self._seen):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
            except ChildProcessError:
                pass  # its creator was quicker
        self._seen = {(pid, started) for pid, started in zombies if pid not in reaped}
        if reaped:
            log.info("service.reaped", pids=reaped, reason="orphans adopted by this process")
        return reaped

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:
                log.exception("service.reaper_failed")


def _zombie_children() -> set[tuple[int, int]]:
    """(pid, start time in clock ticks) of each zombie child of this process."""
    me = os.getpid()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return set()
    zombies = set()
    for task in tasks:
        try:
            with open(f"/proc/{me}/task/{task}/children", "rb") as handle:
                pids = [int(pid) for pid in handle.read().split()]
        except OSError:  # a thread that just ended; or no CONFIG_PROC_CHILDREN
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    text = handle.read()
            except OSError:
                continue
            fields = text[text.rindex(b")") + 2 :].split()
            if fields[0] == b"Z" and int(fields[1]) == me:
                zombies.add((pid, int(fields[19])))
    return zombies


def _waited_for_by_their_creator() -> set[int]:
    import multiprocessing.forkserver
    import multiprocessing.process
    import multiprocessing.resource_tracker

    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    for _ in range(5):
        try:  # a set other threads change: copied again should it change meanwhile
            pids.update(process.pid for process in list(multiprocessing.process._children))  # type: ignore[attr-defined]  # CPython's private set of live children; typeshed leaves it out
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("multiprocessing's children kept changing")  # the caller skips this sweep
    return {pid for pid in pids if isinstance(pid, int)}


class _Service:
    """The running pieces and what signals do to them."""

    def __init__(self, config: Config, sock: socket.socket, clock: Callable[[], datetime] | None = None) -> None:
        # This process in its group of replicas: one of several on a PostgreSQL store, else single.
        self.replica = ReplicaState(replica_name(), shared=is_postgres(config.database_url))
        self.watch = WatchState("starting" if config.watch else "off")
        self.metrics = ServiceMetrics(replica=self.replica, watch=self.watch)
        cycle = functools.partial(run_cycle, clock=clock) if clock is not None else run_cycle
        self.runner = Runner(
            config, metrics=self.metrics, replica=self.replica, cycle=cycle, watch=self.watch, warm=warm_entries
        )
        # Changed files make incremental cycles at once; the schedule's full scans stay the safety net.
        self.watcher = SourceWatcher(lambda: self.runner.config, self.runner.request_paths, self.watch)
        # Reads files and fetches pages the leader of the group offers, while this replica does not lead.
        self.group_helper = GroupHelper(lambda: self.runner.config, self.replica)
        self.scheduler = ServiceScheduler(self.runner)
        # One read-only engine for every HTTP request, closed when the server has stopped.
        self.store = StoreReader()
        self.server = http_server(
            create_app(
                self.runner,
                self.metrics,
                next_run=self.scheduler.next_run_time,
                store=self.store,
                replica=self.replica,
            )
        )
        self.sock = sock
        self.reaper = OrphanReaper() if adopts_orphans() else None
        self.clean = True
        self._stopping = False
        self._reload_lock = threading.Lock()

    def run(self) -> int:
        config = self.runner.config
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            self.runner.start()
            self.group_helper.start()
            self.scheduler.start(config.schedule)
            self.watcher.start()
            if self.reaper is not None:
                self.reaper.start()
            host, port = self.sock.getsockname()[:2]
            log.info(
                "service.started",
                host=host,
                port=port,
                every_s=config.schedule.every,
                cron=config.schedule.cron,
                triggers_enabled=bool(config.server.token),
                feeds_dir=str(config.feeds.dir),
                watch=config.watch,
            )
            self.server.run(sockets=[self.sock])
        finally:
            if self.reaper is not None:
                self.reaper.stop()
            # Also reached when the HTTP server stops on its own: never leave a cycle behind.
            if not self._stopping:
                self._stopping = True
                self._drain()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.store.close()
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
        self.watcher.stop()
        self.group_helper.stop()
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
            log.info(
                "config.reloaded",
                every_s=new.schedule.every,
                cron=new.schedule.cron,
                triggers_enabled=bool(new.server.token),
            )


def serve(config: Config, clock: Callable[[], datetime] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns 0 after a clean shutdown (exits 1 if a cycle had to be abandoned).
    `clock`: the cycles' time (FEEDWORKER_CLOCK pins it, as for `run`)."""
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
        return _Service(config, sock, clock).run()
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
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock
