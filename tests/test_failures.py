"""Nothing lost, nothing corrupted: kills at any moment, full and read-only disks, files that
move under our feet, another process holding the database.

The @both_dialects() tests run on a new PostgreSQL database too; the others are about the
SQLite file (its disk, its busy lock, its deferred indexes and DDL) or about no store at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import ROOT, Project, article_text, both_dialects, make_project

CLOCK = {"FEEDWORKER_CLOCK": "2024-06-01T12:00:00+00:00"}


def corpus(target: Path, n: int, seed: int = 3) -> None:
    spec = importlib.util.spec_from_file_location("bench_corpus_failures", ROOT / "bench" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.generate(target, n, seed=seed)


def store_snapshot(database: Path) -> dict[str, list[tuple]]:
    """The store's content, independent of row ids and of how many runs it took."""
    with sqlite3.connect(database) as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        queries = {
            "articles": "select url, web_url, title, excerpt, body, published_at, first_seen, updated_at, is_published, "
            "removed, extra_json, related_json, content_hash from article join article_content "
            "on article_id = id order by url",
            "topics": "select key, name, slug, dirty from topic order by key",
            "links": "select a.url, t.key from article_topic x join article a on a.id = x.article_id "
            "join topic t on t.id = x.topic_id order by 1, 2",
            "related": "select a.url, r.position, r.url, r.wants_page, r.shows_page from related_item r "
            "join article a on a.id = r.article_id order by 1, 2",
            "files": "select path, size, mtime_ns, hash, state, error, article_url from source_file order by path",
        }
        return {name: conn.execute(sql).fetchall() for name, sql in queries.items()}


def feed_bytes(feeds: Path) -> dict[str, bytes]:
    return {str(p.relative_to(feeds)): p.read_bytes() for p in sorted(feeds.rglob("*")) if p.is_file()}


def popen_run(project: Project, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--json", "--config", str(project.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=environment,
    )


class FeedWatcher(threading.Thread):
    """Reads every feed file over and over; records any that is not whole, valid XML."""

    def __init__(self, feeds: Path):
        super().__init__(daemon=True)
        self.feeds = feeds
        self.stop = threading.Event()
        self.broken: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for path in list(self.feeds.rglob("*.rss")) + list(self.feeds.rglob("*.atom")):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue  # a topic feed removed: fine
                try:
                    etree.fromstring(data)
                    self.reads += 1
                except etree.XMLSyntaxError as exc:
                    self.broken.append(f"{path.name}: {exc}")


