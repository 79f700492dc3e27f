"""Benchmark runner: feedworker's cold run and reruns, and Hugo's build, per corpus size; on
SQLite (the default), on PostgreSQL (`--database postgresql`) and as a group of `serve`
replicas sharing one PostgreSQL database (`--replicas N`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "FIGURES",
    "Measurement",
    "code_state",
    "judge",
    "kept_analysis",
    "machine_info",
    "main",
    "measure",
    "render_markdown",
    "summarize",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "out"
DEFAULT_MARKDOWN = ROOT / "docs" / "benchmarks.md"
MARKER = ".bench-corpus.json"
SITE_MARKER = ".bench-site.json"

# (key, label) of every feedworker figure, in the order they are measured.
FIGURES: tuple[tuple[str, str], ...] = (
    ("cold", "cold run"),
    ("no_change", "no-change rerun"),
    ("add_one", "rerun after one new file"),
    ("mutate_1pct", "rerun after 1 % of files changed"),
)

# Issue 5: Hugo 0.111 builds the 50,000-file corpus in about 24 s on this kind of machine.
ISSUE_HUGO_S = 24.0
ISSUE_HUGO_FILES = 50_000
RSS_CAP_MIB = 300.0
RSS_GROWTH_MAX = 1.25  # peak RSS at the largest size / at the smallest size
SAMPLE_INTERVAL_S = 0.05
MIB = 1024 * 1024


# ------------------------------------------------------------------ measuring one process


@dataclass
class Measurement:
    """One whole process: wall time around it, and its memory."""

    wall_s: float
    max_process_rss_kib: int  # kernel high-water mark of the largest process in the tree (wait4)
    tree_pss_kib: int  # peak of the sampled sum of PSS over the process tree
    returncode: int
    cpu_s: float | None = None  # user + system CPU of the process and the children it waited for

    @property
    def peak_rss_mib(self) -> float:
        return max(self.max_process_rss_kib, self.tree_pss_kib) / 1024


def _ppid_map(ticks: dict[int, int] | None = None) -> dict[int, list[int]]:
    """Children of every process, from /proc/*/stat; with `ticks`, each one's own CPU so far
    (user + system, clock ticks) goes in it too."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(name))
        if ticks is not None:
            ticks[int(name)] = int(fields[11]) + int(fields[12])
    return children


def _descendants(root: int, cpu: dict[int, int] | None = None) -> list[int]:
    """`root` and its descendants; with `cpu`, the CPU ticks each has used so far are noted in it."""
    ticks: dict[int, int] | None = {} if cpu is not None else None
    children = _ppid_map(ticks)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    if cpu is not None and ticks is not None:
        cpu.update((pid, ticks[pid]) for pid in out if pid in ticks)
    return out


def _pss_kib(pid: int) -> int:
    """Proportional set size (shared pages split between sharers); VmRSS where PSS is unavailable."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


class _TreeSampler(threading.Thread):
    """Samples the summed PSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kib = pid, interval, 0
        self.cpu_ticks: dict[int, int] = {}  # the last CPU seen of each process of the tree
        self._done = threading.Event()

    @property
    def cpu_s(self) -> float:
        """CPU of the tree as sampled: every process's own, as last seen (a worker no process
        waits for is counted too, less what it used after its last sample)."""
        return sum(self.cpu_ticks.values()) / _clock_ticks()

    def run(self) -> None:
        pids, tick = [self.pid], 0
        while not self._done.is_set():
            if tick % 2 == 0:  # re-discover workers every other sample (a /proc scan costs ~1 ms)
                pids = _descendants(self.pid, self.cpu_ticks)
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(pid) for pid in pids))
            tick += 1
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def measure(cmd: list[str], stdout: Path, stderr: Path, env: dict[str, str] | None = None) -> Measurement:
    """Run `cmd` as a whole process after `sync`; wall time around it, memory via wait4 and /proc."""
    os.sync()
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=snapshot_cwd())
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    # wait4 counts only the descendants the process waited for; a multiprocessing forkserver is
    # not, and its parser workers are lost with it: the sampled tree sees them.
    cpu = round(max(usage.ru_utime + usage.ru_stime, sampler.cpu_s), 3)
    return Measurement(round(wall, 4), usage.ru_maxrss, sampler.peak_kib, proc.returncode, cpu)


def summarize(samples: list[Measurement]) -> dict[str, Any]:
    """Median and spread (min-max) of the wall times; the largest peak RSS."""
    walls = [s.wall_s for s in samples]
    return {
        "median_s": round(statistics.median(walls), 4),
        "min_s": min(walls),
        "max_s": max(walls),
        "peak_rss_mib": round(max(s.peak_rss_mib for s in samples), 1),
        "samples": [asdict(s) | {"peak_rss_mib": round(s.peak_rss_mib, 1)} for s in samples],
    }


# ------------------------------------------------------------------ corpus


def _load_corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_corpus", HERE / "corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_corpus", module)
    spec.loader.exec_module(module)
    return module


def _load_module(name: str, file: str) -> ModuleType:
    """A module of bench/ by its file (bench is no package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def _corpus_marker(n: int, seed: int) -> dict[str, Any]:
    digest = hashlib.sha256((HERE / "corpus.py").read_bytes()).hexdigest()[:16]
    return {"n": n, "seed": seed, "generator": digest}


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_corpus(corpus: ModuleType, out: Path, n: int, seed: int) -> Path:
    """The pristine corpus of `n` files in out/corpus-N, generated unless its marker matches."""
    folder = out / f"corpus-{n}"
    wanted = _corpus_marker(n, seed)
    found = _read_marker(folder / MARKER)
    if found and {k: found.get(k) for k in wanted} == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    _log(f"generating {n} files (seed {seed}) in {folder} ...")
    start = time.perf_counter()
    corpus.generate(folder, n, seed)
    wanted["generated_at"] = _now()
    (folder / MARKER).write_text(json.dumps(wanted), encoding="utf-8")
    _log(f"  generated in {time.perf_counter() - start:.1f} s")
    return folder


def working_copy(pristine: Path, dest: Path) -> Path:
    """A fresh copy of the pristine corpus; the reruns add and edit files in it."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(pristine, dest, ignore=shutil.ignore_patterns(MARKER))
    return dest


def _article_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".txt", ".md") and p.name[0] != ".")


def warm_page_cache(*roots: Path) -> int:
    """Read every byte under `roots` once, so cold runs start with a warm page cache; returns bytes read."""
    total = 0
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                total += len(path.read_bytes())
    return total


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------ feedworker


def feedworker_command() -> list[str]:
    """The `feedworker` console script next to this interpreter, else on PATH, else `python -m worker`."""
    beside = Path(sys.executable).parent / "feedworker"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("feedworker")
    return [found] if found else [sys.executable, "-m", "worker"]


def _clean_env() -> dict[str, str]:
    """The environment without FEEDWORKER_* overrides, so only the benchmark config applies;
    with a code snapshot (--code-snapshot), its copy of `worker` comes first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    if _SNAPSHOT is not None:
        env["PYTHONPATH"] = _SNAPSHOT["path"]
    return env


# --code-snapshot: the copy of worker/ every measured process runs, and its code_state().
_SNAPSHOT: dict[str, Any] | None = None


def snapshot_cwd() -> str | None:
    """Where processes start with a code snapshot: its folder, so that no `worker` package of
    the current directory (the repository root) comes before it on a child's path."""
    return _SNAPSHOT["path"] if _SNAPSHOT is not None else None


def take_code_snapshot(out: Path, tries: int = 30, pause_s: float = 10.0) -> dict[str, Any]:
    """Copy worker/ as it is now into DIR/code-<digest>, once every module of it imports (a
    tree caught in the middle of an edit is copied again after `pause_s`); from then on every
    process the runner starts runs that copy, whatever happens to the working tree meanwhile."""
    global _SNAPSHOT
    for attempt in range(1, tries + 1):
        state = code_state()
        dest = out / f"code-{state['worker_digest']}"
        if not (dest / "worker").is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(ROOT / "worker", dest / "worker", ignore=shutil.ignore_patterns("__pycache__"))
        problem = _import_problem(dest)
        if problem is None:
            _SNAPSHOT = state | {"path": str(dest), "snapshot": True}
            _log(f"code snapshot {dest} (HEAD {state['head'][:10]}, {state['dirty']} files changed)")
            return _SNAPSHOT
        _log(f"code snapshot {dest} does not import ({problem}); again in {pause_s:g} s [{attempt}/{tries}]")
        shutil.rmtree(dest, ignore_errors=True)
        time.sleep(pause_s)
    raise RuntimeError("worker/ did not import in any snapshot taken: the tree is being edited")


def _import_problem(root: Path) -> str | None:
    """The last line of the error importing every module of the `worker` under `root`, or None."""
    script = (
        "import importlib, pkgutil, worker\n"
        "for m in pkgutil.walk_packages(worker.__path__, 'worker.'):\n"
        "    if not m.name.startswith('worker.store.migrations'):\n"
        "        importlib.import_module(m.name)\n"
        f"assert worker.__file__.startswith({str(root)!r}), worker.__file__\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")} | {"PYTHONPATH": str(root)}
    cmd = [sys.executable, "-c", script]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def write_config(run_dir: Path, source: Path, database: str | None = None, extra: str = "") -> Path:
    """A config reading `source`, with the database (SQLite in `run_dir` unless `database`
    names another) and the feeds in `run_dir`, and no HTTP fetching; `extra` is more YAML."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "feedworker.yaml"
    path.write_text(
        "# written by bench/run.py\n"
        f"sources:\n  - path: {json.dumps(str(source))}\n"
        f"database: {json.dumps(database or str(run_dir / 'feedworker.db'))}\n"
        f"feeds:\n  dir: {json.dumps(str(run_dir / 'feeds'))}\n"
        "enrich:\n  fetch: false\n"
        "log_level: warning\n" + extra,
        encoding="utf-8",
    )
    return path


def reset_state(run_dir: Path) -> None:
    """Remove the database (and its WAL, journal, lock) and the feeds folder: the next run is cold."""
    for path in run_dir.glob("feedworker.db*"):
        path.unlink()
    shutil.rmtree(run_dir / "feeds", ignore_errors=True)


def database_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.glob("feedworker.db*") if not p.name.endswith(".lock"))


class Feedworker:
    """Runs `feedworker run --json` as a measured process against one config."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.cmd = [*feedworker_command(), "run", "--json", "--config", str(config)]
        self.logs, self.env, self.count = logs, _clean_env(), 0
        logs.mkdir(parents=True, exist_ok=True)

    def run(self, label: str) -> tuple[Measurement, dict[str, Any]]:
        self.count += 1
        stem = self.logs / f"{self.count:03d}-{label}"
        result = measure(self.cmd, stem.with_suffix(".json"), stem.with_suffix(".log"), self.env)
        if result.returncode != 0:
            tail = stem.with_suffix(".log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"feedworker {label} exited {result.returncode}: {tail}")
        return result, json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))


def _warm_up(out: Path) -> None:
    """One untimed run on an empty folder: the interpreter and its modules are read into the page cache."""
    inbox, run_dir = out / "warm-up" / "inbox", out / "warm-up" / "state"
    inbox.mkdir(parents=True, exist_ok=True)
    reset_state(run_dir)
    Feedworker(write_config(run_dir, inbox), out / "warm-up" / "logs").run("warm-up")


def _report_brief(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report.get(k) for k in ("status", "files", "articles", "feeds", "duration_s")}


def _check(checks: list[str], label: str, report: dict[str, Any], **expected: int) -> None:
    """Note (not fail on) a run report that does not show the expected file counts."""
    files = report.get("files") or {}
    if report.get("status") != "ok":
        checks.append(f"{label}: status {report.get('status')!r}")
    for key, want in expected.items():
        if files.get(key) != want:
            checks.append(f"{label}: files.{key} = {files.get(key)}, expected {want}")


# ------------------------------------------------------------------ Hugo


def hugo_binary(mode: str) -> str | None:
    return shutil.which("hugo") if mode == "auto" else None


def hugo_version(binary: str) -> str:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, check=False).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


HUGO_CONFIG = """\
# written by bench/run.py: per-topic RSS (taxonomy terms) and an all-articles RSS (home), nothing else
baseURL = "http://localhost:8080/"
title = "News"
ignoreErrors = ["error-disable-taxonomy"]
disableKinds = ["section", "taxonomy", "sitemap", "robotsTXT", "404"]
rssLimit = 50
[taxonomies]
  topic = "topics"
[outputs]
  home = ["RSS"]
  term = ["RSS"]
[frontmatter]
  date = ["publishedDateTime", ":default"]
"""

# Article pages get a permalink (the feeds link to them) but no HTML of their own, as in feedworker.
HUGO_INDEX = """\
---
cascade:
  - _build:
      render: link
      list: always
    _target:
      kind: page
---
"""


def ensure_hugo_site(pristine: Path, site: Path) -> Path:
    """A minimal Hugo site whose content is the corpus mirrored as `.md` (hard links), made once."""
    wanted = _read_marker(pristine / MARKER)
    if _read_marker(site / SITE_MARKER) == wanted:
        return site
    shutil.rmtree(site, ignore_errors=True)
    content = site / "content"
    for path in _article_files(pristine):
        target = content / path.relative_to(pristine).with_suffix(".md")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    (content / "_index.md").write_text(HUGO_INDEX, encoding="utf-8")
    (site / "config.toml").write_text(HUGO_CONFIG, encoding="utf-8")
    (site / SITE_MARKER).write_text(json.dumps(wanted), encoding="utf-8")
    return site


def hugo_build(binary: str, site: Path, logs: Path, label: str) -> Measurement:
    """`hugo --quiet` on the site after removing its previous output (a full build every time)."""
    shutil.rmtree(site / "public", ignore_errors=True)
    shutil.rmtree(site / "resources", ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--quiet", "--source", str(site)]
    result = measure(cmd, logs / f"{label}.out", logs / f"{label}.log")
    if result.returncode != 0 or not (site / "public" / "index.xml").exists():
        tail = (logs / f"{label}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"hugo {label} exited {result.returncode}: {tail}")
    return result


# ------------------------------------------------------------------ PostgreSQL

PG_ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
SERVE_EVERY_S = 30_000_000  # the schedule of the benchmark's `serve` replicas: its next firing is a year away
READY_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 3600.0
FINISHED = ("ok", "failed", "cancelled")  # worker.service.FINISHED: a run request that changes no more
FILES_READ_METRIC = "feedworker_replica_files_read_total"


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def _tree_cpu_s(root: int) -> float:
    """CPU (user + system) of a process tree so far: every live process's own, plus what each
    collected of its children that ended (a reaped worker counts once, in its parent)."""
    ticks = 0
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / _clock_ticks()


def _status_kib(pid: int, key: str) -> int:
    """A `key:` line of /proc/<pid>/status in KiB (VmHWM, VmRSS), 0 when unreadable."""
    value = _first_line(f"/proc/{pid}/status", key + ":")
    try:
        return int(value.split()[0]) if value else 0
    except ValueError:
        return 0


class PgServer:
    """The PostgreSQL server the benchmark creates its databases in (one per cold run) and
    drops them from again; also the server's CPU, when it runs on this machine."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._postmaster: int | None = None
        with self._admin() as conn:
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])
            self.settings = {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0])
                for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "synchronous_commit", "max_wal_size")
            }
            backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        host = urllib.parse.urlsplit(admin_url).hostname or "localhost"
        if host in ("127.0.0.1", "localhost", "::1"):
            try:
                with open(f"/proc/{backend}/stat", "rb") as fh:
                    self._postmaster = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                self._postmaster = None

    def _admin(self, database: str | None = None) -> Any:
        import psycopg

        url = self.admin_url if database is None else self._libpq(database)
        return psycopg.connect(url, autocommit=True)  # CREATE / DROP DATABASE refuse a transaction

    def _libpq(self, name: str) -> str:
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + name, parts.query, ""))

    def url(self, name: str) -> str:
        """The database URL feedworker is configured with (SQLAlchemy, psycopg 3)."""
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(("postgresql+psycopg", parts.netloc, "/" + name, parts.query, ""))

    def create(self, n: int) -> str:
        name = f"bench_{n}_{secrets.token_hex(4)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database_bytes(self, name: str) -> int:
        with self._admin() as conn:
            return int(conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0])

    def table_sizes(self, name: str) -> dict[str, Any]:
        """Every table of the store: rows, heap bytes, total bytes (indexes and TOAST included)."""
        with self._admin(name) as conn:
            conn.execute("VACUUM ANALYZE")  # settles the visibility map and the statistics, frees no space
            tables = conn.execute(
                "SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid)"
                " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY pg_total_relation_size(c.oid) DESC"
            ).fetchall()
            out: dict[str, Any] = {}
            for table, heap, indexes, total in tables:
                rows = int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
                out[table] = {"rows": rows, "heap_bytes": heap, "index_bytes": indexes, "total_bytes": total}
            articles = out.get("article", {}).get("rows", 0)
            return {"articles": articles, "tables": out, "database_bytes": self.database_bytes(name)}

    def cpu_s(self) -> float | None:
        """CPU used by the whole server so far (all its processes, every database); None when
        it does not run on this machine."""
        return _tree_cpu_s(self._postmaster) if self._postmaster else None


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever http_proxy says


_OPENER = _no_proxy_opener()


def _http(method: str, url: str, token: str | None = None, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric_value(text: str, name: str) -> float | None:
    """The sum of every sample of `name` (with or without labels) in a Prometheus text page;
    None when the page has none."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
            found = True
    return total if found else None


def _logged_reads(log: Path, offset: int) -> int:
    """Files a replica read by claims since `offset` of its log: the sum of its `reads.helped`
    events (logged by ingest.shared.help_read, in the cycle holder as in the helpers)."""
    total = 0
    with open(log, "rb") as fh:
        fh.seek(offset)
        for line in fh:
            if b"reads.helped" not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "reads.helped":
                total += int(event.get("files") or 0)
    return total


def machine_cpu_s() -> float:
    """CPU the whole machine has been busy so far, all cores (/proc/stat: user, nice, system,
    irq, softirq, steal), in seconds."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _clock_ticks()


def wait_for_idle(fraction: float, max_s: float) -> dict[str, Any]:
    """Before a measured run (the bench itself idle): wait until the machine's CPU use over one
    second is below `fraction` of all its cores, at most `max_s` seconds. What was seen is
    recorded with the figure: a run measured beside other work says so."""
    cores = os.cpu_count() or 1
    start = time.monotonic()
    said = False
    while True:
        before = machine_cpu_s()
        time.sleep(1.0)
        busy = (machine_cpu_s() - before) / cores
        waited = time.monotonic() - start - 1.0
        if busy < fraction or waited >= max_s:
            if said:
                _log(f"  ... waited {waited:.0f} s; machine {busy:.0%} busy now")
            return {"busy_before": round(busy, 3), "waited_s": round(waited, 1), "gave_up": busy >= fraction}
        if not said:
            _log(f"  waiting for the machine to go idle: {busy:.0%} of {cores} cores busy (limit {fraction:.0%})")
            said = True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ what a figure runs against


class SqliteTarget:
    """`feedworker run` on a SQLite file in DIR/run-N (the runner's original set-up)."""

    kind = "sqlite"

    def __init__(self, out: Path, n: int) -> None:
        self.work = out / f"work-{n}"
        self.run_dir = out / f"run-{n}"
        self.logs = self.run_dir / "logs"
        self.fw = Feedworker(write_config(self.run_dir, self.work), self.logs)

    def reset(self) -> None:
        reset_state(self.run_dir)

    def run(self, label: str) -> tuple[Measurement, dict[str, Any], dict[str, Any]]:
        result, report = self.fw.run(label)
        return result, report, {}

    def database_bytes(self) -> int:
        return database_bytes(self.run_dir)

    def feeds_files(self) -> int:
        return sum(1 for p in (self.run_dir / "feeds").rglob("*") if p.is_file())

    def after_cold(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class PostgresRun:
    """`feedworker run` on a PostgreSQL database of its own: a new one for every cold run."""

    kind = "postgresql"

    def __init__(self, out: Path, n: int, pg: PgServer, keep: bool = False) -> None:
        self.work = out / f"work-{n}"
        self.run_dir = out / f"pg-run-{n}"
        self.logs = self.run_dir / "logs"
        self.n, self.pg, self.keep = n, pg, keep
        self.db: str | None = None
        self.fw: Feedworker | None = None
        self.sizes_after_cold: dict[str, Any] | None = None

    def reset(self) -> None:
        if self.db is not None:
            self.pg.drop(self.db)
        self.db = self.pg.create(self.n)
        shutil.rmtree(self.run_dir / "feeds", ignore_errors=True)
        config = write_config(self.run_dir, self.work, database=self.pg.url(self.db))
        if self.fw is None:
            self.fw = Feedworker(config, self.logs)
        _log(f"[{self.n}] PostgreSQL database {self.db}")

    def run(self, label: str) -> tuple[Measurement, dict[str, Any], dict[str, Any]]:
        assert self.fw is not None
        extra: dict[str, Any] = {"load_before": _loads(), "code": code_state()}
        server = self.pg.cpu_s()
        result, report = self.fw.run(label)
        after = self.pg.cpu_s()
        extra["server_cpu_s"] = round(after - server, 3) if server is not None and after is not None else None
        return result, report, extra

    def database_bytes(self) -> int:
        assert self.db is not None
        return self.pg.database_bytes(self.db)

    def feeds_files(self) -> int:
        assert self.db is not None
        on_disk = sum(1 for p in (self.run_dir / "feeds").rglob("*") if p.is_file())
        with self.pg._admin(self.db) as conn:
            stored = int(conn.execute("SELECT count(*) FROM feed_document").fetchone()[0])
        return max(on_disk, stored)

    def after_cold(self) -> None:
        assert self.db is not None
        self.sizes_after_cold = self.pg.table_sizes(self.db)

    def summary(self) -> dict[str, Any]:
        assert self.db is not None
        return {
            "database": self.db if self.keep else None,
            "table_sizes_after_cold": self.sizes_after_cold,
            "table_sizes_at_end": self.pg.table_sizes(self.db),
        }

    def close(self) -> None:
        if self.db is not None and not self.keep:
            self.pg.drop(self.db)


@dataclass
class _Replica:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ReplicaGroup:
    """N `feedworker serve` processes on one PostgreSQL database and one source folder, each
    with its own port and feeds folder; a figure is a run asked of replica 1 (POST /runs),
    timed until GET /runs/<id> says it finished.

    A cold figure starts from a new database: the replicas are started on an empty source
    folder (their start-up runs make the schema and find nothing), then the corpus is moved
    into that folder and the run is asked for.
    """

    kind = "replicas"

    def __init__(self, out: Path, n: int, count: int, pg: PgServer, keep: bool = False) -> None:
        self.dir = out / f"replicas-{n}-x{count}"
        self.work = self.dir / "inbox"
        self.logs = self.dir / "logs"
        self.n, self.count, self.pg, self.keep = n, count, pg, keep
        self.token = secrets.token_hex(16)
        self.db: str | None = None
        self.replicas: list[_Replica] = []
        self.runs = 0
        self.sizes_after_cold: dict[str, Any] | None = None
        self.logs.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------- the processes

    def _start(self) -> None:
        assert self.db is not None
        url = self.pg.url(self.db)
        for i in range(1, self.count + 1):
            port = _free_port()
            run_dir = self.dir / f"replica-{i}"
            shutil.rmtree(run_dir / "feeds", ignore_errors=True)
            # Runs by POST /runs alone: no watcher running the changed files' cycle first.
            extra = (
                "watch: false\n"
                f"schedule:\n  every: {SERVE_EVERY_S}\n"
                f"server:\n  host: 127.0.0.1\n  port: {port}\n  token: {json.dumps(self.token)}\n"
            )
            config = write_config(run_dir, self.work, database=url, extra=extra)
            # Info, not warning: each replica's `reads.helped` events say how many files it read,
            # the cycle holder's own share included (a few hundred lines a cold run).
            config.write_text(config.read_text(encoding="utf-8").replace("log_level: warning", "log_level: info"))
            log = self.logs / f"serve-{i}-{self.runs + 1:03d}.log"
            with open(log, "wb") as fh:
                cmd = [*feedworker_command(), "serve", "--config", str(config)]
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_clean_env(), cwd=snapshot_cwd())
            self.replicas.append(_Replica(proc, port, log))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for replica in self.replicas:
            self._wait_ready(replica, deadline)

    def _alive(self, replica: _Replica) -> None:
        if replica.proc.poll() is not None:
            tail = replica.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"feedworker serve on port {replica.port} exited {replica.proc.returncode}: {tail}")

    def _wait_ready(self, replica: _Replica, deadline: float) -> None:
        """Until the replica answers, its start-up run has finished and nothing is queued."""
        while True:
            self._alive(replica)
            try:
                _, page = _http("GET", f"{replica.base}/metrics", timeout=10)
                _, body = _http("GET", f"{replica.base}/healthz", timeout=10)
                health = json.loads(body)
                runs = metric_value(page.decode(), "feedworker_runs_total") or 0
                if runs >= 1 and not health.get("running") and not health.get("queued"):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"feedworker serve on port {replica.port} not ready in {READY_TIMEOUT_S:g} s")
            time.sleep(0.2)

    def _stop(self) -> None:
        for replica in self.replicas:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            try:
                replica.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()
        self.replicas = []

    # -------------------------------------------------- the figures

    def reset(self) -> None:
        self._stop()
        if self.db is not None:
            self.pg.drop(self.db)
        self.db = self.pg.create(self.n)
        parked = self.dir / "inbox.parked"
        if self.work.exists():
            self.work.rename(parked)
        self.work.mkdir(parents=True)
        try:
            self._start()
        finally:
            self.work.rmdir()
            if parked.exists():
                parked.rename(self.work)
        _log(f"[{self.n}] {self.count} replica(s) serving on database {self.db}: ports {self.ports()}")

    def ports(self) -> list[int]:
        return [r.port for r in self.replicas]

    def files_read(self) -> list[float | None]:
        values: list[float | None] = []
        for replica in self.replicas:
            try:
                status, page = _http("GET", f"{replica.base}/metrics", timeout=30)
                values.append(metric_value(page.decode(), FILES_READ_METRIC) if status == 200 else None)
            except OSError:
                values.append(None)
        return values

    def run(self, label: str) -> tuple[Measurement, dict[str, Any], dict[str, Any]]:
        self.runs += 1
        first = self.replicas[0]
        extra: dict[str, Any] = {"load_before": _loads(), "code": code_state(), "ports": self.ports()}
        read_before = self.files_read()
        log_offsets = [r.log.stat().st_size for r in self.replicas]
        server = self.pg.cpu_s()
        cpu_before = [_tree_cpu_s(r.proc.pid) for r in self.replicas]
        samplers = [_TreeSampler(r.proc.pid) for r in self.replicas]
        os.sync()
        for sampler in samplers:
            sampler.start()
        start = time.perf_counter()
        try:
            status, body = _http("POST", f"{first.base}/runs", self.token)
            if status != 202:
                raise RuntimeError(f"POST /runs answered {status}: {body[:500]!r}")
            view = self._wait_finished(first, json.loads(body)["run_id"], start)
            wall = time.perf_counter() - start
        finally:
            for sampler in samplers:
                sampler.stop()
        after = self.pg.cpu_s()
        cpu = [round(_tree_cpu_s(r.proc.pid) - before, 3) for r, before in zip(self.replicas, cpu_before)]
        read_after = self.files_read()
        (self.logs / f"{self.runs:03d}-{label}.json").write_text(json.dumps(view, indent=2), encoding="utf-8")
        if view.get("status") != "ok":
            raise RuntimeError(f"run {label} ended {view.get('status')}: {view.get('message')}")
        extra |= {
            "server_cpu_s": round(after - server, 3) if server is not None and after is not None else None,
            "replica_cpu_s": cpu,
            "files_read": [
                None if a is None or b is None else int(a - b) for a, b in zip(read_after, read_before, strict=True)
            ],
            "files_read_total": [None if a is None else int(a) for a in read_after],
            "files_read_logged": [_logged_reads(r.log, offset) for r, offset in zip(self.replicas, log_offsets)],
            "replica_peak_pss_mib": [round(s.peak_kib / 1024, 1) for s in samplers],
            "serve_vmhwm_mib": [round(_status_kib(r.proc.pid, "VmHWM") / 1024, 1) for r in self.replicas],
            "served_by": view.get("replica"),
        }
        report = view.get("report") or {}
        peak = max(s.peak_kib for s in samplers)
        return Measurement(round(wall, 4), 0, peak, 0, round(sum(cpu), 3)), report, extra

    def _wait_finished(self, replica: _Replica, run_id: str, start: float) -> dict[str, Any]:
        while True:
            status, body = _http("GET", f"{replica.base}/runs/{run_id}")
            if status == 200:
                view: dict[str, Any] = json.loads(body)
                if view.get("status") in FINISHED:
                    return view
            for each in self.replicas:
                self._alive(each)
            elapsed = time.perf_counter() - start
            if elapsed > RUN_TIMEOUT_S:
                raise RuntimeError(f"run {run_id} not finished after {RUN_TIMEOUT_S:g} s")
            time.sleep(0.02 if elapsed < 2 else 0.1)  # quick answers for quick runs, little load for long ones

    def database_bytes(self) -> int:
        assert self.db is not None
        return self.pg.database_bytes(self.db)

    def feeds_files(self) -> int:
        assert self.db is not None
        with self.pg._admin(self.db) as conn:
            return int(conn.execute("SELECT count(*) FROM feed_document").fetchone()[0])

    def after_cold(self) -> None:
        assert self.db is not None
        self.sizes_after_cold = self.pg.table_sizes(self.db)

    def summary(self) -> dict[str, Any]:
        return {
            "replicas": self.count,
            "database": self.db if self.keep else None,
            "table_sizes_after_cold": self.sizes_after_cold,
            "serve_vmhwm_mib": [round(_status_kib(r.proc.pid, "VmHWM") / 1024, 1) for r in self.replicas],
        }

    def close(self) -> None:
        self._stop()
        if self.db is not None and not self.keep:
            self.pg.drop(self.db)


Target = SqliteTarget | PostgresRun | ReplicaGroup


# ------------------------------------------------------------------ one size


def make_target(args: argparse.Namespace, n: int, replicas: int | None = None) -> Target:
    """What the figures of one size run against: a SQLite file, a PostgreSQL database, or replicas."""
    if args.database == "sqlite":
        return SqliteTarget(args.out, n)
    assert args.pg is not None
    if replicas is None:
        return PostgresRun(args.out, n, args.pg, args.keep_database)
    return ReplicaGroup(args.out, n, replicas, args.pg, args.keep_database)


def bench_size(
    corpus: ModuleType, args: argparse.Namespace, n: int, hugo: str | None, replicas: int | None = None
) -> dict[str, Any]:
    """Every figure for one corpus size."""
    out: Path = args.out
    pristine = ensure_corpus(corpus, out, n, args.seed)
    target = make_target(args, n, replicas)
    try:
        return _bench_target(corpus, args, n, hugo, pristine, target)
    finally:
        target.close()


def _bench_target(
    corpus: ModuleType, args: argparse.Namespace, n: int, hugo: str | None, pristine: Path, target: Target
) -> dict[str, Any]:
    out: Path = args.out
    work = working_copy(pristine, target.work)
    site = ensure_hugo_site(pristine, out / f"hugo-{n}") if hugo else None
    files = len(_article_files(work))
    warmed = warm_page_cache(work, pristine)
    _log(f"[{n}] warm-up: read {warmed / MIB:.0f} MiB of corpus; {files} article files")
    checks: list[str] = []
    cold, hugo_runs, db_sizes, feeds_files = [], [], [], []
    for i in range(args.repeat):
        if hugo and site:  # interleaved with the cold runs, so background load hits both alike
            hugo_runs.append(hugo_build(hugo, site, target.logs, f"hugo-{i + 1}"))
            _progress(n, "Hugo build", hugo_runs[-1])
        target.reset()
        result, report, extra = _measured(args, target, f"cold-{i + 1}")
        _check(checks, f"cold #{i + 1}", report, new=files, quarantined=0)
        db_sizes.append(target.database_bytes())
        feeds_files.append(target.feeds_files())
        target.after_cold()
        cold.append((result, report, extra))
        _progress(n, "cold run", result, report, extra)
    no_change = []
    for i in range(args.repeat):
        result, report, extra = _measured(args, target, f"no-change-{i + 1}")
        _check(checks, f"no-change #{i + 1}", report, new=0, changed=0, deleted=0)
        no_change.append((result, report, extra))
        _progress(n, "no-change rerun", result, report, extra)
    add = []
    for i in range(args.repeat):
        corpus.add_one(work, seed=1_000 + i)
        result, report, extra = _measured(args, target, f"add-one-{i + 1}")
        _check(checks, f"add-one #{i + 1}", report, new=1, changed=0)
        add.append((result, report, extra))
        _progress(n, "one new file", result, report, extra)
    mutated = []
    for i in range(args.repeat):
        total = len(_article_files(work))
        k = max(1, round(total * 0.01))
        changed = corpus.mutate(work, k / total, seed=2_000 + i)
        result, report, extra = _measured(args, target, f"mutate-{i + 1}")
        _check(checks, f"1 % changed #{i + 1}", report, new=0, changed=len(changed))
        mutated.append((result, report, extra))
        _progress(n, f"1 % changed ({len(changed)} files)", result, report, extra)
    figures = {key: _figure(runs) for key, runs in zip((k for k, _ in FIGURES), (cold, no_change, add, mutated))}
    return {
        "files": n,
        "corpus_bytes": _tree_bytes(pristine) - (pristine / MARKER).stat().st_size,
        "database_bytes": db_sizes[-1],
        "database_bytes_per_repeat": db_sizes,
        "feeds_files": feeds_files[-1],
        "figures": figures,
        "hugo": summarize(hugo_runs) if hugo_runs else None,
        "checks": checks,
        **target.summary(),
    }


def _measured(
    args: argparse.Namespace, target: Target, label: str
) -> tuple[Measurement, dict[str, Any], dict[str, Any]]:
    """One figure's run, after waiting for an idle machine if asked (--wait-idle), with the CPU
    other processes used meanwhile: the machine's busy time less feedworker's and the server's."""
    gate = wait_for_idle(args.wait_idle, args.wait_idle_max) if args.wait_idle else None
    if target.kind == "sqlite" and gate is None:
        return target.run(label)  # the runner's original figures, nothing added
    load, code = _loads(), code_state()
    machine = machine_cpu_s()
    result, report, extra = target.run(label)
    used = machine_cpu_s() - machine
    own = (result.cpu_s or 0.0) + (extra.get("server_cpu_s") or 0.0)
    extra = {"load_before": load, "code": code} | extra | {"machine_cpu_s": round(used, 3)}
    extra["other_cpu_s"] = round(max(0.0, used - own), 3)
    if gate is not None:
        extra |= gate
    return result, report, extra


def _figure(runs: list[tuple[Measurement, dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    summary = summarize([m for m, _, _ in runs])
    durations = [r.get("duration_s") for _, r, _ in runs if isinstance(r.get("duration_s"), (int, float))]
    summary["in_process_median_s"] = round(statistics.median(durations), 4) if durations else None
    summary["reports"] = [_report_brief(r) for _, r, _ in runs]
    extras = [e for _, _, e in runs if e]
    if extras:  # PostgreSQL: the server's CPU, the load and the code of each run; replicas: who read what
        cpu = [m.cpu_s for m, _, _ in runs if m.cpu_s is not None]
        server = [e["server_cpu_s"] for e in extras if e.get("server_cpu_s") is not None]
        summary["cpu_median_s"] = round(statistics.median(cpu), 3) if cpu else None
        summary["server_cpu_median_s"] = round(statistics.median(server), 3) if server else None
        other = [e["other_cpu_s"] for e in extras if e.get("other_cpu_s") is not None]
        summary["other_cpu_median_s"] = round(statistics.median(other), 3) if other else None
        summary["runs"] = extras
    return summary


# ------------------------------------------------------------------ targets


def hugo_reference(size: dict[str, Any]) -> tuple[float, str]:
    """Hugo's build time for this size: measured in this session, else issue 5's figure scaled linearly."""
    if size.get("hugo"):
        return size["hugo"]["median_s"], "Hugo measured in this session"
    scaled = ISSUE_HUGO_S * size["files"] / ISSUE_HUGO_FILES
    return scaled, f"issue 5's figure ({ISSUE_HUGO_S:g} s at {ISSUE_HUGO_FILES:,} files), scaled linearly"


def _verdict(ok: bool | None) -> str:
    return "N/A" if ok is None else ("PASS" if ok else "FAIL")


def judge(sizes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5's targets, judged at every size (the issue states them at 50,000 files)."""
    targets: list[dict[str, Any]] = []
    for size in sizes:
        ref, basis = hugo_reference(size)
        fig = size["figures"]
        peak = max(f["peak_rss_mib"] for f in fig.values())
        rows = (
            ("cold run faster than Hugo's build", fig["cold"]["median_s"], ref, "s"),
            ("one new file under 1/50 of Hugo's build", fig["add_one"]["median_s"], ref / 50, "s"),
            ("no-change rerun under 1/50 of Hugo's build", fig["no_change"]["median_s"], ref / 50, "s"),
            (f"peak RSS of any run under {RSS_CAP_MIB:g} MiB", peak, RSS_CAP_MIB, "MiB"),
        )
        for name, value, limit, unit in rows:
            targets.append(
                {
                    "files": size["files"],
                    "target": name,
                    "value": value,
                    "limit": round(limit, 4),
                    "unit": unit,
                    "basis": basis if unit == "s" else "",
                    "result": _verdict(value < limit),
                }
            )
    targets.append(_growth_target(sizes))
    return targets


def _growth_target(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak RSS at the largest size at most RSS_GROWTH_MAX times that at the smallest (needs two sizes)."""
    by_n = sorted(sizes, key=lambda s: s["files"])
    name = "peak RSS not growing with the corpus"
    if len(by_n) < 2 or by_n[0]["files"] == by_n[-1]["files"]:
        return {
            "files": None,
            "target": name,
            "value": None,
            "limit": RSS_GROWTH_MAX,
            "unit": "x",
            "basis": "needs two sizes",
            "result": "N/A",
        }
    small, large = (max(f["peak_rss_mib"] for f in s["figures"].values()) for s in (by_n[0], by_n[-1]))
    ratio = large / small if small else float("inf")
    basis = (
        f"{large:.0f} MiB at {by_n[-1]['files']:,} files / {small:.0f} MiB at {by_n[0]['files']:,} files, "
        f"allowed up to {RSS_GROWTH_MAX:g}x"
    )
    return {
        "files": by_n[-1]["files"],
        "target": name,
        "value": round(ratio, 3),
        "limit": RSS_GROWTH_MAX,
        "unit": "x",
        "basis": basis,
        "result": _verdict(ratio <= RSS_GROWTH_MAX),
    }


def ratios(size: dict[str, Any]) -> dict[str, float] | None:
    """Each feedworker figure (median) as a fraction of Hugo's build measured in this session."""
    hugo = size.get("hugo")
    if not hugo:
        return None
    out = {key: round(size["figures"][key]["median_s"] / hugo["median_s"], 4) for key, _ in FIGURES}
    peak = max(f["peak_rss_mib"] for f in size["figures"].values())
    out["peak_rss"] = round(peak / hugo["peak_rss_mib"], 4) if hugo["peak_rss_mib"] else None
    return out


# ------------------------------------------------------------------ machine


def _first_line(path: str, key: str, sep: str = ":") -> str | None:
    """The value of the first `key<sep>value` line of a file such as /proc/cpuinfo."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(sep, 1)[1].strip()
    except OSError:
        pass
    return None


def _git(*a: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def _git_state() -> str:
    head = _git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + (" with uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else "")


def code_state() -> dict[str, Any]:
    """The code a figure measured: `git rev-parse HEAD`, the lines of `git status --short`
    (files changed or untracked), and a digest of worker/**/*.py as they are on disk now."""
    if _SNAPSHOT is not None:
        return {key: _SNAPSHOT[key] for key in ("head", "dirty", "worker_digest", "snapshot")}
    head = _git("rev-parse", "HEAD")
    digest = hashlib.sha256()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        try:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            continue
    return {
        "head": head or "unknown",
        "dirty": len(_git("status", "--short").splitlines()) if head else None,
        "worker_digest": digest.hexdigest()[:12],
    }


def machine_info() -> dict[str, Any]:
    mem_kib = _first_line("/proc/meminfo", "MemTotal")
    pretty = _first_line("/etc/os-release", "PRETTY_NAME=", "=")
    return {
        "cpu": _first_line("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "os": f"{pretty.strip(chr(34)) if pretty else platform.system()}, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "feedworker": _git_state(),
    }


# ------------------------------------------------------------------ Markdown

HOW_TO = """\
# Benchmarks

