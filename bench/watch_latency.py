"""`bench/run.py --watch-latency`: how soon `feedworker serve` (watching its source folder, on
a warm SQLite store) serves a change, against `hugo server`'s rebuild of the same change.

Per corpus size: a working copy of the corpus, one cold `feedworker run` (timed: the cold-run
rate the burst is judged by), then `feedworker serve` on it (watch on, schedule a year away,
127.0.0.1 on a free port). For a new file, an edit (a new title) and a delete, each sample
is timed from the file's `close()` (or `unlink()`) to the first answer of
`GET /feeds/topics/<slug>.atom` (one keep-alive connection, `If-None-Match`, every
`--poll-ms`) whose entries show the change. Then a burst of new files copied in at once,
timed until `/runs/latest` shows the store holding all of them. With `hugo` on the PATH,
`hugo server` (its default: rendering to memory; live reload and fast render off: fast render
mode renders only pages a browser visited, never the topic's RSS) on a
copy of the bench's Hugo site gets the same kinds of change, timed the same way on the
topic's RSS (`/topics/<slug>/index.xml`, plain GETs: it sends no ETag).

This module is driven by bench/run.py, which passes itself as `rb` (its helpers, its
`--code-snapshot` state)."""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import random
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["KINDS", "main_watch", "percentile", "render_watch_block", "summarize_latencies"]

KINDS: tuple[tuple[str, str], ...] = (("new", "new file"), ("edit", "edit (new title)"), ("delete", "delete"))
TARGET_P95_S = 0.3  # issue 15: p95 under 0.3 s at 50,000 files
HUGO_FRACTION = 1 / 3  # ... and under a third of Hugo's rebuild
SAMPLE_TIMEOUT_S = 60.0
BURST_TIMEOUT_S = 1800.0
HUGO_READY_TIMEOUT_S = 900.0
# Probes take only topics whose name Hugo's urlize turns into the path it serves predictably
# (lower case, spaces to hyphens): "AI", "Machine Learning", not "C++" or "AR/VR".
_SIMPLE_TOPIC = re.compile(r"[A-Z][A-Za-z0-9]*(?: [A-Z][A-Za-z0-9]*)*")
_HUGO_TOTAL = re.compile(rb"Total in (\d+) ms")


