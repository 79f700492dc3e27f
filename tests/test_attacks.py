"""The holes an outside attack found (issue 10): lost deletions, poison files and names, live
markup, files swapped under the reader, hand-made files, forged status lines, dead runs."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path

import lxml.html
import pytest
from lxml import etree

from tests.conftest import Project, article_text, make_project, run_cli
from tests.test_failures import CLOCK, corpus, feed_bytes, popen_run, store_snapshot

# --------------------------------------------------------------------------- 1. kills after files went


def _changes(inbox: Path) -> dict[str, list[Path]]:
    """Delete 5 files, move 5, give 5 a new webUrl (oldest mtime: in the first batch), and
    edit 700 more so the run stores two batches: what a kill between a change and its
    consequences hits."""
    files = sorted(inbox.rglob("*.txt"))
    rng = random.Random(5)
    rng.shuffle(files)
    deleted, moved, renamed_url, edited = files[:5], files[5:10], files[10:15], files[15:715]
    for path in deleted:
        path.unlink()
    (inbox / "moved").mkdir()
    for path in moved:
        path.rename(inbox / "moved" / path.name)
    stamp = time.time_ns() - 10**12  # oldest edit: read (and committed) first
    for n, path in enumerate(renamed_url):
        text = re.sub(
            r"^webUrl: .*$",
            f"webUrl: https://moved.example/new-slug-{n}",
            path.read_text(),
            count=1,
            flags=re.MULTILINE,
        )
        path.write_text(text)
        os.utime(path, ns=(stamp + n, stamp + n))
    for path in edited:
        path.write_text(path.read_text() + "\nAn edit.\n")
    return {"deleted": deleted, "moved": moved, "url": renamed_url}


def _rows(database: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.2) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return [("busy",)]


def _kill_when(project: Project, condition) -> None:
    process = popen_run(project, CLOCK)
    deadline = time.monotonic() + 120
    while not condition():
        assert process.poll() is None, f"the run ended before the moment to kill it: {process.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["files-forgotten", "first-batch-stored", "random"])
def test_a_run_killed_after_files_went_ends_like_one_never_killed(tmp_path: Path, moment: str):
    inbox = tmp_path / "inbox"
    corpus(inbox, 1100)
    reference = make_project(tmp_path / "reference", sources=[{"path": str(inbox)}])
    interrupted = make_project(tmp_path / "interrupted", sources=[{"path": str(inbox)}])
    reference.cli("run", env=CLOCK)
    # The same first run's result, copied: both stores start equal.
    interrupted.database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(reference.database) as source, sqlite3.connect(interrupted.database) as copy:
        source.backup(copy)
    shutil.copytree(reference.feeds, interrupted.feeds)
    changed = _changes(inbox)
    gone = [str(path) for path in changed["deleted"] + changed["moved"]]

    started = time.monotonic()
    result = reference.cli("run", "--json", env=CLOCK)
    took = time.monotonic() - started
    report = json.loads(result.stdout)
    assert report["files"]["deleted"] == 10 and report["files"]["new"] == 5

    in_list = ",".join(f"'{path}'" for path in gone)
    if moment == "files-forgotten":
        _kill_when(
            interrupted,
            lambda: (
                _rows(interrupted.database, f"select count(*) from source_file where path in ({in_list})") == [(0,)]
            ),
        )
    elif moment == "first-batch-stored":
        _kill_when(
            interrupted,
            lambda: (
                _rows(interrupted.database, "select count(*) from article where url like 'https://moved.example/%'")
                == [(5,)]
            ),
        )
    else:
        rng = random.Random(7)
        for _ in range(4):
            process = popen_run(interrupted, CLOCK)
            time.sleep(rng.uniform(0.2, max(0.4, took * 0.8)))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    # The killed run left the deleted files' rows gone; the next run still takes their articles out.
    final = json.loads(interrupted.cli("run", "--json", env=CLOCK).stdout)
    assert final["status"] == "ok"
    assert feed_bytes(interrupted.feeds) == feed_bytes(reference.feeds)
    assert store_snapshot(interrupted.database) == store_snapshot(reference.database)
    # 5 deleted files and 5 files now carrying another webUrl: 10 articles out of every feed.
    removed = _rows(reference.database, "select web_url from article where removed = 1")
    assert len(removed) == 10
    all_rss = (interrupted.feeds / "all.rss").read_text()
    assert not [url for (url,) in removed if f"<link>{url}</link>" in all_rss]
    assert _rows(interrupted.database, "select count(*) from orphan_candidate") == [(0,)]


# --------------------------------------------------------------------------- 2, 3. poison files and names


POISON = {
    "pairs.txt": "---\ntitle: pairs\nwebUrl: https://e.example/pairs\nx: !!pairs [ {k: "
    + "[" * 300
    + "]" * 300
    + "} ]\n---\n",
    "omap.txt": "---\ntitle: omap\nwebUrl: https://e.example/omap\nx: !!omap [ {k: "
    + "[" * 300
    + "]" * 300
    + "} ]\n---\n",
    "set.txt": "---\ntitle: set\nwebUrl: https://e.example/set\nx: !!set {b, a, c}\ny: !!binary aGVsbG8=\n---\n",
}


def test_deep_pairs_omap_and_sets_in_unknown_fields_never_fail_a_run(project: Project):
    for name, text in POISON.items():
        project.write(name, text)
    project.article("plain.txt", title="Plain", web_url="https://e.example/plain")
    check = project.cli("check", *(str(project.inbox / name) for name in POISON), check=False)
    assert check.returncode == 0, check.stdout
    report = project.run()
    assert report["status"] == "ok"
    assert report["articles"]["total"] == 4 and report["files"]["quarantined"] == 0
    again = project.run()
    assert again["files"]["unchanged"] == 4 and again["feeds"]["written"] == 0
    with sqlite3.connect(project.database) as conn:
        extra = dict(
            conn.execute("select a.url, c.extra_json from article a join article_content c on c.article_id = a.id")
        )
    assert json.loads(extra["https://e.example/set"]) == {"x": ["a", "b", "c"], "y": "b'hello'"}


def test_any_error_turning_one_file_into_rows_quarantines_that_file_alone(project: Project):
    from worker import model
    from worker.ingest.parsers import read_article

    project.write("one.txt", POISON["pairs.txt"])
    original = model.Ingested.of_article

    def failing(*args, **kwargs):  # whatever a future field might raise while being encoded
        raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")

    model.Ingested.of_article = failing  # type: ignore[method-assign]
    try:
        result = read_article(str(project.inbox / "one.txt"), 10_000, None)
    finally:
        model.Ingested.of_article = original  # type: ignore[method-assign]
    assert result.article is None
    assert result.error.startswith("cannot be stored: RecursionError")


def test_a_file_name_that_is_not_utf8_is_quarantined_and_the_rest_goes_on(project: Project):
    project.article("good.txt", title="Good", web_url="https://e.example/good")
    bad = os.fsencode(project.inbox) + b"/bad\xffname.txt"
    with open(bad, "wb") as handle:
        handle.write(article_text(title="Bad", web_url="https://e.example/bad").encode())
    report = project.run()
    assert report["status"] == "ok"
    assert report["articles"]["total"] == 1 and report["files"]["quarantined"] == 1
    (error,) = report["errors"]
    assert error["path"].endswith("bad\\xffname.txt") and "not UTF-8" in error["message"]
    status = project.cli("status")
    assert "bad\\xffname.txt" in status.stdout
    again = project.run()
    assert again["files"] == {"seen": 2, "new": 0, "changed": 0, "unchanged": 2, "deleted": 0, "quarantined": 1}
    os.rename(bad, project.inbox / "renamed.txt")
    renamed = project.run()
    assert renamed["files"]["quarantined"] == 0 and renamed["articles"]["total"] == 2


# --------------------------------------------------------------------------- 4, 5, 14. text is text


def _all_feed_text(project: Project) -> str:
    return "\n".join(path.read_text() for path in sorted(project.feeds.rglob("*")) if path.is_file())


def test_a_topic_name_without_visible_text_is_dropped_never_shown_raw(project: Project):
    project.article("a.txt", topics=["<img src=x onerror=alert(2)>", "<b></b>", "\u202e", "AI"])
    check = project.cli("check", str(project.inbox / "a.txt"))
    assert "topics[0]: dropped, no visible text" in check.stdout
    report = project.run()
    assert report["status"] == "ok" and report["articles"]["published"] == 1
    assert sorted(p.name for p in (project.feeds / "topics").iterdir()) == ["ai.atom", "ai.json", "ai.rss"]
    text = _all_feed_text(project)
    assert "onerror" not in text and "<img" not in text and "&lt;img" not in text


def test_topic_labels_never_carry_angle_brackets():
    from worker.publish.feeds import _topic_name

    assert _topic_name("<img src=x onerror=alert(2)>", "topic-1a2b3c4d") == "topic-1a2b3c4d"
    assert _topic_name("&lt;img src=x onerror=alert(2)&gt;", "s") == "img src=x onerror=alert(2)"
    assert _topic_name("C++ & &lt;Rust&gt;", "s") == "C++ & Rust"


def _escaped(text: str, rounds: int) -> str:
    import html

    for _ in range(rounds):
        text = html.escape(text)
    return text


PAYLOAD = "<img src=x onerror=alert(1)><script>alert(2)</script><svg/onload=alert(3)>"


@pytest.mark.parametrize("rounds", [0, 1, 2, 7, 8, 9, 16, 17, 40])
def test_escaping_a_payload_any_number_of_times_never_makes_it_live(project: Project, rounds: int):
    payload = _escaped(PAYLOAD, rounds)
    project.article(
        "a.txt",
        title=f"T {payload}",
        excerpt=f"E {payload}",
        topics=[f"X {payload}", "AI"],
        provider={"name": payload, "domain": "e.example"},
        related=[{"title": payload, "webUrl": "https://r.example/1"}],
    )
    assert project.run()["status"] == "ok"
    assert_no_live_markup(project.feeds)


def assert_no_live_markup(feeds: Path) -> None:
    """Titles, summaries and categories, read as the HTML readers take them for, hold no element;
    entry content holds no script and no event handler. (An Atom link's title attribute is
    text by RFC 4287, the characters of the related item's title.)"""
    atom = "{http://www.w3.org/2005/Atom}"
    for path in sorted(feeds.rglob("*.rss")) + sorted(feeds.rglob("*.atom")):
        root = etree.fromstring(path.read_bytes())
        texts = []
        for element in root.iter():
            tag = element.tag if isinstance(element.tag, str) else ""
            name = tag.rsplit("}", 1)[-1]
            if name in ("title", "description", "summary", "category") and element.text:
                texts.append(element.text)
            if name == "category":
                texts += [element.get("term") or "", element.get("label") or ""]
            if name in ("encoded", "content") and element.text:
                fragment = lxml.html.fragment_fromstring(element.text, create_parent="div")
                for node in fragment.iter():
                    assert node.tag not in ("script", "svg", "iframe"), (path.name, node.tag)
                    assert not any(a.lower().startswith("on") for a in node.attrib), (path.name, node.attrib)
            if name in ("name", "creator") and element.text:  # Atom author, RSS dc:creator
                texts.append(element.text)
        for text in texts:
            fragment = lxml.html.fragment_fromstring(f"<div>{text}</div>")
            assert [node.tag for node in fragment.iter()] == ["div"], (path.name, text[:200])
        assert f"{atom}feed" == root.tag or root.tag == "rss"


def test_bidi_overrides_never_reach_a_feed(project: Project):
    project.article(
        "a.txt",
        title="Safe \u202egnp.exe",
        excerpt="x\u2066y\u2069",
        topics=["A\u202eI"],
        provider={"name": "Evil\u202eCorp", "domain": "e.example"},
    )
    assert project.run()["status"] == "ok"
    text = _all_feed_text(project)
    for control in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert control not in text
    assert "Safe gnp.exe" in text


def test_a_newline_in_a_file_name_cannot_forge_status_lines(project: Project):
    project.write("x\nquarantined: 0\n  forged.txt", "---\ntitle: [broken\n---\n")
    project.write("esc\x1b[2Jname.txt", "---\ntitle: [broken\n---\n")
    report = project.run()
    assert report["files"]["quarantined"] == 2
    lines = project.cli("status").stdout.splitlines()
    assert "quarantined: 2" in lines and "quarantined: 0" not in lines
    assert not any(line.startswith("  forged.txt") for line in lines)
    assert all("\x1b" not in line for line in lines)
    assert any("x\\nquarantined: 0\\n  forged.txt" in line for line in lines)


# --------------------------------------------------------------------------- 7. files swapped under the reader


def test_a_fifo_swapped_in_after_the_scan_is_quarantined_without_hanging(project: Project, tmp_path: Path):
    from worker import pipeline
    from worker.config import load_config

    for n in range(3):
        project.article(f"{n}.txt", title=f"T{n}", web_url=f"https://e.example/{n}")
    victim = project.inbox / "1.txt"
    outside = tmp_path / "outside.txt"
    outside.write_text(article_text(title="Secret from elsewhere", web_url="https://e.example/secret"))
    scan = pipeline._scan

    def scan_then_swap(config):  # the race: the scan saw regular files, then they were replaced
        found = scan(config)
        victim.unlink()
        os.mkfifo(victim)
        (project.inbox / "2.txt").unlink()
        (project.inbox / "2.txt").symlink_to(outside)
        return found

    pipeline._scan = scan_then_swap
    done: list = []
    try:
        config = load_config(project.config, environ={})
        worker = threading.Thread(target=lambda: done.append(pipeline.run_cycle(config)), daemon=True)
        worker.start()
        worker.join(timeout=60)
    finally:
        pipeline._scan = scan
    assert done, "the run hung on the FIFO"
    report = done[0]
    assert report.status == "ok"
    errors = {Path(e["path"]).name: e["message"] for e in report.errors}
    assert "named pipe" in errors["1.txt"]
    assert "outside the source folder" in errors["2.txt"]
    assert "Secret from elsewhere" not in (project.feeds / "all.rss").read_text()


def test_a_link_inside_the_folder_is_still_read(project: Project):
    project.article("real/a.txt", title="Linked", web_url="https://e.example/linked")
    (project.inbox / "link.txt").symlink_to(project.inbox / "real" / "a.txt")
    report = project.run()
    assert report["files"]["quarantined"] == 0 and report["articles"]["total"] == 1


def test_check_refuses_fifos_devices_and_files_over_max_bytes(project: Project, tmp_path: Path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    big = tmp_path / "big.txt"
    big.write_text(article_text(title="Big", web_url="https://e.example/big", body="x" * 5000))
    config = make_project(tmp_path / "small", sources=[{"path": "../inbox", "max_bytes": 1000}]).config
    started = time.monotonic()
    result = run_cli("check", str(fifo), "/dev/zero", str(big), "--config", str(config), check=False, timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{fifo}: cannot be read: not a regular file (a named pipe)" in lines
    assert "/dev/zero: cannot be read: not a regular file (a device)" in lines
    assert f"{big}: cannot be read: larger than max_bytes (1000 bytes)" in lines


# --------------------------------------------------------------------------- 9. files feedworker never wrote


def _run(project: Project) -> dict:
    """A run whose feeds folder holds files not ours (tests.feedcheck would check them too)."""
    return json.loads(project.cli("run", "--json").stdout)


def test_files_feedworker_did_not_write_are_never_removed(project: Project):
    topics = project.feeds / "topics"
    topics.mkdir(parents=True)
    (topics / "hand-made.rss").write_text("<rss/>")
    (topics / "notes.atom").write_text("<feed/>")
    project.article("a.txt", topics=["Gone"], web_url="https://e.example/a")
    project.article("b.txt", topics=["Kept"], web_url="https://e.example/b")
    _run(project)
    assert (topics / "gone.rss").exists()
    (project.inbox / "a.txt").unlink()
    report = _run(project)
    assert report["feeds"]["removed"] == 3  # its own feeds of a topic with no article left
    assert sorted(p.name for p in topics.iterdir()) == [
        "hand-made.rss",
        "kept.atom",
        "kept.json",
        "kept.rss",
        "notes.atom",
    ]


# --------------------------------------------------------------------------- 15. runs killed with SIGKILL


@pytest.mark.slow
def test_a_killed_run_is_shown_interrupted_then_recorded_so(tmp_path: Path):
    inbox = tmp_path / "inbox"
    corpus(inbox, 600)
    project = make_project(tmp_path / "p", sources=[{"path": str(inbox)}])
    _kill_when(
        project,
        lambda: project.database.exists() and _rows(project.database, "select status from run") == [("running",)],
    )
    (running,) = _rows(project.database, "select id, status from run")
    assert running[1] == "running"
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["last_run"]["status"] == "interrupted" and status["last_run"]["run_id"] == running[0]
    assert "last run: interrupted" in project.cli("status").stdout
    report = json.loads(project.cli("run", "--json").stdout)
    assert report["status"] == "ok"
    rows = _rows(project.database, "select id, status, report_json from run order by id")
    assert [(row[0], row[1]) for row in rows] == [(running[0], "interrupted"), (report["run_id"], "ok")]
    assert json.loads(rows[0][2])["status"] == "interrupted"
    assert json.loads(project.cli("status", "--json").stdout)["last_run"]["status"] == "ok"


# --------------------------------------------------------------------------- 5. the property


@pytest.mark.slow
def test_no_string_escaped_any_number_of_times_comes_out_live():
    """For any text and any number of escape rounds, titles, summaries and categories hold no
    element and entry content no script or event handler, in every feed."""
    import yaml
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.test_properties import FAST, NASTY, run_in_process

    text = st.lists(st.sampled_from(NASTY + [PAYLOAD]) | st.text(max_size=8), max_size=6).map("".join)

    @settings(FAST, max_examples=25)
    @given(text, st.integers(0, 40), st.integers(0, 40))
    def check(raw: str, rounds: int, other: int) -> None:
        escaped, twice = _escaped(raw, rounds), _escaped(raw, other)
        front = {
            "title": f"T{escaped}",
            "webUrl": "https://e.example/a",
            "excerpt": twice,
            "topics": [f"X{escaped}", twice, "AI"],
            "related": [{"title": escaped, "webUrl": "https://r.example/1"}],
        }
        data = ("---\n" + yaml.safe_dump(front, allow_unicode=True) + "---\n" + twice).encode("utf-8", "surrogatepass")
        run_in_process({"a.txt": data}, lambda outcome: assert_no_live_markup(outcome.feeds))

    check()