`bench/run.py` measures feedworker on generated corpora (`bench/corpus.py`: sample-like
files of about 7 KB, about 13 related items each, Zipf-distributed topics, 70 % published)
and, when `hugo` is on the PATH, Hugo building per-topic RSS from the same files. From the
repository root, with the package installed (`pip install -e .`):

```sh
python bench/run.py --sizes 10000 50000 --repeat 3
```

Options: `--sizes N...` (default 10000 50000), `--repeat R` (default 3), `--out DIR`
(default `bench/out`, git-ignored), `--hugo auto|off` (default auto), `--markdown PATH`
(default this file), `--seed S` (default 1), `--note TEXT` (a remark printed with the
results). The JSON result is written to `DIR/results.json`; this file is rewritten.
Run it on a quiet machine: a 50,000-file session takes several minutes.

PostgreSQL (issue 13): `--database postgresql` measures the same four figures with
`feedworker run` on a new PostgreSQL database for every cold run (created and dropped through
`--pg-admin-url`, default `postgresql://root@127.0.0.1:5432/postgres`; `--keep-database` keeps
the last one of each size). `--replicas N...` (1, 2 and/or 3, PostgreSQL only) starts N
`feedworker serve` processes on one new database instead and times each figure from
`POST /runs` to replica 1 until `GET /runs/<id>` says it finished, with the files each replica
read. These sessions go under their own keys of `results.json` (`postgresql`, `replicas`) and
into their own blocks below the analysis marker, which a SQLite run keeps. On a shared
machine, `--wait-idle F` waits before each measured run until the machine's CPU use is below
F of its cores (at most `--wait-idle-max` s, default 600) and records the CPU other processes
used during each run; `--code-snapshot` runs a copy of `worker/` taken at the start (in
`DIR/code-<digest>`), so that edits made meanwhile do not change the code measured.

