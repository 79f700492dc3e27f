"""Soak test for manual runs: kill `feedworker run` at random moments, over and over, and
check that the store and the feeds end up equal to those of an uninterrupted run."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import generate, mutate

__all__ = ["main"]

CLOCK = "2024-06-01T12:00:00+00:00"
TABLES = {
    "article": "select url, title, excerpt, body, published_at, updated_at, is_published, removed from article",
    "topic": "select key, name, slug from topic",
    "related": "select a.url, r.position, r.url from related_item r join article a on a.id = r.article_id",
    "source_file": "select path, size, mtime_ns, hash, state, article_url from source_file",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/out/soak"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    inbox = args.out / "inbox"
    if not inbox.exists():
        generate(inbox, args.files, seed=args.seed)
    for round_number in range(1, args.rounds + 1):
        if round_number > 1:
            mutate(inbox, 0.01, seed=args.seed + round_number)
        reference = _project(args.out / "reference", inbox)
        started = time.monotonic()
        _run(reference)
        full = time.monotonic() - started
        victim = _project(args.out / "victim", inbox)
        kills = 0
        while True:
            process = _start(victim)
            time.sleep(rng.uniform(0.2, max(0.4, full)))
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        _run(victim)
        problems = _compare(reference, victim)
        print(f"round {round_number}: {kills} kills, reference run {full:.1f}s: {'ok' if not problems else problems}")
        if problems:
            return 1
    return 0


def _project(root: Path, inbox: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "feedworker.yaml"
    config.write_text(
        f"sources:\n  - path: {inbox.resolve()}\ndatabase: db/feedworker.db\nfeeds:\n  dir: feeds\n"
        "enrich:\n  fetch: false\nlog_level: error\n"
    )
    return config


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FEEDWORKER_CLOCK": CLOCK}
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _run(config: Path) -> None:
    if _start(config).wait() != 0:
        raise SystemExit(f"feedworker run --config {config} failed")


def _compare(reference: Path, victim: Path) -> list[str]:
    problems = []
    left, right = reference.parent, victim.parent
    if _feeds(left / "feeds") != _feeds(right / "feeds"):
        problems.append("feeds differ")
    if list((right / "feeds").rglob(".feedworker-*")):
        problems.append("temporary files left")
    with sqlite3.connect(right / "db" / "feedworker.db") as conn:
        if conn.execute("pragma integrity_check").fetchone() != ("ok",):
            problems.append("integrity_check failed")
    for name, query in TABLES.items():
        if _rows(left, query) != _rows(right, query):
            problems.append(f"{name} differs")
    return problems


def _feeds(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _rows(root: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(root / "db" / "feedworker.db") as conn:
        return sorted(conn.execute(query).fetchall(), key=repr)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
