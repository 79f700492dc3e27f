"""Issue 15, item 1: `serve` watches its source folders and runs an incremental cycle for what changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import article_text, both_dialects, run_cli
from tests.service_helpers import Service, copy_examples, free_port, wait_for, write_config
from worker.ingest.scanner import scan, scan_paths
from worker.model import Source
from worker.plan import plan_reads

TOKEN = "watch-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def metrics(service: Service) -> dict[str, float]:
    text = service.get("/metrics").text
    return {
        sample.name + "".join(f"{{{value}}}" for value in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("feedworker_watch")
    }


def watching(service: Service) -> bool:
    return metrics(service).get("feedworker_watch_state{watching}") == 1.0


def settled_cycles(service: Service) -> float:
    """The incremental cycles run so far, once the last one has ended (the count holds 0.5 s)."""

    def steady() -> tuple[float] | None:
        before = metrics(service)["feedworker_watch_cycles_total"]
        time.sleep(0.5)
        return (before,) if metrics(service)["feedworker_watch_cycles_total"] == before else None

    return wait_for(steady, 20, "the cycles to end")[0]


def served_items(service: Service) -> dict[str, dict[str, Any]]:
    """The all-articles JSON feed's items by URL, as `serve` answers it."""
    response = service.get("/feeds/all.json")
    if response.status_code != 200:
        return {}
    assert response.headers["etag"]
    return {item["url"]: item for item in response.json()["items"]}


def latest(service: Service) -> dict[str, Any]:
    return service.get("/runs/latest").json()


def article(url: str, title: str) -> str:
    return article_text(title=title, web_url=url, topics=["Watching"], publishedDateTime="2021-06-01T10:00:00Z")


@contextmanager
def started(tmp_path: Path, **config: Any) -> Iterator[Service]:
    """`serve` over the examples with the watcher on (the schedule far away), once it watches."""
    copy_examples(tmp_path / "inbox")
    port = free_port()
    with Service(write_config(tmp_path, port=port, watch=True, server={"token": TOKEN}, **config), port) as service:
        service.wait_healthy(60)
        wait_for(lambda: watching(service), 20, "the watcher to watch")
        yield service


# --- the incremental scan ------------------------------------------------------------------------


def test_a_scan_of_the_changed_paths_finds_what_a_full_scan_finds_there(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "2021" / "06").mkdir(parents=True)
    (root / ".hidden").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    for name in (
        "a.txt",
        "2021/b.txt",
        "2021/06/c.md",
        "2021/06/.d.txt",
        "2021/06/e.txt.swp",
        ".hidden/f.txt",
        "g.csv",
    ):
        (root / name).write_text(name)
    (root / "inside-link.txt").symlink_to(root / "a.txt")
    (root / "leaving-link.txt").symlink_to(outside / "secret.txt")
    (root / "leaving-folder").symlink_to(outside)
    sources = [Source(root, ("**/*.txt", "**/*.md"), 10_000, 0.0)]
    full = scan(sources, time.time_ns())
    every_path = [str(path) for path in root.rglob("*")] + [str(root / "gone.txt"), str(tmp_path / "elsewhere.txt")]
    partial = scan_paths(sources, every_path, time.time_ns())
    assert (
        set(partial.files)
        == set(full.files)
        == {str(root / name) for name in ("a.txt", "2021/b.txt", "2021/06/c.md", "inside-link.txt")}
    )
    assert {path: (f.size, f.mtime_ns) for path, f in partial.files.items()} == {
        path: (f.size, f.mtime_ns) for path, f in full.files.items()
    }
    # A folder's path stands for what is under it; the source folder's own path for all of it.
    assert set(scan_paths(sources, [str(root / "2021")], time.time_ns()).files) == {
        str(root / "2021/b.txt"),
        str(root / "2021/06/c.md"),
    }
    assert set(scan_paths(sources, [str(root)], time.time_ns()).files) == set(full.files)

    # Only what it looked at can be taken as deleted.
    known = {str(root / "a.txt"): (1, 1), str(root / "gone.txt"): (1, 1), str(root / "old/x.txt"): (1, 1)}
    looked = scan_paths(sources, [str(root / "gone.txt")], time.time_ns())
    assert plan_reads(looked, known).deleted == [str(root / "gone.txt")]
    folder_moved_away = scan_paths(sources, [str(root / "old")], time.time_ns())
    assert plan_reads(folder_moved_away, known).deleted == [str(root / "old/x.txt")]
    assert plan_reads(full, known).deleted == [str(root / "gone.txt"), str(root / "old/x.txt")]


