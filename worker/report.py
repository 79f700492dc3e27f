"""The run report: typed while a cycle fills it, JSON (keys as the README documents them) when done."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from worker.model import ArticleCounts, EnrichCounts, FeedCounts, FileCounts, Scan, WebSubCounts

__all__ = ["INTERRUPTED_MESSAGE", "CycleError", "RunReport", "interrupted_report", "unreadable_sources"]

INTERRUPTED_MESSAGE = (
    "the process running this cycle ended before it finished (killed?); the next cycle took over its work"
)


@dataclass(slots=True)
class RunReport:
    status: str = "ok"  # "ok" | "failed" | "interrupted"
    files: FileCounts = field(default_factory=FileCounts)
    articles: ArticleCounts = field(default_factory=ArticleCounts)
    feeds: FeedCounts = field(default_factory=FeedCounts)
    enrich: EnrichCounts = field(default_factory=EnrichCounts)
    websub: WebSubCounts = field(default_factory=WebSubCounts)
    # Each source folder in config order: {"path", "state": "ok" | "missing" | "unreadable" | "empty", "files"}.
    sources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    run_id: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    waited_s: float = 0.0
    message: str | None = None
    # "full": every source folder was scanned; "paths": an incremental cycle of the paths the
    # watcher saw change (`files` then counts those alone).
    scan: str = "full"
    watch: dict[str, Any] | None = None  # the watcher's state when `serve` ran it (WatchSnapshot.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunReport:
        """A stored report read back (GET /runs of another replica's run; unknown keys ignored)."""
        data = orjson.loads(text)
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name, kind in (
            ("files", FileCounts),
            ("articles", ArticleCounts),
            ("feeds", FeedCounts),
            ("enrich", EnrichCounts),
        ):
            if isinstance(known.get(name), dict):
                fields = kind.__dataclass_fields__
                known[name] = kind(**{key: value for key, value in known[name].items() if key in fields})
        return cls(**known)

    def fail(self, message: str) -> None:
        self.status = "failed"
        self.message = message

    def show_sources(self, found: Scan) -> None:
        self.sources = [{"path": source.path, "state": source.state, "files": source.files} for source in found.sources]

    def add_quarantined(self, quarantined: list[dict[str, str]]) -> None:
        self.files.quarantined = len(quarantined)
        self.errors.extend(quarantined)


class CycleError(Exception):
    """The cycle could not complete (unusable database, unwritable feeds folder); carries the report."""

    def __init__(self, message: str, report: RunReport):
        super().__init__(message)
        self.report = report


def interrupted_report(run_id: int, started_at: str) -> str:
    """The report a cycle writes for a run it found still marked running (its process died)."""
    report = RunReport(status="interrupted", run_id=run_id, started_at=started_at, message=INTERRUPTED_MESSAGE)
    return report.to_json().decode()


def unreadable_sources(sources: Iterable[dict[str, Any]], errors: Iterable[dict[str, str]]) -> str:
    """The source folders of a run report that could not be read, with the reason of each:
    `/data/inbox2 (No such file or directory), ...`; empty when every one was read."""
    reasons = {error.get("path"): error.get("message", "") for error in errors}
    shown = []
    for source in sources:
        if source.get("state") == "ok":
            continue
        reason = reasons.get(source.get("path"), "").rpartition("cannot be read: ")[2] or source.get("state")
        shown.append(f"{source.get('path')} ({reason})")
    return ", ".join(shown)
