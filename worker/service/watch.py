"""The source-folder watcher of `serve`: watchfiles events -> changed paths -> an incremental cycle."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from worker.config import Config
from worker.ingest.scanner import folder_state, is_ignored_name

__all__ = ["WATCH_STATES", "SourceWatcher", "WatchSnapshot", "WatchState"]

log = structlog.get_logger("worker.service")

# off: `watch: false` (or not `serve`); starting: the watches are being set up; watching: events
# arrive; limited: the kernel's inotify watch limit ran out (the schedule alone finds changes);
# failed: the watcher stopped for another reason (same: the schedule goes on).
WATCH_STATES = ("off", "starting", "watching", "limited", "failed")


@dataclass(frozen=True, slots=True)
class WatchSnapshot:
    """The watcher as /metrics, /status, /healthz and the run report show it."""

    state: str
    reason: str | None = None  # why "limited" or "failed"
    folders: int = 0  # source folders watched
    events: int = 0  # changed paths received since start
    cycles: int = 0  # incremental cycles run for them
    last_event_at: float | None = None  # Unix time of the newest change received

    @property
    def enabled(self) -> bool:
        return self.state != "off"

    def to_dict(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "state": self.state,
            "reason": self.reason,
            "folders": self.folders,
            "events": self.events,
            "cycles": self.cycles,
            "last_event_at": self.last_event_at,
        }


class WatchState:
    """Thread-safe: the watcher thread sets it, HTTP handlers and the runner read it."""

    def __init__(self, state: str = "off") -> None:
        self._lock = threading.Lock()
        self._snapshot = WatchSnapshot(state)

    def snapshot(self) -> WatchSnapshot:
        with self._lock:
            return self._snapshot

    def set(self, state: str, reason: str | None = None, *, folders: int | None = None) -> None:
        with self._lock:
            current = self._snapshot
            self._snapshot = WatchSnapshot(
                state,
                reason,
                current.folders if folders is None else folders,
                current.events,
                current.cycles,
                current.last_event_at,
            )

    def saw(self, paths: int, at: float) -> None:
        with self._lock:
            s = self._snapshot
            self._snapshot = WatchSnapshot(s.state, s.reason, s.folders, s.events + paths, s.cycles, at)

    def ran_cycle(self) -> None:
        with self._lock:
            s = self._snapshot
            self._snapshot = WatchSnapshot(s.state, s.reason, s.folders, s.events, s.cycles + 1, s.last_event_at)


class SourceWatcher:
    """Watches the source folders (watchfiles: inotify on Linux) and asks for an incremental
    cycle of the paths that changed: `request(paths)`, which joins a run already queued, so a
    burst of changes makes one or a few cycles. A change is grouped with those that follow
    within STEP_MS (at most DEBOUNCE_MS in all). Files younger than their folder's
    `settle_s` are asked for once they are old enough.

    The scheduled full scan stays the safety net: a folder on NFS or another host's volume
    sends no events, and when the kernel's inotify watch limit runs out the watcher says so
    (state "limited", in the log, /metrics, /status and the run reports) and tries again
    every RETRY_S while the schedule goes on. `watch: false` (reloaded on SIGHUP) stops it.
    """

    STEP_MS = 10
    DEBOUNCE_MS = 400
    TICK_MS = 250  # how often it looks at the folders themselves (gone, back, config changed)
    RETRY_S = 30.0

    def __init__(
        self,
        config: Callable[[], Config],
        request: Callable[[set[str]], object],
        state: WatchState,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._request = request
        self._state = state
        self._clock = clock
        self._stop = threading.Event()
        self._later: dict[str, float] = {}  # path -> when it has settled
        # Each source folder's (device, inode) when last watched (None: gone); None: never watched.
        self._identities: dict[str, tuple[int, int] | None] | None = None
        self._thread = threading.Thread(target=self._loop, name="feedworker-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            config = self._config()
            if not config.watch:
                self._state.set("off", folders=0)
                self._stop.wait(self.TICK_MS / 1000)
                continue
            roots = [str(source.path) for source in config.sources]
            watchable = [root for root in roots if folder_state(root, open_it=True)[0] == "ok"]
            if not watchable:
                self._fail("failed", "no source folder can be watched (missing or unreadable)", folders=0)
                self._stop.wait(self.TICK_MS / 1000)
                continue
            self._state.set("starting", folders=len(watchable))
            try:
                self._watch(config, watchable)
            except OSError as exc:
                text = " ".join(str(exc).split())
                if "watch limit" in text:
                    reason = (
                        "the kernel's inotify watch limit ran out (fs.inotify.max_user_watches):"
                        " changes are found by the scheduled scan"
                    )
                    self._fail("limited", reason, folders=len(watchable))
                else:
                    self._fail("failed", f"{text[:200]}: changes are found by the scheduled scan")
                self._stop.wait(self.RETRY_S)
            except Exception as exc:  # a bug must not end the watching for good
                log.exception("watch.error", error=f"{type(exc).__name__}: {exc}")
                self._fail("failed", f"{type(exc).__name__}: changes are found by the scheduled scan")
                self._stop.wait(self.RETRY_S)

    def _fail(self, state: str, reason: str, *, folders: int | None = None) -> None:
        if self._state.snapshot().state != state or self._state.snapshot().reason != reason:
            log.warning("watch." + state, reason=reason)
        self._state.set(state, reason, folders=folders)

    def _watch(self, config: Config, roots: list[str]) -> None:
        import watchfiles

        identity = {root: _identity(root) for root in roots}
        settle = {str(source.path).rstrip(os.sep) + os.sep: source.settle_s for source in config.sources}
        started = False
        for changes in watchfiles.watch(
            *roots,
            watch_filter=None,
            debounce=self.DEBOUNCE_MS,
            step=self.STEP_MS,
            stop_event=self._stop,
            rust_timeout=self.TICK_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
            # Not True: it also hides a watch limit that ran out (nothing watched, nothing said).
            ignore_permission_denied=False,
        ):
            if not started:
                started = True
                self._state.set("watching", folders=len(roots))
                log.info("watch.started", folders=len(roots))
                self._ask_for_moved_folders(identity)
            if changes:
                self._changed({path for _, path in changes}, settle)
            self._release_settled()
            if self._folders_changed(config, roots, identity):
                log.info("watch.restarting", reason="the source folders changed")
                gone = {root for root in roots if _identity(root) is None}
                self._ask(gone, self._clock())  # the cycle then says so, as a full scan would
                self._identities = {**(self._identities or {}), **dict.fromkeys(gone)}
                return

    def _changed(self, paths: set[str], settle: dict[str, float]) -> None:
        now = self._clock()
        ready = set()
        for path in paths:
            if is_ignored_name(os.path.basename(path)):
                continue  # an editor's swap file, a partial download: the rename to its name counts
            wait_s = next((settle_s for inside, settle_s in settle.items() if path.startswith(inside)), 0.0)
            due = _settled_at(path, wait_s) if wait_s else None
            if due is not None and due > now:
                self._later[path] = due
            else:
                ready.add(path)
        if ready:
            self._ask(ready, now)

    def _release_settled(self) -> None:
        if not self._later:
            return
        now = self._clock()
        due = {path for path, when in self._later.items() if when <= now}
        for path in due:
            del self._later[path]
        if due:
            self._ask(due, now)

    def _ask(self, paths: set[str], now: float) -> None:
        if not paths:
            return
        self._state.saw(len(paths), now)
        log.debug("watch.changed", paths=len(paths))
        self._request(paths)

    def _folders_changed(self, config: Config, roots: list[str], identity: dict[str, tuple[int, int] | None]) -> bool:
        """Whether to watch again: the config (SIGHUP) names other folders or turned watching
        off, a watched folder was replaced or removed, or a missing one appeared."""
        current = self._config()
        if current is not config and (
            not current.watch or [str(s.path) for s in current.sources] != [str(s.path) for s in config.sources]
        ):
            return True
        if any(_identity(root) != identity[root] for root in roots):
            return True
        return any(folder_state(str(s.path))[0] == "ok" for s in config.sources if str(s.path) not in identity)

    def _ask_for_moved_folders(self, identity: dict[str, tuple[int, int] | None]) -> None:
        """A source folder moved away, back, or replaced sends no event for the files in it:
        once watched again, a cycle looks at the whole of each folder not as it was."""
        if self._identities is not None:
            self._ask({root for root, now in identity.items() if self._identities.get(root) != now}, self._clock())
        self._identities = {**(self._identities or {}), **identity}


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _settled_at(path: str, settle_s: float) -> float | None:
    try:
        return os.stat(path).st_mtime + settle_s
    except OSError:
        return None  # gone: nothing to wait for
