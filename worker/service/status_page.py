"""Pure: the status, this process's state and the watcher's -> the HTML of GET /status, its run chart inline SVG."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker.publish.page import html_template

__all__ = ["CHART_RUNS", "StatusPage", "chart", "render_status_page"]

TEMPLATE = "status.html.j2"
CHART_RUNS = 100  # the runs drawn: the newest, one mark each
STORE_STATES = ("ok", "none", "unreadable")  # read; no store yet (no run); could not be read

# The chart's geometry, in the SVG's own units (its viewBox); it scales to the page's width.
_WIDTH = 960
_LEFT = 8
_RIGHT = 64  # room for the y axis' labels, on the right: next to the newest runs (in view on a phone)
_SLOT = (_WIDTH - _LEFT - _RIGHT) / CHART_RUNS  # one run per slot, the newest at the right
_BAR = _SLOT * 0.7
# (key, heading, top of the plot, height of the plot)
_PANELS = (
    ("duration", "Duration (seconds)", 26.0, 100.0),
    ("files", "Files new, changed, deleted", 156.0, 80.0),
    ("feeds", "Feeds written", 266.0, 56.0),
)
_FAILED_ROW = 330.0  # the failed runs' marks, under the last panel
_HEIGHT = 372
_FILE_KINDS = ("new", "changed", "deleted")


@dataclass(frozen=True, slots=True)
class StatusPage:
    """What GET /status shows.

    `status`: `feedworker status --json`'s document (worker.status), or what this process
    knows of it when the store could not be read (`store` "unreadable") or holds nothing yet
    ("none"). `process`: this `serve` process (`name`, `role`, `running`, `queued`,
    `accepting`, `runs_ok`, `runs_failed`: its /metrics counters, `last_success_at`: Unix time).
    `watch`: the watcher's WatchSnapshot.to_dict() ({"state": "off"} when there is none).
    """

    generated_at: datetime
    store: str
    status: Mapping[str, Any]
    process: Mapping[str, Any]
    watch: Mapping[str, Any] = field(default_factory=lambda: {"state": "off"})


def render_status_page(page: StatusPage, *, secrets: Iterable[str] = ()) -> bytes:
    """The page as UTF-8 bytes. Every string is escaped where it goes (autoescaping), and any
    of `secrets` (the server token, the database password) found in a text is shown as ***."""
    if page.store not in STORE_STATES:
        raise ValueError(f"store: {page.store!r} is not one of {STORE_STATES}")
    hidden = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    status = _scrub(page.status, hidden)
    runs = [run for run in status.get("recent_runs") or [] if isinstance(run, Mapping)][-CHART_RUNS:]
    context = {
        "generated": _when(page.generated_at),
        "store": page.store,
        "status": status,
        "articles": status.get("articles") if isinstance(status.get("articles"), Mapping) else None,
        "enrich": status.get("enrich") if isinstance(status.get("enrich"), Mapping) else None,
        "quarantined": status.get("quarantined") if isinstance(status.get("quarantined"), list) else None,
        "sources": [source for source in status.get("sources") or [] if isinstance(source, Mapping)],
        "last_run": _last_run(status.get("last_run")),
        "process": _process(_scrub(page.process, hidden)),
        "watch": _watch(_scrub(page.watch, hidden)),
        "chart": chart(runs),
        "runs": [_run_row(run) for run in reversed(runs)],  # the table: newest first
    }
    return html_template("worker.service", TEMPLATE).render(context).encode("utf-8")


def chart(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The coordinates of the run chart: one mark (a group of bars) per run, the last
    CHART_RUNS of `runs` (oldest first, as status `recent_runs`), the newest at the right;
    each panel scaled to its largest value, rounded up to 1, 2 or 5 times a power of ten."""
    runs = list(runs)[-CHART_RUNS:]
    durations = [_number(run.get("duration_s")) for run in runs]
    files = [_files(run) for run in runs]
    feeds = [_int(run.get("feeds_written")) for run in runs]
    scales = {
        "duration": _nice(max(durations, default=0.0)),
        "files": _nice(max((sum(counts.values()) for counts in files), default=0)),
        "feeds": _nice(max(feeds, default=0)),
    }
    panels = [
        {
            "key": key,
            "heading": heading,
            "top": top,
            "bottom": top + height,
            "label_y": top - 8,
            "max_label": _figure(scales[key]),
        }
        for key, heading, top, height in _PANELS
    ]
    geometry = {key: (top, height) for key, _, top, height in _PANELS}
    marks = []
    first = CHART_RUNS - len(runs)
    for index, run in enumerate(runs):
        x = _LEFT + (first + index) * _SLOT + (_SLOT - _BAR) / 2
        failed = run.get("status") != "ok"
        top, height = geometry["files"]
        stacked, base = [], top + height
        for kind in _FILE_KINDS:
            tall = _scaled(files[index][kind], scales["files"], height)
            if tall:
                stacked.append({"kind": kind, "y": _r(base - tall), "height": _r(tall)})
                base -= tall
        marks.append(
            {
                "run_id": run.get("run_id"),
                "failed": failed,
                "x": _r(x),
                "width": _r(_BAR),
                "slot_x": _r(_LEFT + (first + index) * _SLOT),
                "slot_width": _r(_SLOT),
                "title": _run_title(run),
                "duration": _bar(durations[index], scales["duration"], geometry["duration"]),
                "files": stacked,
                "feeds": _bar(feeds[index], scales["feeds"], geometry["feeds"]),
            }
        )
    failed = sum(1 for mark in marks if mark["failed"])
    return {
        "width": _WIDTH,
        "height": _HEIGHT,
        "left": _LEFT,
        "right": _WIDTH - _RIGHT,
        "panels": panels,
        "failed_row": _FAILED_ROW,
        "failed_row_height": 10,
        "axis_y": _HEIGHT - 14,
        "marks": marks,
        "failed": failed,
        "summary": _summary(runs, durations, files, feeds, failed),
    }


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """`value` with every secret inside its strings (keys and values, nested) replaced by ***."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {_scrub(key, secrets): _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, secrets) for item in value]
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _files(run: Mapping[str, Any]) -> dict[str, int]:
    files = _mapping(run.get("files"))
    return {kind: _int(files.get(kind)) for kind in _FILE_KINDS}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nice(largest: float) -> float:
    """The smallest of 1, 2, 5 x 10^n at or above `largest` (1 for nothing)."""
    if largest <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(largest))
    for step in (1.0, 2.0, 5.0, 10.0):
        if largest <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def _scaled(value: float, scale: float, height: float) -> float:
    """A bar's height; a value above 0 is at least one unit tall, so it never disappears."""
    if value <= 0:
        return 0.0
    return max(1.0, value / scale * height)