# ------------------------------------------------------------------ statistics


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    at = (len(ordered) - 1) * q
    lo, hi = int(at), min(int(at) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


def summarize_latencies(samples: list[dict[str, Any]]) -> dict[str, Any]:
    seen = [s["latency_s"] for s in samples if s.get("seen")]
    if not seen:
        return {"count": len(samples), "seen": 0, "median_s": None, "p95_s": None, "max_s": None, "min_s": None}
    return {
        "count": len(samples),
        "seen": len(seen),
        "median_s": round(statistics.median(seen), 4),
        "p95_s": round(percentile(seen, 0.95), 4),
        "max_s": round(max(seen), 4),
        "min_s": round(min(seen), 4),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


# ------------------------------------------------------------------ HTTP


class Poller:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port; remembers each path's ETag and body,
    so a `304 Not Modified` is read as the body last seen."""

    def __init__(self, port: int, conditional: bool = True) -> None:
        self.port, self.conditional = port, conditional
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cache: dict[str, tuple[str, bytes]] = {}
        self.requests = 0
        self.not_modified = 0

    def get(self, path: str) -> tuple[int, bytes]:
        headers = {}
        if self.conditional and path in self.cache:
            headers["If-None-Match"] = self.cache[path][0]
        for attempt in (1, 2):
            try:
                self.conn.request("GET", path, headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()  # the server closed an idle keep-alive connection: once more
                if attempt == 2:
                    raise
        self.requests += 1
        if response.status == 304 and path in self.cache:
            self.not_modified += 1
            return 200, self.cache[path][1]
        etag = response.getheader("ETag")
        if response.status == 200 and etag and self.conditional:
            self.cache[path] = (etag, body)
        return response.status, body

    def close(self) -> None:
        self.conn.close()


def _json_get(rb: ModuleType, port: int, path: str) -> Any:
    status, body = rb._http("GET", f"http://127.0.0.1:{port}{path}", timeout=60)
    if status != 200:
        return None
    return json.loads(body)


def _metrics(rb: ModuleType, port: int) -> str:
    status, body = rb._http("GET", f"http://127.0.0.1:{port}/metrics", timeout=60)
    return body.decode() if status == 200 else ""


def labelled_value(page: str, series: str) -> float | None:
    """The value of one exact series (`name{label="x"}`) of a Prometheus text page."""
    for line in page.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------------ probe articles


@dataclass
class Probe:
    """A new article file: its topic (feedworker slug, Hugo path), text and a unique marker."""

    name: str  # file name without suffix
    topic: str
    slug: str
    hugo_slug: str
    text: str
    marker: str


@dataclass
class ProbeFactory:
    corpus: ModuleType
    seed: int
    n: int
    slugs: dict[str, str]  # topic name (case-folded) -> feedworker slug
    token: str
    next_uid: int = 0
    made: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(15))

    def __post_init__(self) -> None:
        self.next_uid = 10_000_000 + self.n
        self.rng = random.Random(f"watch:{self.seed}:{self.n}")

    def make(self, label: str, when: _dt.datetime) -> Probe:
        """A new published article of the corpus's kind, dated `when` (newer than every corpus
        article, so it is in its topic's current feed), titled with a unique marker."""
        c = self.corpus
        while True:
            self.next_uid += 1
            m = c._Meta(self.seed + 15_015, self.next_uid)
            topic = m.topics[0]
            if _SIMPLE_TOPIC.fullmatch(topic) and topic.casefold() in self.slugs:
                break
        self.made += 1
        marker = f"wlp{self.token}{label}{self.made:05d}"
        stamp = when.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        m.stamp = stamp
        m.title = f"{marker} {m.title}"
        m.web, m.amp = c._urls(self.rng, m.outlet, c._slug(m.title), stamp, self.next_uid)
        rng = random.Random(f"{self.seed}:{self.next_uid}")
        related: list[dict[str, Any]] = []
        outward = c._outward_factory(self.seed)
        for _ in range(0 if rng.random() < 0.08 else c._related_count(rng)):
            if rng.random() < 0.35 and self.n > 1:
                related.append(c._link_item(rng, c._Meta(self.seed, rng.randrange(self.n))))
            else:
                related.append(c._outward_item(rng, outward(int(rng.random() ** 2 * (2 * self.n + 50)))))
        related.sort(key=lambda it: -(it.get("quality") or 0))
        text = c._render(rng, m, related, published=True, no_topics=0.0)
        # A date in UTC, whatever zone the generator would have drawn (Hugo leaves out the future).
        text = re.sub(r"(?m)^publishedDateTime: .*$", f'publishedDateTime: "{stamp}Z"', text, count=1)
        digest = c._file_name(self.next_uid, m, rng).split(".")[0]
        return Probe(digest, topic, self.slugs[topic.casefold()], topic.lower().replace(" ", "-"), text, marker)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _retitle(text: str, marker: str) -> str:
    """The article text with `marker` put before its title (a YAML line `title: "..."`)."""
    match = re.search(r"(?m)^title: (.*)$", text)
    if match is None:
        raise ValueError("no title line")
    old = match.group(1)
    title = json.loads(old) if old.startswith('"') else old
    return text[: match.start()] + "title: " + json.dumps(f"{marker} {title}") + text[match.end() :]


# ------------------------------------------------------------------ feeds


def atom_entries(body: bytes) -> list[dict[str, str]]:
    from lxml import etree

    ns = {"a": "http://www.w3.org/2005/Atom"}
    root = etree.fromstring(body)
    out = []
    for entry in root.iterfind("a:entry", ns):
        link = entry.find("a:link[@rel='alternate']", ns)
        if link is None:
            link = entry.find("a:link", ns)
        out.append(
            {
                "id": entry.findtext("a:id", "", ns),
                "title": entry.findtext("a:title", "", ns),
                "link": link.get("href", "") if link is not None else "",
            }
        )
    return out


def rss_items(body: bytes) -> list[dict[str, str]]:
    from lxml import etree

    root = etree.fromstring(body)
    return [{"title": i.findtext("title", ""), "link": i.findtext("link", "")} for i in root.iter("item")]


def opml_slugs(body: bytes) -> dict[str, str]:
    """Topic name (case-folded) -> slug, from the served index.opml."""
    from lxml import etree

    out = {}
    for outline in etree.fromstring(body).iter("outline"):
        url = outline.get("xmlUrl") or ""
        name = outline.get("text") or ""
        if "/topics/" in url and name:
            out[name.casefold()] = url.rsplit("/", 1)[1].rsplit(".", 1)[0]
    return out


# ------------------------------------------------------------------ feedworker serve


class Serve:
    def __init__(self, rb: ModuleType, config: Path, port: int, log: Path) -> None:
        self.rb, self.port, self.log = rb, port, log
        self.fh = open(log, "wb")  # noqa: SIM115  (closed in stop)
        cmd = [*rb.feedworker_command(), "serve", "--config", str(config)]
        self.proc = subprocess.Popen(
            cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=rb._clean_env(), cwd=rb.snapshot_cwd()
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"feedworker serve exited {self.proc.returncode}: {tail}")

    def wait_ready(self, timeout_s: float) -> float:
        """Until the watcher says `watching`, the start-up run ended and nothing runs or is queued."""
        start = time.perf_counter()
        while True:
            self.alive()
            try:
                page = _metrics(self.rb, self.port)
                health = _json_get(self.rb, self.port, "/healthz") or {}
                watching = labelled_value(page, 'feedworker_watch_state{state="watching"}')
                runs = self.rb.metric_value(page, "feedworker_runs_total") or 0
                if watching == 1 and runs >= 1 and not health.get("running") and not health.get("queued"):
                    return time.perf_counter() - start
            except (OSError, ValueError):
                pass
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"feedworker serve not watching after {timeout_s:g} s")
            time.sleep(0.1)

    def wait_idle(self, timeout_s: float = 600.0) -> None:
        """Until no cycle runs or is queued, twice in a row 50 ms apart."""
        start, calm = time.perf_counter(), 0
        while calm < 2:
            self.alive()
            health = _json_get(self.rb, self.port, "/healthz") or {}
            calm = calm + 1 if not health.get("running") and not health.get("queued") else 0
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError("feedworker serve never went idle")
            time.sleep(0.05)

    def counters(self) -> dict[str, float]:
        page = _metrics(self.rb, self.port)
        return {
            "watch_cycles": self.rb.metric_value(page, "feedworker_watch_cycles_total") or 0.0,
            "watch_paths": self.rb.metric_value(page, "feedworker_watch_paths_total") or 0.0,
            "runs": self.rb.metric_value(page, "feedworker_runs_total") or 0.0,
        }

    def runs_since(self, after_id: int | None) -> list[dict[str, Any]]:
        """The reports of the runs after store run `after_id` up to the latest, oldest first (brief)."""
        latest = _json_get(self.rb, self.port, "/runs/latest") or {}
        last = latest.get("run_id")
        if not isinstance(last, int):
            return []
        first = (after_id or last - 1) + 1
        out = []
        for run_id in range(first, last + 1):
            report = latest if run_id == last else _json_get(self.rb, self.port, f"/runs/{run_id}")
            if isinstance(report, dict) and isinstance(report.get("report"), dict):
                report = report["report"] | {"run_id": run_id}
            if isinstance(report, dict):
                out.append(_cycle_brief(report))
        return out

    def latest_id(self) -> int | None:
        latest = _json_get(self.rb, self.port, "/runs/latest") or {}
        return latest.get("run_id") if isinstance(latest.get("run_id"), int) else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()


def _iso(text: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _cycle_brief(report: dict[str, Any]) -> dict[str, Any]:
    watch = report.get("watch") or {}
    return {
        "run_id": report.get("run_id"),
        "status": report.get("status"),
        "scan": report.get("scan"),
        "files": report.get("files"),
        "articles": report.get("articles"),
        "feeds": report.get("feeds"),
        "duration_s": report.get("duration_s"),
        "started_at": _iso(report.get("started_at")),
        "finished_at": _iso(report.get("finished_at")),
        "last_event_at": watch.get("last_event_at"),
    }


def _split(sample: dict[str, Any], cycles: list[dict[str, Any]]) -> None:
    """Latency = detection (close to the watcher's event, its debounce included) + queue (event
    to cycle start) + cycle start to the answer showing the change (the feeds are written before
    the cycle ends, so this is often less than the whole cycle's `duration_s`, also given), from
    the first cycle that took the change."""
    key = {"new": "new", "edit": "changed", "delete": "deleted"}[sample["kind"]]
    took = next((c for c in cycles if ((c.get("files") or {}).get(key) or 0) >= 1), None)
    if took is None or not sample.get("seen"):
        return
    closed = sample["closed_at"]
    started, finished, event = took.get("started_at"), took.get("finished_at"), took.get("last_event_at")
    if None in (started, finished):
        return
    seen_at = closed + sample["latency_s"]
    sample["split"] = {
        "detect_s": round(event - closed, 4) if event is not None and event >= closed else None,
        "queue_s": round(started - event, 4) if event is not None and event >= closed else None,
        "close_to_cycle_start_s": round(started - closed, 4),
        "cycle_s": took.get("duration_s"),
        "cycle_wall_s": round(finished - started, 4),
        "start_to_seen_s": round(seen_at - started, 4),
        "seen_minus_cycle_end_s": round(seen_at - finished, 4),
    }


# ------------------------------------------------------------------ one sample


def _poll_until(
    poller: Poller, path: str, check: Any, t0: float, poll_s: float, timeout_s: float = SAMPLE_TIMEOUT_S
) -> tuple[bool, float, int]:
    """GET `path` every `poll_s` until `check(status, body)`; (seen, seconds since t0, requests)."""
    polls = 0
    while True:
        status, body = poller.get(path)
        now = time.perf_counter()
        polls += 1
        if check(status, body):
            return True, now - t0, polls
        if now - t0 > timeout_s:
            return False, now - t0, polls
        time.sleep(poll_s)


def _gate(rb: ModuleType, args: Any) -> dict[str, Any]:
    if args.wait_idle:
        return rb.wait_for_idle(args.wait_idle, args.wait_idle_max)
    time.sleep(0.2)
    return {}


def _pick_target(entries: list[dict[str, str]], rng: random.Random, used: set[str]) -> dict[str, str] | None:
    """A corpus article of the feed (not a probe, not picked before), at a random position."""
    pool = [e for e in entries if not e["title"].startswith("wlp") and e["id"] not in used and e["link"] not in used]
    return rng.choice(pool) if pool else None


def _path_of(db: Path, entry_id: str) -> Path | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT sf.path FROM source_file AS sf JOIN article AS a ON a.url = sf.article_url"
            " WHERE a.entry_id = ? AND a.removed = 0 AND sf.state = 'ok' ORDER BY sf.id LIMIT 1",
            (entry_id,),
        ).fetchone()
    return Path(row[0]) if row else None


def feedworker_samples(
    rb: ModuleType, args: Any, serve: Serve, factory: ProbeFactory, probe_dir: Path, db: Path, n: int
) -> tuple[dict[str, list[dict[str, Any]]], list[Probe]]:
    poller = Poller(serve.port, conditional=True)
    poll_s = args.poll_ms / 1000
    rng = random.Random(f"targets:{args.seed}:{n}")
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind, _ in KINDS}
    probes: list[Probe] = []
    used: set[str] = set()
    try:
        for kind, label in KINDS:
            for i in range(args.samples):
                gate = _gate(rb, args)
                serve.wait_idle()
                before = serve.counters()
                last_id = serve.latest_id()
                sample: dict[str, Any] = {"kind": kind, "load_before": rb._loads()} | gate
                probe = factory.make(kind[0], _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=2))
                path = f"/feeds/topics/{probe.slug}.atom"
                sample["topic"] = probe.slug
                if kind == "new":
                    probes.append(probe)
                    target = probe_dir / f"{probe.name}.txt"
                    marker = probe.marker.encode()
                    poller.get(path)  # the feed as it is, cached: the polls after the change are 304s until it changes
                    t0, wall = _write_timed(target, probe.text)

                    def check(status: int, body: bytes, marker: bytes = marker) -> bool:
                        return status == 200 and marker in body
                else:
                    status, body = poller.get(path)
                    entry = _pick_target(atom_entries(body), rng, used) if status == 200 else None
                    found = _path_of(db, entry["id"]) if entry else None
                    if entry is None or found is None:
                        sample |= {"seen": False, "error": f"no article to {kind} in {path}"}
                        out[kind].append(sample)
                        continue
                    used.add(entry["id"])
                    sample["file"] = found.name
                    if kind == "edit":
                        marker = f"wle{factory.token}{i:05d}".encode()
                        text = _retitle(found.read_text(encoding="utf-8"), marker.decode())
                        t0, wall = _write_timed(found, text)

                        def check(status: int, body: bytes, marker: bytes = marker) -> bool:
                            return status == 200 and marker in body
                    else:
                        gone = f"<id>{entry['id']}</id>".encode()
                        found.unlink()
                        t0, wall = time.perf_counter(), time.time()

                        def check(status: int, body: bytes, gone: bytes = gone) -> bool:
                            # 404: the feed is gone with its last article (a topic of one article)
                            return status == 404 or (status == 200 and gone not in body)

                seen, latency, polls = _poll_until(poller, path, check, t0, poll_s)
                sample |= {"seen": seen, "latency_s": round(latency, 4), "polls": polls, "closed_at": wall}
                serve.wait_idle()
                after = serve.counters()
                sample["watch_cycles"] = int(after["watch_cycles"] - before["watch_cycles"])
                sample["watch_paths"] = int(after["watch_paths"] - before["watch_paths"])
                sample["cycles"] = serve.runs_since(last_id)
                _split(sample, sample["cycles"])
                out[kind].append(sample)
                rb._log(
                    f"[{n}] {label} #{i + 1}: {'seen' if seen else 'NOT SEEN'} after {latency * 1000:.0f} ms "
                    f"({polls} polls, {sample['watch_cycles']} watch cycle(s), "
                    f"cycle {sample.get('split', {}).get('cycle_s')} s) in {path}"
                )
    finally:
        poller.close()
    return out, probes


