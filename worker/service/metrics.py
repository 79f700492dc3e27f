"""Prometheus metrics of the service, kept in a private registry and rendered for GET /metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from worker.service.replica import ROLES, ReplicaState
from worker.service.watch import WATCH_STATES, WatchSnapshot, WatchState

if TYPE_CHECKING:
    from worker.store.runs import LastRun

__all__ = ["CONTENT_TYPE", "FILE_STATES", "ServiceMetrics"]

# The classic text format: every Prometheus version and most scrapers read it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
FILE_STATES = ("new", "changed", "unchanged", "deleted", "quarantined")
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class ServiceMetrics:
    """The metrics one `serve` process exposes; a private registry so tests and reloads never clash.

    `replica` (set by `serve`, or by create_app from its runner) is read at each scrape for
    feedworker_replica_role and feedworker_replica_files_read_total; without one the role is
    "single" and no file was read.
    """

    def __init__(self, replica: ReplicaState | None = None, watch: WatchState | None = None) -> None:
        self.replica = replica
        self.watch = watch  # the source-folder watcher (serve with `watch: true`); None: off
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "feedworker_runs", "Cycles run by this server, by outcome.", ["outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "feedworker_run_duration_seconds",
            "Duration of the cycles run by this server.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.files = Gauge("feedworker_files", "Files of the last run, by state.", ["state"], registry=self.registry)
        self.articles = Gauge("feedworker_articles", "Stored articles (removed ones excluded).", registry=self.registry)
        self.published = Gauge(
            "feedworker_articles_published", "Stored articles that are in the feeds.", registry=self.registry
        )
        self.last_success = Gauge(
            "feedworker_last_success_timestamp_seconds",
            "Unix time the last successful run finished (0: none yet).",
            registry=self.registry,
        )
        self.triggers = Counter(
            "feedworker_triggers", "POST /runs requests, by result.", ["result"], registry=self.registry
        )
        self.source_up = Gauge(
            "feedworker_source_up",
            "1 while the source folder is there and readable (checked at each scrape), else 0.",
            ["source"],
            registry=self.registry,
        )
        self.source_files = Gauge(
            "feedworker_source_files",
            "Files seen under the source folder by the last run.",
            ["source"],
            registry=self.registry,
        )
        self.group_last_run_id = Gauge(
            "feedworker_group_last_run_id",
            "Store id of the newest run that ended, on any replica or process (0: none yet).",
            registry=self.registry,
        )
        self.group_last_run_success = Gauge(
            "feedworker_group_last_run_success",
            "1 when the newest run that ended (any replica or process) succeeded, else 0.",
            registry=self.registry,
        )
        self.group_last_run_timestamp = Gauge(
            "feedworker_group_last_run_timestamp_seconds",
            "Unix time the newest run that ended (any replica or process) finished (0: none yet).",
            registry=self.registry,
        )
        self.registry.register(_ReplicaCollector(self))
        self.registry.register(_WatchCollector(self))
        self.websub = Counter(
            "feedworker_websub_pings",
            "WebSub hub notifications after cycles that changed feeds, by result (failed: after the retries).",
            ["result"],
            registry=self.registry,
        )
        self._sources_lock = threading.Lock()
        self._sources: set[str] = set()
        # Every label value present from the start, so dashboards and alerts see zeros, not gaps.
        for outcome in ("ok", "failed"):
            self.runs.labels(outcome)
        for state in FILE_STATES:
            self.files.labels(state)
        for result in ("accepted", "unauthorized", "forbidden", "unavailable"):
            self.triggers.labels(result)
        for result in ("ok", "failed"):
            self.websub.labels(result)

    def observe_run(self, report: dict[str, Any], finished_at: float) -> None:
        """Record one finished cycle from its report (`status`, `files`, `articles`, `duration_s`)."""
        ok = report.get("status") == "ok"
        self.runs.labels("ok" if ok else "failed").inc()
        websub = report.get("websub") or {}
        if isinstance(websub, dict):
            self.websub.labels("ok").inc(int(websub.get("pinged", 0) or 0))
            self.websub.labels("failed").inc(int(websub.get("failed", 0) or 0))
        self.duration.observe(float(report.get("duration_s") or 0.0))
        files = report.get("files") or {}
        for state in FILE_STATES:
            self.files.labels(state).set(int(files.get(state, 0)))
        with self._sources_lock:
            for entry in report.get("sources") or []:
                path = entry.get("path") if isinstance(entry, dict) else None
                if not isinstance(path, str):
                    continue
                self._sources.add(path)
                self.source_up.labels(path).set(1 if entry.get("state") == "ok" else 0)
                count = entry.get("files")
                self.source_files.labels(path).set(count if isinstance(count, int) else 0)
        if ok:
            # A failed run's article counts are partial or missing: keep the last good ones.
            articles = report.get("articles") or {}
            self.articles.set(int(articles.get("total", 0)))
            self.published.set(int(articles.get("published", 0)))
            self.last_success.set(finished_at)

    def observe_sources(self, states: Iterable[tuple[str, bool]]) -> None:
        """The configured source folders now, as (path, up): a folder no longer configured
        (SIGHUP) loses its series, a new one starts with 0 files until a run counts them."""
        states = list(states)
        with self._sources_lock:
            current = {path for path, _ in states}
            for gone in self._sources - current:
                self.source_up.remove(gone)
                self.source_files.remove(gone)
            for path, up in states:
                if path not in self._sources:
                    self.source_files.labels(path).set(0)
                self.source_up.labels(path).set(1 if up else 0)
            self._sources = current

    def observe_group(self, last: LastRun | None) -> None:
        """The group's newest finished run as the store has it (read at each scrape)."""
        self.group_last_run_id.set(last.run_id if last is not None else 0)
        self.group_last_run_success.set(1 if last is not None and last.status == "ok" else 0)
        self.group_last_run_timestamp.set(last.finished_at.timestamp() if last is not None else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ReplicaCollector(Collector):
    """This replica's role (one series per role, 1 for the current one) and the files it read
    for the group, from its ReplicaState at each scrape: a counter kept by ReplicaState itself."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families("single", 0)

    def collect(self) -> Iterable[Metric]:
        replica = self._metrics.replica
        if replica is None:
            return self._families("single", 0)
        return self._families(replica.role(), replica.files_read)

    @staticmethod
    def _families(current: str, files_read: int) -> list[Metric]:
        role = GaugeMetricFamily(
            "feedworker_replica_role",
            "1 for this replica's current role (single: SQLite store; leader: runs the group's cycle;"
            " helper: reads files for the leader; standby: neither), 0 for the others.",
            labels=["role"],
        )
        for name in ROLES:
            role.add_metric([name], 1.0 if name == current else 0.0)
        files = CounterMetricFamily(
            "feedworker_replica_files_read",
            "Article files this replica read for its group (its own cycles' and other leaders').",
            value=files_read,
        )
        return [role, files]


class _WatchCollector(Collector):
    """The source-folder watcher's state (one series per state, 1 for the current one), the
    folders it watches, the changed paths it saw and the incremental cycles they made."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families(WatchSnapshot("off"))

    def collect(self) -> Iterable[Metric]:
        watch = self._metrics.watch
        return self._families(watch.snapshot() if watch is not None else WatchSnapshot("off"))

    @staticmethod
    def _families(snapshot: WatchSnapshot) -> list[Metric]:
        state = GaugeMetricFamily(
            "feedworker_watch_state",
            "1 for the source-folder watcher's current state (off: `watch: false`; watching: changes"
            " run incremental cycles; limited: the inotify watch limit ran out; failed: see the log;"
            " in both, the schedule alone finds changes), 0 for the others.",
            labels=["state"],
        )
        for name in WATCH_STATES:
            state.add_metric([name], 1.0 if name == snapshot.state else 0.0)
        folders = GaugeMetricFamily(
            "feedworker_watch_folders", "Source folders the watcher watches.", value=snapshot.folders
        )
        events = CounterMetricFamily(
            "feedworker_watch_paths", "Changed paths the watcher saw in the source folders.", value=snapshot.events
        )
        cycles = CounterMetricFamily(
            "feedworker_watch_cycles", "Incremental cycles run for the paths the watcher saw.", value=snapshot.cycles
        )
        return [state, folders, events, cycles]