# SQLite-only for time (30 s more on PostgreSQL): kill -9s at random on PostgreSQL, ending as one
# uninterrupted SQLite process, are tests/test_replicas_chaos.py's.
@pytest.mark.slow
def test_killed_anywhere_then_finished_equals_an_uninterrupted_run(tmp_path: Path):
    inbox = tmp_path / "inbox"
    corpus(inbox, 1200)
    reference = make_project(tmp_path / "reference", sources=[{"path": str(inbox)}])
    interrupted = make_project(tmp_path / "interrupted", sources=[{"path": str(inbox)}])

    started = time.monotonic()
    reference.cli("run", env=CLOCK)
    full = time.monotonic() - started

    watcher = FeedWatcher(interrupted.feeds)
    watcher.start()
    rng = random.Random(11)
    kills = 0
    try:
        for _ in range(10):
            # each killed run leaves its committed batches: the next one starts further on
            process = popen_run(interrupted, CLOCK)
            time.sleep(rng.uniform(0.3, max(0.6, full * 0.4)))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait(timeout=60)
        result = interrupted.cli("run", "--json", env=CLOCK)
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
    assert kills >= 3
    assert json.loads(result.stdout)["status"] == "ok"
    assert watcher.broken == [] and watcher.reads > 0
    assert feed_bytes(interrupted.feeds) == feed_bytes(reference.feeds)
    assert store_snapshot(interrupted.database) == store_snapshot(reference.database)
    leftovers = [p.name for p in interrupted.feeds.rglob(".feedworker-*")]
    assert leftovers == []


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system holding `folder`; returns the filler file."""
    filler = folder / "filler.bin"
    # Unbuffered: a buffered file would flush what did not fit once more on close, and raise there.
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


@both_dialects()
def test_a_full_feeds_disk_fails_cleanly_and_recovers(tmp_path: Path, new_database):
    with tmpfs(tmp_path / "out", "2m"):
        project = make_project(tmp_path, database=new_database())
        for n in range(5):
            project.article(f"{n}.txt", title=f"A{n}", web_url=f"https://a.example/{n}")
        project.run()
        before = feed_bytes(project.feeds)
        filler = fill(project.feeds)
        for n in range(5, 60):
            project.article(f"{n}.txt", title=f"A{n}", web_url=f"https://a.example/{n}", excerpt="x " * 300)
        result = project.cli("run", check=False)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
        assert "No space left on device" in result.stderr.strip().splitlines()[-1]
        assert {k: v for k, v in feed_bytes(project.feeds).items() if k != "filler.bin"} == before
        assert not list(project.feeds.rglob(".feedworker-*"))
        filler.unlink()
        report = project.run()
        assert report["status"] == "ok" and report["articles"]["total"] == 60


# SQLite-only: the database file's own disk fills.
def test_a_full_database_disk_fails_cleanly_and_recovers(tmp_path: Path):
    with tmpfs(tmp_path / "data", "3m"):
        project = make_project(tmp_path)
        project.article("a.txt", title="A", web_url="https://a.example/a")
        project.run()
        filler = fill(project.database.parent)
        for n in range(300):
            project.article(f"{n}.txt", title=f"A{n}", web_url=f"https://a.example/{n}", excerpt="y " * 500)
        result = project.cli("run", check=False)
        assert result.returncode == 1
        assert "full" in result.stderr.strip().splitlines()[-1]
        filler.unlink()
        with sqlite3.connect(project.database) as conn:
            assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
            assert conn.execute("select count(*) from article").fetchone()[0] <= 301
        report = project.run()
        assert report["status"] == "ok" and report["articles"]["total"] == 301


@both_dialects()
def test_a_read_only_feeds_folder_fails_cleanly_and_recovers(tmp_path: Path, new_database):
    with tmpfs(tmp_path / "out", "4m") as out:
        project = make_project(tmp_path, database=new_database())
        project.article("a.txt", title="A", web_url="https://a.example/a")
        project.run()
        before = feed_bytes(project.feeds)
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        project.article("b.txt", title="B", web_url="https://a.example/b")
        result = project.cli("run", check=False)
        assert result.returncode == 1
        assert "Read-only file system" in result.stderr.strip().splitlines()[-1]
        assert feed_bytes(project.feeds) == before
        subprocess.run(["mount", "-o", "remount,rw", str(out)], check=True)
        report = project.run()
        assert report["status"] == "ok" and report["articles"]["total"] == 2


def test_files_still_being_written_wait_until_they_settle(tmp_path: Path):
    project = make_project(tmp_path, sources=[{"path": "../inbox", "settle_s": 30}])
    old = project.article("old.txt", title="Old", web_url="https://a.example/old")
    os.utime(old, (time.time() - 60, time.time() - 60))
    fresh = project.article("fresh.txt", title="Fresh", web_url="https://a.example/fresh")
    report = project.run()
    assert report["articles"]["total"] == 1 and report["files"]["deleted"] == 0
    os.utime(fresh, (time.time() - 60, time.time() - 60))
    report = project.run()
    assert report["articles"]["total"] == 2 and report["files"]["new"] == 1


def test_editor_temporary_hidden_files_and_folders_named_like_articles_are_ignored(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    for name in (".a.txt.swp", ".hidden.txt", "a.txt~", "b.tmp", "#a.txt#", ".git/config.txt", "c.txt.part"):
        project.write(name, "---\ngarbage: [\n")
    (project.inbox / "folder.txt").mkdir()
    report = project.run()
    assert report["files"]["seen"] == 1 and report["files"]["quarantined"] == 0


def test_an_unreadable_file_is_quarantined_and_retried_once_readable(tmp_path: Path):
    project = make_project(tmp_path)
    for folder in (tmp_path, project.inbox, project.config.parent):
        folder.chmod(0o777)
    path = project.article("locked.txt", title="Locked", web_url="https://a.example/locked")
    project.article("open.txt", title="Open", web_url="https://a.example/open")
    path.chmod(0o000)
    nobody = {"preexec_fn": lambda: (os.setgid(65534), os.setuid(65534))}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWORKER_")}
    command = [sys.executable, "-m", "worker", "run", "--json", "--config", str(project.config)]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=ROOT, env=environment, **nobody, check=False
        )
    except PermissionError:
        pytest.skip("the interpreter cannot be run as nobody here (tests run as root; root reads everything)")
    if result.returncode != 0 and not result.stdout:
        pytest.skip(f"feedworker cannot run as nobody here: {result.stderr.strip()[-200:]}")
    report = json.loads(result.stdout)
    assert report["files"]["quarantined"] == 1
    assert "Permission denied" in report["errors"][0]["message"]
    path.chmod(0o644)  # mtime unchanged: retried because no stat was recorded
    report = json.loads(
        subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, **nobody, check=False).stdout
    )
    assert report["files"]["quarantined"] == 0 and report["articles"]["total"] == 2


# SQLite-only: another connection's write lock on the whole file, and busy_timeout_s (SQLite's settings).
def test_a_database_held_by_another_process_waits_then_reports_clearly(tmp_path: Path):
    project = make_project(tmp_path, busy_timeout_s=1)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    project.article("b.txt", title="B", web_url="https://a.example/b")
    holder = sqlite3.connect(project.database, timeout=0)
    holder.execute("begin immediate")
    holder.execute("insert into meta (key, value) values ('held', '1')")
    try:
        result = project.cli("run", check=False)
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1
    assert "database is locked" in result.stderr.strip().splitlines()[-1]
    assert "busy_timeout_s" in result.stderr
    report = project.run()  # the lock is gone: the next run completes
    assert report["articles"]["total"] == 2

    project.article("c.txt", title="C", web_url="https://a.example/c")
    holder = sqlite3.connect(project.database, timeout=0, check_same_thread=False)
    holder.execute("begin immediate")
    release = threading.Timer(0.4, holder.rollback)
    release.start()
    try:
        project.config.write_text(project.config.read_text().replace("busy_timeout_s: 1", "busy_timeout_s: 20"))
        report = project.run()  # waits for the other writer within the timeout
    finally:
        release.join()
        holder.close()
    assert report["articles"]["total"] == 3


def test_a_read_error_records_no_stat_so_the_file_is_tried_again(tmp_path: Path):
    from worker.ingest.parsers import read_article

    folder = tmp_path / "looks-like-a-file.txt"
    folder.mkdir()
    result = read_article(str(folder), 1000, None)
    assert result.error.startswith("cannot be read: ") and (result.size, result.mtime_ns) == (-1, -1)
    assert read_article(str(tmp_path / "vanished.txt"), 1000, None) is None


@both_dialects()
def test_files_rewritten_renamed_and_deleted_during_runs_settle_correctly(project: Project):
    """A writer thread truncates, rewrites, renames and deletes files while cycles run;
    every cycle completes, and once the writer stops the next cycle stores what is on disk."""
    from worker.config import load_config
    from worker.pipeline import run_cycle

    for n in range(150):
        project.article(f"f{n}.txt", title=f"T{n}", web_url=f"https://a.example/{n}", body="x " * 200)
    stop = threading.Event()

    def churn() -> None:
        rng = random.Random(5)
        version = 0
        while not stop.is_set():
            version += 1
            n = rng.randrange(150)
            path = project.inbox / f"f{n}.txt"
            action = rng.choice(["rewrite", "truncate", "rename", "delete"])
            try:
                if action == "rewrite":
                    path.write_text(article_text(title=f"T{n} v{version}", web_url=f"https://a.example/{n}"))
                elif action == "truncate":
                    with open(path, "r+b") as handle:
                        handle.truncate(20)
                elif action == "rename":
                    path.rename(project.inbox / f"g{n}-{version}.txt")
                else:
                    path.unlink()
            except OSError:
                pass

    writer = threading.Thread(target=churn, daemon=True)
    config = load_config(project.config)
    writer.start()
    try:
        for _ in range(4):
            assert run_cycle(config).status == "ok"
    finally:
        stop.set()
        writer.join()
    report = run_cycle(config)
    on_disk = sorted(p.name for p in project.inbox.iterdir())
    files = project.query("select path, state, article_url from source_file")
    stored = sorted(Path(path).name for path, _, _ in files)
    texts = {Path(path).name: (state, url) for path, state, url in files}
    assert stored == on_disk  # every file present is known, nothing gone is
    for name in on_disk:
        data = (project.inbox / name).read_bytes()
        state, _url = texts[name]
        assert state == ("ok" if data.startswith(b"---\ntitle:") and len(data) > 40 else "quarantined"), name
    # Every article a file carries is there, and no other: a quarantined file (one truncated as
    # the writer stopped) keeps the article it last gave.
    assert report.articles.total == len({url for _state, url in texts.values() if url})


# SQLite-only: the indexes a first run defers, and the DDL SQLite's driver runs outside the transaction.
def _secondary_indexes(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("select name from sqlite_master where type = 'index' and name like 'ix_%'").fetchall()
    return {name for (name,) in rows}


def test_a_first_run_killed_while_its_indexes_are_off_gets_them_back(tmp_path: Path):
    from worker.pipeline import DEFER_INDEXES_FROM

    inbox = tmp_path / "inbox"
    corpus(inbox, DEFER_INDEXES_FROM + 300)  # large enough for a first run to defer its indexes
    reference = make_project(tmp_path / "reference", sources=[{"path": str(inbox)}])
    reference.cli("run", env=CLOCK)
    every_index = _secondary_indexes(reference.database)
    assert {"ix_related_item_url", "ix_article_published_at_url", "ix_article_topic_feed"} <= every_index

    interrupted = make_project(tmp_path / "interrupted", sources=[{"path": str(inbox)}])
    process = popen_run(interrupted, CLOCK)
    deadline = time.monotonic() + 60
    stored = 0
    while stored < 300 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
        try:
            with sqlite3.connect(f"file:{interrupted.database}?mode=ro", uri=True) as conn:
                stored = conn.execute("select count(*) from source_file").fetchone()[0]
        except sqlite3.Error:
            continue  # the schema is still being made
    process.kill()
    process.wait()
    assert 0 < stored < DEFER_INDEXES_FROM + 300, "the run was not caught mid-way"
    assert "ix_related_item_url" not in _secondary_indexes(interrupted.database)  # killed with them off

    report = json.loads(interrupted.cli("run", "--json", env=CLOCK).stdout)
    assert report["status"] == "ok"
    assert _secondary_indexes(interrupted.database) == every_index
    assert store_snapshot(interrupted.database) == store_snapshot(reference.database)
    assert interrupted.feed_files().keys() == reference.feed_files().keys()
    assert all(interrupted.feed(name) == reference.feed(name) for name in reference.feed_files())


def test_a_first_run_killed_while_creating_the_schema_is_finished_by_the_next(tmp_path: Path):
    # SQLite's driver runs CREATE TABLE outside the transaction: a kill -9 right after it
    # leaves the tables without the schema version row (seen in the random kill test).
    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(project.database) as conn:
        conn.execute("CREATE TABLE meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY (key))")
    conn.close()
    report = project.run()
    assert report["status"] == "ok" and report["articles"]["total"] == 1