def _write_timed(path: Path, text: str) -> tuple[float, float]:
    _write(path, text)
    return time.perf_counter(), time.time()


# ------------------------------------------------------------------ burst


def burst(
    rb: ModuleType, args: Any, serve: Serve, factory: ProbeFactory, probe_dir: Path, staging: Path, n: int
) -> dict[str, Any]:
    """`args.burst` new files copied into the inbox at once; timed until /runs/latest shows the
    store holding all of them (`articles.total` up by that many: the cycle that stored them has
    finished, its feeds written), then checked (untimed) in their topic feeds."""
    count = args.burst
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    now = _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=5)
    probes = [factory.make("b", now - _dt.timedelta(seconds=count - i)) for i in range(count)]
    for probe in probes:
        _write(staging / f"{probe.name}.txt", probe.text)
    rb.warm_page_cache(staging)
    gate = _gate(rb, args)
    serve.wait_idle()
    latest = _json_get(rb, serve.port, "/runs/latest") or {}
    total_before = int((latest.get("articles") or {}).get("total") or 0)
    last_id = latest.get("run_id")
    before = serve.counters()
    load = rb._loads()
    machine = rb.machine_cpu_s()
    t0 = time.perf_counter()
    for probe in probes:
        shutil.copyfile(staging / f"{probe.name}.txt", probe_dir / f"{probe.name}.txt")
    copied = time.perf_counter() - t0
    polls, seen = 0, False
    while time.perf_counter() - t0 < BURST_TIMEOUT_S:
        report = _json_get(rb, serve.port, "/runs/latest") or {}
        polls += 1
        if int((report.get("articles") or {}).get("total") or 0) >= total_before + count:
            seen = True
            break
        serve.alive()
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    used_cpu = rb.machine_cpu_s() - machine
    serve.wait_idle()
    after = serve.counters()
    cycles = serve.runs_since(last_id if isinstance(last_id, int) else None)
    # Untimed check: the newest file of the burst is in its topic feed and in the all-articles feed.
    poller = Poller(serve.port, conditional=False)
    try:
        newest = probes[-1]
        in_topic = newest.marker.encode() in poller.get(f"/feeds/topics/{newest.slug}.atom")[1]
        in_all = newest.marker.encode() in poller.get("/feeds/all.json")[1]
    finally:
        poller.close()
    result = {
        "files": count,
        "criterion": "GET /runs/latest (every 20 ms) shows articles.total up by the burst's files",
        "seen": seen,
        "seconds": round(elapsed, 4),
        "copy_s": round(copied, 4),
        "files_per_s": round(count / elapsed, 1),
        "polls": polls,
        "watch_cycles": int(after["watch_cycles"] - before["watch_cycles"]),
        "watch_paths": int(after["watch_paths"] - before["watch_paths"]),
        "cycles": cycles,
        "newest_in_topic_feed": in_topic,
        "newest_in_all_feed": in_all,
        "load_before": load,
        "machine_cpu_s": round(used_cpu, 3),
    } | gate
    rb._log(
        f"[{n}] burst of {count}: {'all stored' if seen else 'NOT all stored'} after {elapsed:.2f} s "
        f"({count / elapsed:.0f} files/s; {result['watch_cycles']} watch cycle(s); copy {copied:.2f} s)"
    )
    return result