def _bar(value: float, scale: float, panel: tuple[float, float]) -> dict[str, float] | None:
    top, height = panel
    tall = _scaled(value, scale, height)
    return {"y": _r(top + height - tall), "height": _r(tall)} if tall else None


def _r(value: float) -> float:
    return round(value, 2)


def _figure(value: float) -> str:
    return f"{value:g}"


def _seconds(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def _run_title(run: Mapping[str, Any]) -> str:
    """The tooltip of a run's mark: every figure it draws, in words."""
    files = _files(run)
    parts = [
        f"Run {run.get('run_id')}: {run.get('status')}",
        _when(run.get("finished_at") or run.get("started_at"))["text"],
        _seconds(run.get("duration_s")),
        f"{files['new']} new, {files['changed']} changed, {files['deleted']} deleted files",
        f"{_int(run.get('feeds_written'))} feeds written",
    ]
    message = run.get("message")
    if isinstance(message, str) and message and run.get("status") != "ok":
        parts.append(message if len(message) <= 300 else message[:299] + "…")
    return "; ".join(part for part in parts if part)


def _summary(
    runs: Sequence[Mapping[str, Any]],
    durations: Sequence[float],
    files: Sequence[Mapping[str, int]],
    feeds: Sequence[int],
    failed: int,
) -> str:
    """The chart in one sentence: its text alternative."""
    if not runs:
        return "No run has ended yet."
    total = {kind: sum(counts[kind] for counts in files) for kind in _FILE_KINDS}
    ordered = sorted(durations)
    median = ordered[len(ordered) // 2]
    count = len(runs)
    return (
        f"The last {count} run{'s' if count != 1 else ''}, {runs[0].get('run_id')} to {runs[-1].get('run_id')}: "
        f"{failed} failed; duration {_seconds(median)} median, {_seconds(ordered[-1])} longest; "
        f"{total['new']} files new, {total['changed']} changed, {total['deleted']} deleted; "
        f"{sum(feeds)} feeds written."
    )


def _when(value: Any) -> dict[str, str]:
    """A time (ISO text, Unix seconds or a datetime) as {"iso", "text"}, in UTC; empty when none."""
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return {"iso": "", "text": value}
    if moment is None:
        return {"iso": "", "text": ""}
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return {"iso": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "text": moment.strftime("%Y-%m-%d %H:%M:%S UTC")}


def _last_run(report: Any) -> dict[str, Any] | None:
    if not isinstance(report, Mapping):
        return None
    files, feeds = _mapping(report.get("files")), _mapping(report.get("feeds"))
    return {
        "run_id": report.get("run_id"),
        "status": str(report.get("status")),
        "ok": report.get("status") == "ok",
        "finished": _when(report.get("finished_at") or report.get("started_at")),
        "duration": _seconds(report.get("duration_s")),
        "files": {
            kind: _int(files.get(kind)) for kind in ("seen", "new", "changed", "unchanged", "deleted", "quarantined")
        },
        "feeds": {kind: _int(feeds.get(kind)) for kind in ("written", "unchanged", "removed")},
        "message": report.get("message") if isinstance(report.get("message"), str) else None,
    }


def _run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run.get("run_id"),
        "status": str(run.get("status")),
        "ok": run.get("status") == "ok",
        "finished": _when(run.get("finished_at") or run.get("started_at")),
        "duration": _seconds(run.get("duration_s")),
        "files": _files(run),
        "quarantined": _int(_mapping(run.get("files")).get("quarantined")),
        "feeds_written": _int(run.get("feeds_written")),
        "message": run.get("message") if isinstance(run.get("message"), str) else "",
    }


def _process(process: Mapping[str, Any]) -> dict[str, Any]:
    return {**process, "last_success": _when(process.get("last_success_at"))}


def _watch(watch: Mapping[str, Any]) -> dict[str, Any]:
    state = watch.get("state") if isinstance(watch.get("state"), str) else "off"
    return {
        "state": state,
        "reason": watch.get("reason") if isinstance(watch.get("reason"), str) else None,
        "folders": _int(watch.get("folders")),
        "events": _int(watch.get("events")),
        "cycles": _int(watch.get("cycles")),
        "last_event": _when(watch.get("last_event_at")),
    }