Watch latency (issue 15): `--watch-latency` (SQLite; `bench/watch_latency.py`) runs one cold
`feedworker run` on a copy of each corpus, then `feedworker serve` on it (watch on), and times
`--samples` (default 20) new files, edits and deletes each from the file's `close()` to the
served topic feed (`GET /feeds/topics/<slug>.atom`, conditional, every `--poll-ms`, default 2)
showing the change, then a `--burst` of new files (default 1,000) until `/runs/latest` shows
them all stored; with `hugo`, `hugo server` gets the same changes (`--hugo-samples`). Its
figures go under the key `watch` of `results.json` and into their own block below the analysis
marker, which the other runs keep.

What it does, per size:

* **Corpus**: generated once into `DIR/corpus-N` (kept and reused while its marker,
  seed + n + generator digest, matches) and copied to `DIR/work-N` for each session,
  because the reruns add and edit files.
* **Runs**: each figure is a whole process, `feedworker run --json --config DIR/run-N/feedworker.yaml`
  (`enrich.fetch: false`; database and feeds under `DIR/run-N`), repeated `--repeat` times;
  the tables give the median and the spread (min–max) of the wall time measured around the
  process, and the in-process `duration_s` of its report. `sync` runs before every measured process.
  * *cold run*: no database, no feeds folder (removed before each repeat);
  * *no-change rerun*: again, nothing touched;
  * *one new file*: after `add_one` (a fresh file each repeat);
  * *1 % changed*: after `mutate` of 1 % of the files (another seed each repeat).