# --- serve ---------------------------------------------------------------------------------------


@both_dialects()
def test_serve_picks_up_created_edited_moved_and_deleted_files(
    tmp_path: Path, new_database: Callable[[], str | None]
) -> None:
    inbox = tmp_path / "inbox"
    database = new_database()
    with started(tmp_path, **({"database": database} if database else {})) as service:
        # After its first cycle a watching serve builds every current feed's entries, once.
        topics = service.get("/feeds/index.opml").text.count("<outline ")
        warmed = wait_for(lambda: _events(service, "entries.warmed"), 30, "the entries warmed")
        assert [event["feeds"] for event in warmed] == [topics + 1]  # and the all feed
        before = served_items(service)
        last_run = latest(service)["run_id"]
        url = "https://watch.example.com/new"
        (inbox / "new.txt").write_text(article(url, "Dropped in"), encoding="utf-8")
        wait_for(lambda: served_items(service).get(url, {}).get("title") == "Dropped in", 20, "the new article")
        # The feeds are out before the cycle has ended: its report comes a moment later.
        report = wait_for(lambda: (r := latest(service))["run_id"] > last_run and r, 20, "the cycle's report")
        assert report["scan"] == "paths" and report["watch"]["state"] == "watching"
        assert report["files"]["new"] == 1 and report["files"]["seen"] == 1 and report["files"]["deleted"] == 0
        assert report["sources"][0]["files"] == len(before) + 1 + _unpublished(inbox)

        (inbox / "new.txt").write_text(article(url, "Edited in place"), encoding="utf-8")
        wait_for(lambda: served_items(service).get(url, {}).get("title") == "Edited in place", 20, "the edit")

        (inbox / "2022").mkdir()
        os.rename(inbox / "new.txt", inbox / "2022" / "moved.txt")
        wait_for(lambda: latest(service)["files"]["deleted"] == 1, 20, "the move")
        assert served_items(service)[url]["title"] == "Edited in place"
        assert _stored_paths(tmp_path, database, url) == [str(inbox / "2022" / "moved.txt")]

        outside = tmp_path / "outside"
        outside.mkdir()
        urls = [f"https://watch.example.com/folder-{n}" for n in range(3)]
        for n, each in enumerate(urls):
            (outside / f"{n}.txt").write_text(article(each, f"In a folder {n}"), encoding="utf-8")
        os.rename(outside, inbox / "folder")  # a folder moved in: one event for it, none for its files
        wait_for(lambda: all(each in served_items(service) for each in urls), 20, "the folder's articles")
        os.rename(inbox / "folder", tmp_path / "away")  # and out again
        wait_for(lambda: not any(each in served_items(service) for each in urls), 20, "the folder's articles gone")

        (inbox / "2022" / "moved.txt").unlink()
        wait_for(lambda: url not in served_items(service), 20, "the deleted article gone")
        assert served_items(service).keys() == before.keys()

        # Names that are never articles make no cycle.
        cycles = settled_cycles(service)
        (inbox / ".draft.txt").write_text(article("https://watch.example.com/hidden", "Hidden"), encoding="utf-8")
        (inbox / "x.txt.swp").write_text("swap", encoding="utf-8")
        time.sleep(1.0)
        assert metrics(service)["feedworker_watch_cycles_total"] == cycles
        assert metrics(service)["feedworker_watch_paths_total"] >= 7

        # The store is where a full scan would have put it: a full run finds nothing to do.
        full = json.loads(run_cli("run", "--json", "--config", str(service.config)).stdout)
        assert full["scan"] == "full"
        assert {key: full["files"][key] for key in ("new", "changed", "deleted")} == {
            "new": 0,
            "changed": 0,
            "deleted": 0,
        }
        assert full["feeds"]["written"] == 0


def _events(service: Service, name: str) -> list[dict[str, Any]]:
    lines = (line for line in service.log().splitlines() if line.startswith("{"))
    return [event for event in map(json.loads, lines) if event.get("event") == name]


def _unpublished(inbox: Path) -> int:
    return sum("published: false" in path.read_text(encoding="utf-8") for path in inbox.rglob("*.txt"))


def _stored_paths(tmp_path: Path, database: str | None, url: str) -> list[str]:
    from tests.conftest import store_rows

    store = database or f"sqlite:///{tmp_path / 'db' / 'feedworker.db'}"
    rows = store_rows(store, "SELECT path FROM source_file WHERE article_url = :article", article=url)
    return sorted(path for (path,) in rows)


