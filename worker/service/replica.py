"""What this `serve` process is doing for its group of replicas: its name and role, for /metrics and /healthz."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import structlog

from worker.config import Config

__all__ = ["ROLES", "ReadHelper", "ReplicaState"]

log = structlog.get_logger("worker.service")

# single: the store is SQLite (one process); leader: this replica holds the cycle lock and runs
# the group's cycle; helper: it reads files the leader's cycle shares out; standby: neither.
ROLES = ("single", "leader", "helper", "standby")


class ReplicaState:
    """Thread-safe: the runner and the read helper set it, the HTTP handlers read it."""

    def __init__(self, name: str, *, shared: bool) -> None:
        self.name = name
        self.shared = shared  # one of a group on PostgreSQL
        self._lock = threading.Lock()
        self._leading = 0
        self._helping = 0
        self._files_read = 0

    def role(self) -> str:
        with self._lock:
            if not self.shared:
                return "single"
            if self._leading:
                return "leader"
            return "helper" if self._helping else "standby"

    @property
    def files_read(self) -> int:
        """Files this replica read for the group (its own cycles' and other leaders')."""
        with self._lock:
            return self._files_read

    def add_read(self, count: int) -> None:
        with self._lock:
            self._files_read += count

    def leader_from_now(self) -> None:
        """Called once the cycle holds the lock (until `done_leading`)."""
        with self._lock:
            self._leading += 1

    def done_leading(self) -> None:
        with self._lock:
            self._leading = max(0, self._leading - 1)

    @contextmanager
    def helping(self) -> Iterator[None]:
        with self._lock:
            self._helping += 1
        try:
            yield
        finally:
            with self._lock:
                self._helping -= 1


class ReadHelper:
    """This replica's share of a large ingest another replica's cycle offers (PostgreSQL): looks
    for offered files every POLL_S, and while there are some, claims, reads and posts them
    with its own parser pool. Idle while this replica's own cycle runs (it reads for itself)."""

    POLL_S = 0.5

    def __init__(self, config: Callable[[], Config], state: ReplicaState) -> None:
        self._config = config
        self._state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="feedworker-read-helper", daemon=True)

    def start(self) -> None:
        if self._state.shared:
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        from worker.ingest.shared import help_read
        from worker.pipeline import parse_limits
        from worker.store.lock import held_lock_descriptors

        watcher: _OfferWatcher | None = None
        try:
            while not self._stop.wait(self.POLL_S):
                config = self._config()
                if watcher is None or watcher.url != config.database_url:
                    if watcher is not None:
                        watcher.close()
                    watcher = _OfferWatcher(config.database_url)
                if self._state.role() == "leader" or not watcher.offered():
                    continue
                with self.helping():
                    try:
                        read = help_read(
                            config.database_url,
                            parse_limits(config),
                            self._state.name,
                            held_lock_descriptors,
                            self._stop.is_set,
                        )
                    except Exception as exc:  # noqa: BLE001  (a helper's failure is logged; the leader reads the rest)
                        log.warning("reads.help_failed", reason=" ".join(str(exc).split())[:300])
                        continue
                self._state.add_read(read)
        finally:
            if watcher is not None:
                watcher.close()

    def helping(self) -> AbstractContextManager[None]:
        return self._state.helping()


class _OfferWatcher:
    """One connection asking whether files are offered (cheap: an EXISTS on a small table)."""

    def __init__(self, url: str) -> None:
        from worker.store.db import connect

        self.url = url
        self._engine = connect(url)

    def offered(self) -> bool:
        from worker.store.postgres import open_claims

        try:
            with self._engine.connect() as conn:
                return open_claims(conn)
        except Exception:  # noqa: BLE001  (no schema yet, the database away: nothing to help with now)
            return False

    def close(self) -> None:
        self._engine.dispose()