* **Cold means a cold database, not a cold disk**: before the runs the whole corpus is read
  once (warm page cache) and feedworker is run once, untimed, on an empty folder (its
  interpreter and modules are in the cache too). Dropping the page cache needs root and says
  more about the disk than about feedworker.
* **Peak RSS**: the larger of the kernel's high-water mark of the largest single process of
  the run (`wait4` `ru_maxrss`, what `/usr/bin/time -f %M` reports) and the peak of the summed
  PSS of the whole process tree (main process and parse workers, sampled every 50 ms from
  `/proc`; shared pages are counted once).
* **Database size**: the SQLite file (plus WAL, if any) after the cold run.
* **Hugo** (`--hugo auto` and `hugo` installed, e.g. Debian's `hugo` package): a minimal site in
  `DIR/hugo-N` whose content is the corpus hard-linked as `.md` (made once, not timed), taxonomy
  `topics`, RSS output for each term and for the home page (50 items, like feedworker), article
  pages listed but not rendered, `publishedDateTime` as the date, drafts (`published: false`)
  left out. `hugo --quiet` is timed the same way, interleaved with the cold runs, after its
  `public/` is removed. Every feedworker figure is then also given as a ratio to Hugo's build.
  Without Hugo, the targets are judged against issue 5's figure, Hugo 24 s at 50,000 files,
  scaled linearly to the size (e.g. 4.8 s at 10,000).

Targets (issue 5; stated at 50,000 files on a 2-core machine, judged here at every size):
cold run faster than Hugo's full build; one new file and no-change rerun each under 1/50
of Hugo's build; peak RSS of any run under 300 MiB and not growing with the corpus (the
largest size's peak at most 1.25 × the smallest size's; needs two sizes).
"""


def _s(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def _size_str(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _timing_rows(size: dict[str, Any]) -> list[str]:
    n, rows = f"{size['files']:,}", []
    rel = ratios(size) or {}
    for key, label in FIGURES:
        f = size["figures"][key]
        ratio = f"{rel[key]:.3f}" if key in rel else "—"
        inproc = _s(f["in_process_median_s"]) if f["in_process_median_s"] is not None else "—"
        rows.append(
            f"| {n} | {label} | {_s(f['median_s'])} | {_s(f['min_s'])}–{_s(f['max_s'])} | {inproc} "
            f"| {f['peak_rss_mib']:.0f} | {ratio} |"
        )
    if size.get("hugo"):
        h = size["hugo"]
        rows.append(
            f"| {n} | Hugo build | {_s(h['median_s'])} | {_s(h['min_s'])}–{_s(h['max_s'])} | — "
            f"| {h['peak_rss_mib']:.0f} | 1 |"
        )
    return rows


def _target_rows(targets: list[dict[str, Any]]) -> list[str]:
    rows = []
    for t in targets:
        files = f"{t['files']:,}" if t["files"] else "—"
        value = (
            "—"
            if t["value"] is None
            else (f"{t['value']:.3f} {t['unit']}" if t["unit"] != "MiB" else f"{t['value']:.0f} MiB")
        )
        limit = f"{t['limit']:.0f} MiB" if t["unit"] == "MiB" else f"{t['limit']:g} {t['unit']}"
        rows.append(f"| {files} | {t['target']} | {value} | < {limit} | **{t['result']}** | {t['basis']} |")
    return rows


# Everything from this line on in the Markdown report is written by hand (profiles, what
# stands in the way) and kept when the results above it are written again.
ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by bench/run.py -->"


def kept_analysis(markdown: Path) -> str:
    """The hand-written part of an existing report, from ANALYSIS_MARKER on, or ""."""
    try:
        text = markdown.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    position = text.find(ANALYSIS_MARKER)
    return "\n" + text[position:] if position != -1 else ""


def render_markdown(results: dict[str, Any]) -> str:
    """docs/benchmarks.md: how to run, then every figure, the targets and the machine."""
    m, lines = results["machine"], [HOW_TO, "## Latest results", ""]
    lines.append(
        f"Measured {results['date']} with `{results['command']}` ({results['repeat']} repeats; median, min–max)."
    )
    if results.get("note"):
        lines += ["", f"> **Note:** {results['note']}"]
    lines += [
        "",
        "| files | run | median (s) | min–max (s) | in-process median (s) | peak RSS (MiB) | × Hugo build |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        lines += _timing_rows(size)
    lines += [
        "",
        "| files | corpus | database after cold run | feed files | Hugo reference |",
        "|---:|---:|---:|---:|---|",
    ]
    for size in results["sizes"]:
        ref, basis = hugo_reference(size)
        lines.append(
            f"| {size['files']:,} | {_size_str(size['corpus_bytes'])} | {_size_str(size['database_bytes'])} "
            f"| {size['feeds_files']:,} | {_s(ref)} s ({basis}) |"
        )
    lines += [
        "",
        "### Targets",
        "",
        "| files | target | measured (median time, peak RSS) | limit | result | basis |",
        "|---:|---|---:|---:|---|---|",
        *_target_rows(results["targets"]),
    ]
    checks = [c for size in results["sizes"] for c in (f"{size['files']:,} files: {x}" for x in size["checks"])]
    if checks:
        lines += ["", "### Unexpected run reports", "", *(f"* {c}" for c in checks)]
    lines += [
        "",
        "### Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']} ({m['cores']} cores, {m['usable_cores']} usable) |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| SQLite | {m['sqlite']} |",
        f"| feedworker | {m['feedworker']} |",
        f"| Hugo | {results['hugo_version'] or 'not used'} |",
        f"| load average (1 min) at start / end | {results['load_start']} / {results['load_end']} |",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ Markdown: PostgreSQL and replicas

# Each block sits between its two markers after ANALYSIS_MARKER (so the SQLite report keeps
# it) and is rewritten by the next run of its kind; without the markers it is appended.
BLOCKS = {
    "postgresql": "PostgreSQL against SQLite (`bench/run.py --database postgresql`)",
    "replicas": "Replicas on one PostgreSQL database (`bench/run.py --replicas N`)",
    "watch": "Watch latency (`bench/run.py --watch-latency`)",
}


def block_markers(key: str) -> tuple[str, str]:
    return (
        f"<!-- bench/run.py {key}: begin (rewritten by its next run of this kind) -->",
        f"<!-- bench/run.py {key}: end -->",
    )


def update_block(markdown: Path, key: str, body: str) -> None:
    """Put `body` between the markers of `key` in the report, or append it with a heading."""
    begin, end = block_markers(key)
    try:
        text = markdown.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    i = text.find(begin)
    j = text.find(end, i + 1) if i != -1 else -1
    if i != -1 and j != -1:
        text = text[:i] + block + text[j + len(end) :]
    else:
        if ANALYSIS_MARKER not in text:
            text = text.rstrip("\n") + ("\n\n" if text else "") + ANALYSIS_MARKER + "\n"
        text = text.rstrip("\n") + f"\n\n## {BLOCKS[key]}\n\n{block}\n"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text, encoding="utf-8")


def _code_str(code: dict[str, Any]) -> str:
    snap = " (snapshot)" if code.get("snapshot") else ""
    return f"{code['head'][:7]}+{code['dirty']} `{code['worker_digest'][:8]}`{snap}"


def _codes(figure: dict[str, Any]) -> str:
    seen: list[str] = []
    for run in figure.get("runs", ()):
        shown = _code_str(run["code"])
        if shown not in seen:
            seen.append(shown)
    return ", ".join(seen) or "—"


def _load_str(figure: dict[str, Any]) -> str:
    return ", ".join(f"{run['load_before'][0]:.1f}" for run in figure.get("runs", ())) or "—"


def _opt_mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _opt_s(value: float | None) -> str:
    return "—" if value is None else _s(value)


def _sqlite_sizes(results: dict[str, Any], seed: int) -> dict[int, dict[str, Any]]:
    """The SQLite figures of results.json (its own session), by size, when of the same corpus seed."""
    if results.get("seed") != seed:
        return {}
    return {size["files"]: size for size in results.get("sizes") or ()}


def render_postgres_block(results: dict[str, Any]) -> str:
    session = results["postgresql"]
    sqlite = _sqlite_sizes(results, session["seed"])
    pg_machine = session["machine"]
    settings = ", ".join(f"{k} {v}" for k, v in pg_machine.get("postgresql_settings", {}).items())
    lines = [
        (
            f"PostgreSQL {pg_machine.get('postgresql', '?')} ({settings}) on the same machine, measured "
            f"{session['date']} with `{session['command']}` ({session['repeat']} repeat(s); median, min–max),"
            " `feedworker run --json` as a whole process, a new database for every cold run."
        ),
    ]
    if sqlite:
        lines.append(
            f"SQLite: `results.json` of {results['date']}, `{results['command']}` ({results['repeat']} repeat(s), "
            f"feedworker {results['machine']['feedworker']}, load {results['load_start']} / {results['load_end']})."
        )
    else:
        lines.append("No SQLite figures of the same corpus seed in `results.json`: run `bench/run.py` first.")
    if session.get("note"):
        lines += ["", f"> **Note:** {session['note']}"]
    lines += [
        "",
        (
            "| files | run | SQLite (s) | PostgreSQL (s) | PostgreSQL min–max (s) | PG ÷ SQLite "
            "| in-process SQLite / PG (s) | CPU feedworker SQLite / PG (s) | CPU PostgreSQL server (s) "
            "| other processes' CPU SQLite / PG (s) | peak RSS SQLite / PG (MiB) | load before SQLite / PG | code PG |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in session["sizes"]:
        n, lite = size["files"], sqlite.get(size["files"])
        for key, label in FIGURES:
            f = size["figures"][key]
            s = lite["figures"][key] if lite else None
            ratio = f"{f['median_s'] / s['median_s']:.2f}" if s else "—"
            lite_cpu = statistics.median(c) if s and (c := _sample_cpu(s)) else None
            lines.append(
                f"| {n:,} | {label} | {_opt_s(s['median_s'] if s else None)} | {_s(f['median_s'])} "
                f"| {_s(f['min_s'])}–{_s(f['max_s'])} | {ratio} "
                f"| {_opt_s(s['in_process_median_s'] if s else None)} / {_opt_s(f['in_process_median_s'])} "
                f"| {_opt_s(lite_cpu)} / {_opt_s(f.get('cpu_median_s'))} | {_opt_s(f.get('server_cpu_median_s'))} "
                f"| {_opt_s(s.get('other_cpu_median_s') if s else None)} / {_opt_s(f.get('other_cpu_median_s'))} "
                f"| {_opt_mib(s['peak_rss_mib'] if s else None)} / {f['peak_rss_mib']:.0f} "
                f"| {_load_str(s) if s else '—'} / {_load_str(f)} | {_codes(f)} |"
            )
    lines += [
        "",
        "| files | SQLite file after cold run | PostgreSQL database after cold run | feeds |",
        "|---:|---:|---:|---:|",
    ]
    for size in session["sizes"]:
        lite = sqlite.get(size["files"])
        lines.append(
            f"| {size['files']:,} | {_size_str(lite['database_bytes']) if lite else '—'} "
            f"| {_size_str(size['database_bytes'])} | {size['feeds_files']:,} |"
        )
    largest = max(session["sizes"], key=lambda size: size["files"])
    if largest.get("table_sizes_after_cold"):
        lines += ["", *_table_size_rows(largest["files"], largest["table_sizes_after_cold"])]
    return "\n".join(lines)


def _sample_cpu(figure: dict[str, Any]) -> list[float]:
    return [x["cpu_s"] for x in figure.get("samples", ()) if x.get("cpu_s") is not None]


def _table_size_rows(files: int, sizes: dict[str, Any]) -> list[str]:
    articles = sizes["articles"] or 1
    rows = [
        (
            f"PostgreSQL tables after the cold run at {files:,} files ({sizes['articles']:,} articles, "
            f"database {_size_str(sizes['database_bytes'])}; `pg_total_relation_size`, after `VACUUM ANALYZE`):"
        ),
        "",
        "| table | rows | heap | indexes | total (with TOAST) | bytes per article |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = 0
    for table, t in sizes["tables"].items():
        total += t["total_bytes"]
        rows.append(
            f"| {table} | {t['rows']:,} | {_size_str(t['heap_bytes'])} | {_size_str(t['index_bytes'])} "
            f"| {_size_str(t['total_bytes'])} | {t['total_bytes'] / articles:,.0f} |"
        )
    rows.append(f"| **all tables** | | | | {_size_str(total)} | **{total / articles:,.0f}** |")
    return rows


def render_replicas_block(results: dict[str, Any]) -> str:
    sessions = results.get("replicas") or {}
    lines = [
        (
            "Each figure: `POST /runs` to replica 1, then `GET /runs/<id>` polled (every 20 ms, 100 ms after 2 s)"
            " until it finished; wall time from the POST to the answer that says so. Replicas are"
            " `feedworker serve` processes on 127.0.0.1, one database, one source folder, a feeds folder each;"
            " files read per replica: the rise of `feedworker_replica_files_read_total` on each during the"
            " figure (n/a: no such series; in brackets, where they differ, the files its `reads.helped`"
            " log events name); peak PSS: each replica's process tree, sampled every 50 ms; CPU: user +"
            " system of the replicas' process trees, of the PostgreSQL server (all its processes) and of"
            " everything else on the machine (from /proc/stat) during the figure."
        ),
        "",
    ]
    for count in sorted(sessions, key=int):
        s = sessions[count]
        lines.append(
            f"* {count} replica(s): {s['date']}, `{s['command']}` ({s['repeat']} repeat(s)), "
            f"load {s['load_start'][0]} / {s['load_end'][0]}" + (f"; note: {s['note']}" if s.get("note") else "")
        )
    lines += [
        "",
        (
            "| files | replicas | run | median (s) | min–max (s) | ÷ 1 replica | in-process (s) "
            "| files read per replica | peak PSS per replica (MiB) | CPU replicas / server / other processes (s) "
            "| load before | code |"
        ),
        "|---:|---:|---|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    one = {size["files"]: size for size in (sessions.get("1") or {}).get("sizes", ())}
    rows = []
    for count in sorted(sessions, key=int):
        for size in sessions[count]["sizes"]:
            rows.append((size["files"], int(count), size))
    for n, count, size in sorted(rows, key=lambda r: (r[0], r[1])):
        for key, label in FIGURES:
            f = size["figures"][key]
            base = one.get(n)
            ratio = f"{f['median_s'] / base['figures'][key]['median_s']:.2f}" if base else "—"
            reads = "; ".join(
                _per_replica(run["files_read"])
                + (
                    f" (log: {_per_replica(run['files_read_logged'])})"
                    if run.get("files_read_logged", run["files_read"]) != run["files_read"]
                    else ""
                )
                for run in f.get("runs", ())
            )
            pss = "; ".join(_per_replica(run["replica_peak_pss_mib"], "{:.0f}") for run in f.get("runs", ()))
            lines.append(
                f"| {n:,} | {count} | {label} | {_s(f['median_s'])} | {_s(f['min_s'])}–{_s(f['max_s'])} | {ratio} "
                f"| {_opt_s(f['in_process_median_s'])} | {reads} | {pss} "
                f"| {_opt_s(f.get('cpu_median_s'))} / {_opt_s(f.get('server_cpu_median_s'))} "
                f"/ {_opt_s(f.get('other_cpu_median_s'))} | {_load_str(f)} | {_codes(f)} |"
            )
    hwm = [
        f"{count} replica(s) at {size['files']:,} files: {_per_replica(size.get('serve_vmhwm_mib') or [], '{:.0f}')}"
        for n, count, size in sorted(rows, key=lambda r: (r[0], r[1]))
    ]
    if hwm:
        lines += [
            "",
            "Peak RSS (VmHWM) of each `serve` process at the end of its session, MiB: " + "; ".join(hwm) + ".",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(
    n: int, label: str, m: Measurement, report: dict[str, Any] | None = None, extra: dict[str, Any] | None = None
) -> None:
    inproc = f", in-process {report['duration_s']} s" if report and "duration_s" in report else ""
    _log(f"[{n}] {label}: {m.wall_s:.3f} s{inproc}, peak RSS {m.peak_rss_mib:.0f} MiB")
    if extra:
        more = [f"CPU {m.cpu_s} s"]
        if "server_cpu_s" in extra:
            more.append(f"PostgreSQL server CPU {extra['server_cpu_s']} s")
        if "other_cpu_s" in extra:
            more.append(f"other processes' CPU {extra['other_cpu_s']} s")
        if "files_read" in extra:
            more.append(f"files read per replica {_per_replica(extra['files_read'])}")
            more.append(f"by their logs {_per_replica(extra['files_read_logged'])}")
            more.append(f"peak PSS per replica {_per_replica(extra['replica_peak_pss_mib'], '{:.0f}')} MiB")
        code = extra["code"]
        more.append(f"load {extra['load_before'][0]}, code {code['head'][:10]}+{code['dirty']} {code['worker_digest']}")
        _log(f"[{n}]   " + "; ".join(more))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _loads() -> list[float]:
    """The load averages over 1, 5 and 15 minutes, as `uptime` prints them."""
    return [round(x, 2) for x in os.getloadavg()]


def _per_replica(values: list[Any], fmt: str = "{:,}") -> str:
    """`r1 5,012 / r2 4,988`, with n/a for a value not known (no such metric yet)."""
    return " / ".join(f"r{i} {'n/a' if v is None else fmt.format(v)}" for i, v in enumerate(values, 1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000], help="corpus sizes (files)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per figure")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpora, state, logs and results.json")
    ap.add_argument("--hugo", choices=("auto", "off"), default="auto", help="build with Hugo when it is on PATH")
    ap.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the Markdown report to write")
    ap.add_argument("--seed", type=int, default=1, help="corpus seed")
    ap.add_argument("--note", default="", help="a remark printed with the results (e.g. machine was busy)")
    ap.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default=None,
        help="the store measured (default sqlite; postgresql: a new database for every cold run)",
    )
    ap.add_argument(
        "--replicas",
        type=int,
        nargs="+",
        choices=(1, 2, 3),
        default=None,
        metavar="N",
        help="PostgreSQL only: N `feedworker serve` replicas instead of `feedworker run` (1, 2 or 3; several: one after another)",
    )
    ap.add_argument(
        "--pg-admin-url", default=PG_ADMIN_URL, help="libpq URL of a database to create and drop others from"
    )
    ap.add_argument("--keep-database", action="store_true", help="keep the last PostgreSQL database of each size")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="before each measured run, wait until the machine's CPU use is below FRACTION of its cores (0: do not)",
    )
    ap.add_argument(
        "--code-snapshot",
        action="store_true",
        help="run a copy of worker/ taken at the start (DIR/code-<digest>), not the working tree, which may change meanwhile",
    )
    ap.add_argument(
        "--wait-idle-max", type=float, default=600.0, metavar="S", help="wait for an idle machine at most S s"
    )
    ap.add_argument(
        "--watch-latency",
        action="store_true",
        help="issue 15: time from a file's close() to `feedworker serve` (watching) serving the change, "
        "and `hugo server`'s rebuild (bench/watch_latency.py); results under the key `watch`",
    )
    ap.add_argument("--samples", type=int, default=20, help="--watch-latency: samples per kind of change")
    ap.add_argument(
        "--hugo-samples", type=int, default=None, help="--watch-latency: samples per kind for Hugo (default --samples)"
    )
    ap.add_argument("--poll-ms", type=float, default=2.0, help="--watch-latency: poll interval of the served feed")
    ap.add_argument("--burst", type=int, default=1000, help="--watch-latency: new files in the burst (0: none)")
    args = ap.parse_args(argv)
    if args.hugo_samples is None:
        args.hugo_samples = args.samples
    if args.watch_latency and (args.database == "postgresql" or args.replicas):
        ap.error("--watch-latency measures SQLite only")
    if args.samples < 1 or args.hugo_samples < 0 or args.burst < 0 or args.poll_ms <= 0:
        ap.error("--samples must be at least 1, --hugo-samples and --burst at least 0, --poll-ms more than 0")
    if args.repeat < 1 or any(n < 1 for n in args.sizes):
        ap.error("--repeat and --sizes must be at least 1")
    if args.replicas and args.database == "sqlite":
        ap.error("--replicas needs --database postgresql (replicas share a PostgreSQL database)")
    args.database = args.database or ("postgresql" if args.replicas else "sqlite")
    args.out = args.out.resolve()
    args.pg = None
    return args


def _print_summary(results: dict[str, Any]) -> None:
    for size in results["sizes"]:
        rel = ratios(size) or {}
        for key, label in FIGURES:
            f = size["figures"][key]
            ratio = f"  ({rel[key]:.3f} × Hugo)" if key in rel else ""
            print(
                f"{size['files']:>7,} {label:<34} {f['median_s']:8.3f} s  [{f['min_s']:.3f}–{f['max_s']:.3f}]"
                f"  {f['peak_rss_mib']:5.0f} MiB{ratio}"
            )
        if size["hugo"]:
            h = size["hugo"]
            print(
                f"{size['files']:>7,} {'Hugo build':<34} {h['median_s']:8.3f} s  "
                f"[{h['min_s']:.3f}–{h['max_s']:.3f}]  {h['peak_rss_mib']:5.0f} MiB"
            )
        print(f"{size['files']:>7,} database after cold run: {_size_str(size['database_bytes'])}")
    for t in results["targets"]:
        where = f"{t['files']:,} files" if t["files"] else "all sizes"
        print(
            f"{t['result']:<4}  {t['target']} ({where}): {t['value']} vs {t['limit']} {t['unit']}"
            + (f" [{t['basis']}]" if t["basis"] else "")
        )


def read_results(out: Path) -> dict[str, Any]:
    try:
        found = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_results(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _warm_up_postgres(out: Path, pg: PgServer) -> None:
    """One untimed run on an empty folder into a scratch database: psycopg and the store's
    PostgreSQL modules are read into the page cache, and the server has seen a first client."""
    inbox = out / "warm-up" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    db = pg.create(0)
    try:
        config = write_config(out / "warm-up" / "pg-state", inbox, database=pg.url(db))
        Feedworker(config, out / "warm-up" / "logs").run("warm-up-postgresql")
    finally:
        pg.drop(db)


def main_postgres(args: argparse.Namespace, raw: list[str], corpus: ModuleType) -> int:
    """`--database postgresql` (with `--replicas N...`): each session under its own key of
    results.json ("postgresql", "replicas" -> N) and in its own block of the Markdown report."""
    args.pg = PgServer(args.pg_admin_url)
    machine = machine_info() | {"postgresql": args.pg.version, "postgresql_settings": args.pg.settings}
    _log(f"PostgreSQL {args.pg.version} at {args.pg_admin_url}")
    _warm_up(args.out)
    _warm_up_postgres(args.out, args.pg)
    for count in args.replicas or [None]:
        session: dict[str, Any] = {
            "date": _now(),
            "command": shlex.join(["python", "bench/run.py", *raw]),
            "repeat": args.repeat,
            "seed": args.seed,
            "note": args.note,
            "database": "postgresql",
            "replicas": count,
            "feedworker_command": feedworker_command(),
            "machine": machine,
            "code_start": code_state(),
            "load_start": _loads(),
        }
        _log(f"--- {'feedworker run' if count is None else f'{count} serve replica(s)'} on PostgreSQL")
        session["sizes"] = [bench_size(corpus, args, n, None, count) for n in args.sizes]
        session["load_end"], session["code_end"] = _loads(), code_state()
        results = read_results(args.out)
        if count is None:
            results["postgresql"] = session
        else:
            results.setdefault("replicas", {})[str(count)] = session
        _write_results(args.out, results)
        if count is None:
            update_block(args.markdown, "postgresql", render_postgres_block(results))
        else:
            update_block(args.markdown, "replicas", render_replicas_block(results))
        _print_postgres_summary(session)
    _log(f"wrote {args.out / 'results.json'} and {args.markdown}")
    return 0


def _print_postgres_summary(session: dict[str, Any]) -> None:
    who = "feedworker run" if session["replicas"] is None else f"{session['replicas']} replica(s)"
    for size in session["sizes"]:
        for key, label in FIGURES:
            f = size["figures"][key]
            reads = ""
            if f.get("runs") and "files_read" in f["runs"][-1]:
                reads = "  read " + _per_replica(f["runs"][-1]["files_read"])
            print(
                f"{size['files']:>7,} PostgreSQL {who}: {label:<34} {f['median_s']:8.3f} s  "
                f"[{f['min_s']:.3f}–{f['max_s']:.3f}]  {f['peak_rss_mib']:5.0f} MiB{reads}"
            )
        print(f"{size['files']:>7,} database after cold run: {_size_str(size['database_bytes'])}")


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = _load_corpus()
    if args.code_snapshot:
        take_code_snapshot(args.out)
    if args.database == "postgresql":
        return main_postgres(args, raw, corpus)
    if args.watch_latency:
        return _load_module("bench_watch_latency", "watch_latency.py").main_watch(
            sys.modules[__name__], args, raw, corpus
        )
    hugo = hugo_binary(args.hugo)
    results: dict[str, Any] = {
        "date": _now(),
        "command": shlex.join(["python", "bench/run.py", *raw]),
        "repeat": args.repeat,
        "seed": args.seed,
        "note": args.note,
        "feedworker_command": feedworker_command(),
        "hugo_version": hugo_version(hugo) if hugo else None,
        "machine": machine_info(),
        "load_start": _load(),
    }
    _log(f"hugo: {results['hugo_version'] or 'not used'}")
    _warm_up(args.out)
    results["sizes"] = [bench_size(corpus, args, n, hugo) for n in args.sizes]
    for size in results["sizes"]:
        size["ratios_to_hugo"] = ratios(size)
        size["hugo_reference_s"], size["hugo_reference_basis"] = hugo_reference(size)
    results["targets"] = judge(results["sizes"])
    results["load_end"] = _load()
    kept = read_results(args.out)  # the PostgreSQL sessions stay, under their own keys
    results |= {key: kept[key] for key in BLOCKS if key in kept}
    _write_results(args.out, results)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    kept = kept_analysis(args.markdown)
    args.markdown.write_text(render_markdown(results) + kept, encoding="utf-8")
    _print_summary(results)
    _log(f"wrote {args.out / 'results.json'} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
