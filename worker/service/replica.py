"""What this `serve` process is doing for its group of replicas: its name and role, for /metrics and /healthz."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from worker.config import Config

__all__ = ["ROLES", "GroupHelper", "ReplicaState"]

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


class GroupHelper:
    """This replica's share of the work another replica's cycle offers (PostgreSQL): looks for
    offered files and pages every POLL_S; while there are some, claims, reads or fetches and
    posts them, with its own parser pool and fetch limits. Idle while this replica's own cycle
    runs (it helps itself there)."""

    POLL_S = 0.5

    def __init__(self, config: Callable[[], Config], state: ReplicaState) -> None:
        self._config = config
        self._state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="feedworker-group-helper", daemon=True)

    def start(self) -> None:
        if self._state.shared:
            self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        watcher: _OfferWatcher | None = None
        try:
            while not self._stop.wait(self.POLL_S):
                config = self._config()
                if watcher is None or watcher.url != config.database_url:
                    if watcher is not None:
                        watcher.close()
                    watcher = _OfferWatcher(config.database_url)
                if self._state.role() == "leader":
                    continue
                reads, fetches = watcher.offered()
                if not (reads or fetches):
                    continue
                with self._state.helping():
                    try:
                        if reads:
                            self._state.add_read(self._read(config))
                        if fetches:
                            self._fetch(config)
                    except Exception as exc:  # noqa: BLE001  (logged; the leader does what is left)
                        log.warning("group.help_failed", reason=" ".join(str(exc).split())[:300])
        finally:
            if watcher is not None:
                watcher.close()

    def _read(self, config: Config) -> int:
        from worker.ingest.shared import help_read
        from worker.pipeline import parse_limits
        from worker.store.lock import held_lock_descriptors

        return help_read(
            config.database_url, parse_limits(config), self._state.name, held_lock_descriptors, self._stop.is_set
        )

    def _fetch(self, config: Config) -> int:
        from worker.enrich.shared import help_fetch
        from worker.enrich.stage import fetch_budget, run_on_own_loop

        policy, deadline_s = fetch_budget(config.enrich)
        return help_fetch(config.database_url, policy, deadline_s, self._state.name, self._stop.is_set, run_on_own_loop)


class _OfferWatcher:
    """One connection asking whether files or pages are offered (cheap: EXISTS on small tables)."""

    def __init__(self, url: str) -> None:
        from worker.store.db import connect

        self.url = url
        self._engine = connect(url)

    def offered(self) -> tuple[bool, bool]:
        from worker.store.postgres import open_claims, open_fetches

        try:
            with self._engine.connect() as conn:
                return open_claims(conn), open_fetches(conn)
        except Exception:  # noqa: BLE001  (no schema yet, the database away: nothing to help with now)
            return False, False

    def close(self) -> None:
        self._engine.dispose()