# ------------------------------------------------------------------ Hugo


class HugoServer:
    def __init__(self, binary: str, site: Path, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.fh = open(log, "wb")  # noqa: SIM115  (closed in stop)
        cmd = [
            binary,
            "server",
            "--source",
            str(site),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--baseURL",
            "http://127.0.0.1/",
            "--disableLiveReload",
            # Fast render mode re-renders only the pages a browser visited: it never renders the
            # topic's RSS again, and the change would never show.
            "--disableFastRender",
        ]
        self.cmd = cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUGO")}
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, cwd=site, env=env)

    def wait_ready(self, timeout_s: float) -> float:
        start = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hugo server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/index.xml")
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == 200:
                    return time.perf_counter() - start
            except OSError:
                pass
            if time.perf_counter() - start > timeout_s:
                raise RuntimeError(f"hugo server not serving after {timeout_s:g} s")
            time.sleep(0.2)

    def totals_ms(self, offset: int) -> list[int]:
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return [int(x) for x in _HUGO_TOTAL.findall(fh.read())]

    def log_size(self) -> int:
        self.fh.flush()
        return self.log.stat().st_size

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.fh.close()


def make_hugo_site(rb: ModuleType, pristine: Path, site: Path) -> Path:
    """A copy (not hard links: the samples edit files in place) of the bench's Hugo site."""
    shutil.rmtree(site, ignore_errors=True)
    content = site / "content"
    for path in rb._article_files(pristine):
        target = content / path.relative_to(pristine).with_suffix(".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (content / "_index.md").write_text(rb.HUGO_INDEX, encoding="utf-8")
    (site / "config.toml").write_text(rb.HUGO_CONFIG, encoding="utf-8")
    return site


def hugo_samples(
    rb: ModuleType, args: Any, hugo: HugoServer, site: Path, probes: list[Probe], probe_rel: Path, n: int
) -> dict[str, list[dict[str, Any]]]:
    poller = Poller(hugo.port, conditional=False)  # no ETag; Last-Modified has whole seconds only
    poll_s = args.poll_ms / 1000
    rng = random.Random(f"hugo-targets:{args.seed}:{n}")
    content = site / "content"
    (content / probe_rel).mkdir(parents=True, exist_ok=True)
    out: dict[str, list[dict[str, Any]]] = {kind: [] for kind, _ in KINDS}
    used: set[str] = set()
    count = min(args.hugo_samples, len(probes))
    try:
        for kind, label in KINDS:
            for i in range(count):
                gate = _gate(rb, args)
                probe = probes[i]
                path = f"/topics/{probe.hugo_slug}/index.xml"
                sample: dict[str, Any] = {"kind": kind, "topic": probe.hugo_slug, "load_before": rb._loads()} | gate
                offset = hugo.log_size()
                if kind == "new":
                    marker = probe.marker.encode()
                    t0, wall = _write_timed(content / probe_rel / f"{probe.name}.md", probe.text)

                    def check(status: int, body: bytes, marker: bytes = marker) -> bool:
                        return status == 200 and marker in body
                else:
                    status, body = poller.get(path)
                    items = [{"id": it["link"], **it} for it in rss_items(body)] if status == 200 else []
                    item = _pick_target(items, rng, used)
                    if item is None:
                        sample |= {"seen": False, "error": f"no page to {kind} in {path}"}
                        out[kind].append(sample)
                        continue
                    used.add(item["link"])
                    rel = urllib.parse.urlsplit(item["link"]).path.strip("/")
                    found = content / f"{rel}.md"
                    sample["file"] = str(found.relative_to(site))
                    if kind == "edit":
                        marker = f"wle{i:05d}h{probe.marker}".encode()
                        t0, wall = _write_timed(found, _retitle(found.read_text(encoding="utf-8"), marker.decode()))

                        def check(status: int, body: bytes, marker: bytes = marker) -> bool:
                            return status == 200 and marker in body
                    else:
                        gone = f"<link>{item['link']}</link>".encode()
                        found.unlink()
                        t0, wall = time.perf_counter(), time.time()

                        def check(status: int, body: bytes, gone: bytes = gone) -> bool:
                            # 404: the feed is gone with its last article (a topic of one article)
                            return status == 404 or (status == 200 and gone not in body)

                seen, latency, polls = _poll_until(poller, path, check, t0, poll_s)
                time.sleep(0.3)  # hugo logs its "Total in N ms" after the rebuild
                sample |= {
                    "seen": seen,
                    "latency_s": round(latency, 4),
                    "polls": polls,
                    "closed_at": wall,
                    "hugo_total_ms": hugo.totals_ms(offset),
                }
                out[kind].append(sample)
                rb._log(
                    f"[{n}] Hugo {label} #{i + 1}: {'seen' if seen else 'NOT SEEN'} after {latency * 1000:.0f} ms "
                    f"({polls} polls; hugo says {sample['hugo_total_ms']} ms) in {path}"
                )
    finally:
        poller.close()
    return out


# ------------------------------------------------------------------ one size


def _newest_folder(root: Path) -> Path:
    months = sorted(p for p in root.glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]") if p.is_dir())
    return months[-1] if months else root


def bench_watch_size(rb: ModuleType, corpus: ModuleType, args: Any, n: int, hugo: str | None) -> dict[str, Any]:
    out: Path = args.out
    pristine = rb.ensure_corpus(corpus, out, n, args.seed)
    wdir = out / f"watch-{n}"
    inbox = rb.working_copy(pristine, wdir / "inbox")
    state = wdir / "state"
    rb.reset_state(state)
    files = len(rb._article_files(inbox))
    port = rb._free_port()
    extra = f"watch: true\nschedule:\n  every: {rb.SERVE_EVERY_S}\nserver:\n  host: 127.0.0.1\n  port: {port}\n"
    config = rb.write_config(state, inbox, extra=extra)
    rb.warm_page_cache(inbox)
    gate = _gate(rb, args)
    cold, report = rb.Feedworker(config, state / "logs").run("cold")
    cold_rate = files / cold.wall_s
    rb._log(f"[{n}] cold run: {cold.wall_s:.2f} s ({cold_rate:.0f} files/s), in-process {report.get('duration_s')} s")
    probe_dir = _newest_folder(inbox)
    probe_rel = probe_dir.relative_to(inbox)
    serve = Serve(rb, config, port, state / "logs" / "serve.log")
    result: dict[str, Any] = {
        "files": files,
        "cold": {"wall_s": cold.wall_s, "in_process_s": report.get("duration_s"), "files_per_s": round(cold_rate, 1)}
        | gate,
        "probe_folder": str(probe_rel),
    }
    try:
        result["serve_ready_s"] = round(serve.wait_ready(rb.READY_TIMEOUT_S), 3)
        poller = Poller(port, conditional=False)
        slugs = opml_slugs(poller.get("/feeds/index.opml")[1])
        poller.close()
        token = f"{n:x}{int(time.time()) % 100000:05d}"
        factory = ProbeFactory(corpus, args.seed, n, slugs, token)
        samples, probes = feedworker_samples(rb, args, serve, factory, probe_dir, state / "feedworker.db", n)
        result["feedworker"] = {kind: {"samples": s} | summarize_latencies(s) for kind, s in samples.items()}
        for kind, s in samples.items():
            splits = [x["split"] for x in s if x.get("split")]
            result["feedworker"][kind]["split_median_s"] = {
                key: _median([x[key] for x in splits if x.get(key) is not None])
                for key in ("detect_s", "queue_s", "close_to_cycle_start_s", "start_to_seen_s", "cycle_s")
            }
        if args.burst:
            result["burst"] = burst(rb, args, serve, factory, probe_dir, wdir / "burst-staging", n)
        result["serve_vmhwm_mib"] = round(rb._status_kib(serve.proc.pid, "VmHWM") / 1024, 1)
    finally:
        serve.stop()
    if hugo:
        site = make_hugo_site(rb, pristine, wdir / "hugo")
        hs = HugoServer(hugo, site, rb._free_port(), state / "logs" / "hugo-server.log")
        try:
            ready = hs.wait_ready(HUGO_READY_TIMEOUT_S)
            rb._log(f"[{n}] hugo server serving after {ready:.1f} s")
            hsamples = hugo_samples(rb, args, hs, site, probes, probe_rel, n)
            result["hugo"] = {
                "command": shlex.join(hs.cmd),
                "render": "memory (hugo server's default), --disableFastRender",
                "ready_s": round(ready, 2),
                "vmhwm_mib": round(rb._status_kib(hs.proc.pid, "VmHWM") / 1024, 1),
            } | {kind: {"samples": s} | summarize_latencies(s) for kind, s in hsamples.items()}
            for kind, s in hsamples.items():
                totals = [t for x in s for t in x.get("hugo_total_ms", ())]
                result["hugo"][kind]["hugo_total_median_ms"] = _median([float(t) for t in totals])
        finally:
            hs.stop()
    return result


# ------------------------------------------------------------------ targets and report


def judge_watch(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 15's targets (stated at 50,000 files), judged at every size."""
    rows: list[dict[str, Any]] = []
    for size in sizes:
        n = size["files"]
        for kind, label in KINDS:
            fw = size["feedworker"][kind]
            p95 = fw["p95_s"]
            all_seen = fw["seen"] == fw["count"]
            ok = None if p95 is None else (p95 < TARGET_P95_S and all_seen)
            rows.append(_row(n, f"{label}: p95 under {TARGET_P95_S:g} s", p95, TARGET_P95_S, "s", ok))
            hugo = (size.get("hugo") or {}).get(kind)
            if hugo and hugo.get("median_s") is not None and p95 is not None:
                limit = hugo["median_s"] * HUGO_FRACTION
                basis = f"Hugo median {hugo['median_s']:.3f} s ({hugo['seen']} samples)"
                rows.append(_row(n, f"{label}: p95 under 1/3 of Hugo's rebuild", p95, limit, "s", p95 < limit, basis))
            else:
                rows.append(_row(n, f"{label}: p95 under 1/3 of Hugo's rebuild", p95, None, "s", None, "no Hugo"))
        b = size.get("burst")
        if b:
            limit = b["files"] / size["cold"]["files_per_s"]
            basis = f"{b['files']} files at the cold run's {size['cold']['files_per_s']:.0f} files/s"
            rows.append(
                _row(
                    n,
                    f"burst of {b['files']}: all stored within the cold-run rate",
                    b["seconds"],
                    limit,
                    "s",
                    b["seen"] and b["seconds"] <= limit,
                    basis,
                )
            )
    return rows


def _row(n: int, target: str, value: Any, limit: Any, unit: str, ok: bool | None, basis: str = "") -> dict[str, Any]:
    return {
        "files": n,
        "target": target,
        "value": value,
        "limit": None if limit is None else round(limit, 4),
        "unit": unit,
        "basis": basis,
        "result": "N/A" if ok is None else ("PASS" if ok else "FAIL"),
    }


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


def render_watch_block(results: dict[str, Any]) -> str:
    s = results["watch"]
    lines = [
        (
            f"Measured {s['date']} with `{s['command']}` ({s['samples']} samples per kind, Hugo {s['hugo_samples']}; "
            f"poll every {s['poll_ms']} ms), feedworker {s['machine']['feedworker']}, "
            f"Hugo {s.get('hugo_version') or 'not used'}, load {s['load_start']} / {s['load_end']}."
            + (f" Note: {s['note']}" if s.get("note") else "")
        ),
        "",
        (
            "Each sample: the file is written (new: a new article dated now, in the corpus's newest month folder;"
            " edit: a new title for a corpus article of the topic's current feed, written in place; delete: such"
            " an article's file removed), then timed from its `close()` (`unlink()`) to the first answer of"
            " `GET /feeds/topics/<slug>.atom` (one keep-alive connection, `If-None-Match`: unchanged answers are"
            " 304s) whose entries show the change. `feedworker serve` runs on a warm SQLite store (one cold"
            " `feedworker run` first), watch on, schedule a year away. Split (medians, from `/runs/latest` and"
            " `/runs/<id>`): detect = close to the watcher's event (`watch.last_event_at`, debounce included),"
            " queue = event to cycle start, start→served = cycle start to the answer showing the change (the"
            " feeds are written before the cycle ends), whole cycle = its `duration_s`. A delete that leaves a"
            " topic without articles removes its feed: a 404 counts as the entry gone."
            " Hugo: `hugo server` (rendering to memory, its default; `--disableLiveReload`; `--disableFastRender`, as"
            " in fast render mode it renders only the pages a browser visited, never the topic's RSS) on a"
            " copy of the bench's Hugo site, the same kinds of change (the same new files), timed to"
            " `/topics/<slug>/index.xml` showing it (plain GETs: it sends no ETag); its own `Total in` figure beside it."
        ),
        "",
        (
            "| files | change | feedworker median (ms) | p95 (ms) | max (ms) | seen | detect / queue / start→served / whole cycle "
            "(ms, medians) | Hugo median (ms) | Hugo p95 (ms) | Hugo max (ms) | Hugo seen | Hugo `Total in` (ms) |"
        ),
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in s["sizes"]:
        for kind, label in KINDS:
            f = size["feedworker"][kind]
            sp = f.get("split_median_s") or {}
            split = " / ".join(_ms(sp.get(k)) for k in ("detect_s", "queue_s", "start_to_seen_s", "cycle_s"))
            h = (size.get("hugo") or {}).get(kind) or {}
            total = h.get("hugo_total_median_ms")
            lines.append(
                f"| {size['files']:,} | {label} | {_ms(f['median_s'])} | {_ms(f['p95_s'])} | {_ms(f['max_s'])} "
                f"| {f['seen']}/{f['count']} | {split} | {_ms(h.get('median_s'))} | {_ms(h.get('p95_s'))} "
                f"| {_ms(h.get('max_s'))} | {str(h['seen']) + '/' + str(h['count']) if h else '—'} "
                f"| {'—' if total is None else f'{total:.0f}'} |"
            )
    lines += [
        "",
        "| files | cold run (s) | cold rate (files/s) | burst | burst stored after (s) | burst rate (files/s) | watch cycles | copy (s) | newest in its feeds | serve ready (s) | serve VmHWM (MiB) | Hugo ready (s) | Hugo VmHWM (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for size in s["sizes"]:
        b, c, h = size.get("burst") or {}, size["cold"], size.get("hugo") or {}
        lines.append(
            f"| {size['files']:,} | {c['wall_s']:.2f} | {c['files_per_s']:.0f} | {b.get('files', '—')} "
            f"| {format(b['seconds'], '.2f') if b else '—'} | {b.get('files_per_s', '—')} | {b.get('watch_cycles', '—')} "
            f"| {b.get('copy_s', '—')} | {'yes' if b.get('newest_in_topic_feed') and b.get('newest_in_all_feed') else ('no' if b else '—')} "
            f"| {size.get('serve_ready_s', '—')} | {size.get('serve_vmhwm_mib', '—')} | {h.get('ready_s', '—')} "
            f"| {h.get('vmhwm_mib', '—')} |"
        )
    lines += [
        "",
        "Burst criterion: " + (s["sizes"][0].get("burst") or {}).get("criterion", "—") + ".",
        "",
        "| files | target | measured | limit | result | basis |",
        "|---:|---|---:|---:|---|---|",
    ]
    for t in s["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.3f} s"
        limit = "—" if t["limit"] is None else f"{t['limit']:.3f} s"
        lines.append(f"| {t['files']:,} | {t['target']} | {value} | < {limit} | **{t['result']}** | {t['basis']} |")
    return "\n".join(lines)


def main_watch(rb: ModuleType, args: Any, raw: list[str], corpus: ModuleType) -> int:
    hugo = rb.hugo_binary(args.hugo)
    session: dict[str, Any] = {
        "date": rb._now(),
        "command": shlex.join(["python", "bench/run.py", *raw]),
        "samples": args.samples,
        "hugo_samples": args.hugo_samples if hugo else 0,
        "poll_ms": args.poll_ms,
        "burst": args.burst,
        "seed": args.seed,
        "note": args.note,
        "feedworker_command": rb.feedworker_command(),
        "hugo_version": rb.hugo_version(hugo) if hugo else None,
        "machine": rb.machine_info(),
        "code_start": rb.code_state(),
        "load_start": rb._loads(),
    }
    rb._log(f"watch latency; hugo: {session['hugo_version'] or 'not used'}")
    rb._warm_up(args.out)
    session["sizes"] = [bench_watch_size(rb, corpus, args, n, hugo) for n in args.sizes]
    session["targets"] = judge_watch(session["sizes"])
    session["load_end"], session["code_end"] = rb._loads(), rb.code_state()
    results = rb.read_results(args.out)
    results["watch"] = session
    rb._write_results(args.out, results)
    rb.update_block(args.markdown, "watch", render_watch_block(results))
    for size in session["sizes"]:
        for kind, label in KINDS:
            f = size["feedworker"][kind]
            h = (size.get("hugo") or {}).get(kind) or {}
            print(
                f"{size['files']:>7,} {label:<18} median {_ms(f['median_s'])} ms  p95 {_ms(f['p95_s'])} ms  "
                f"max {_ms(f['max_s'])} ms  seen {f['seen']}/{f['count']}   Hugo median {_ms(h.get('median_s'))} ms"
            )
    for t in session["targets"]:
        print(f"{t['result']:<4}  {t['target']} ({t['files']:,} files): {t['value']} vs {t['limit']} [{t['basis']}]")
    rb._log(f"wrote {args.out / 'results.json'} and {args.markdown}")
    return 0