def test_a_burst_of_files_makes_a_few_cycles_not_one_each(tmp_path: Path) -> None:
    with started(tmp_path) as service:
        staging = tmp_path / "staging"
        staging.mkdir()
        urls = [f"https://watch.example.com/burst-{n}" for n in range(300)]
        for n, url in enumerate(urls):
            (staging / f"{n:03d}.txt").write_text(article(url, f"Burst {n}"), encoding="utf-8")
        cycles = settled_cycles(service)
        stored = _stored_count(tmp_path)
        before = stored()
        for path in sorted(staging.iterdir()):
            shutil.copy(path, tmp_path / "inbox" / path.name)
        wait_for(lambda: stored() == before + 300, 60, "every file of the burst stored")
        wait_for(lambda: stored() == before + 300, 60, "every file of the burst stored")
        made = settled_cycles(service) - cycles
        assert 1 <= made <= 15, made


def _stored_count(tmp_path: Path) -> Any:
    import sqlite3

    def count() -> int:
        conn = sqlite3.connect(tmp_path / "db" / "feedworker.db", timeout=30)
        try:
            return conn.execute("SELECT count(*) FROM source_file").fetchone()[0]
        finally:
            conn.close()

    return count


def test_a_file_still_being_written_is_read_once_it_has_settled(tmp_path: Path) -> None:
    with started(tmp_path, sources=[{"path": "inbox", "settle_s": 1.5}]) as service:
        url = "https://watch.example.com/settling"
        last_run = latest(service)["run_id"]
        written = time.time()
        (tmp_path / "inbox" / "settling.txt").write_text(article(url, "Settled"), encoding="utf-8")
        wait_for(lambda: url in served_items(service), 20, "the settled article")
        assert time.time() - written >= 1.5
        report = wait_for(lambda: (r := latest(service))["run_id"] > last_run and r, 20, "the cycle's report")
        assert report["files"]["new"] == 1 and report["scan"] == "paths"


def test_watch_false_leaves_changes_to_the_schedule_and_triggers(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port, watch=False, server={"token": TOKEN})
    with Service(config, port) as service:
        service.wait_healthy(60)
        assert metrics(service)["feedworker_watch_state{off}"] == 1.0
        url = "https://watch.example.com/unwatched"
        (tmp_path / "inbox" / "unwatched.txt").write_text(article(url, "Unwatched"), encoding="utf-8")
        time.sleep(1.5)
        assert url not in served_items(service)
        assert service.post("/runs", headers=BEARER).status_code == 202
        wait_for(lambda: url in served_items(service), 30, "the triggered run")
        assert latest(service)["scan"] == "full"
        assert _events(service, "entries.warmed") == []  # nothing waits for a watcher: no warming


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a user namespace")
def test_when_the_inotify_limit_runs_out_it_says_so_and_the_schedule_goes_on(tmp_path: Path) -> None:
    """A user namespace of its own gives `serve` an inotify watch limit of 2 (the machine's is
    untouched); the inbox has more folders than that."""
    if subprocess.run(["unshare", "-U", "-r", "true"], check=False).returncode != 0:
        pytest.skip("user namespaces are not available here")
    copy_examples(tmp_path / "inbox")
    for n in range(10):
        (tmp_path / "inbox" / "more" / str(n)).mkdir(parents=True)
    port = free_port()
    config = write_config(tmp_path, port=port, watch=True, schedule={"every": "2s"}, server={"token": TOKEN})
    limited = "echo 2 > /proc/sys/user/max_inotify_watches && exec " + " ".join(
        [sys.executable, "-m", "worker", "serve", "--config", str(config)]
    )
    with Service(config, port, command=["unshare", "-U", "-r", "sh", "-c", limited]) as service:
        service.wait_healthy(60)
        wait_for(lambda: metrics(service).get("feedworker_watch_state{limited}") == 1.0, 20, "the watcher limited")
        assert "watch.limited" in service.log() and "max_user_watches" in service.log()
        url = "https://watch.example.com/scheduled"
        (tmp_path / "inbox" / "scheduled.txt").write_text(article(url, "Scheduled"), encoding="utf-8")
        wait_for(lambda: url in served_items(service), 30, "the scheduled run")
        report = latest(service)
        assert report["scan"] == "full" and report["watch"]["state"] == "limited"
        status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        assert status["last_run"]["watch"]["state"] == "limited"
        assert "inotify" in status["last_run"]["watch"]["reason"]
        text = run_cli("status", "--config", str(config)).stdout
        assert "watcher:  limited: the kernel's inotify watch limit ran out" in text
