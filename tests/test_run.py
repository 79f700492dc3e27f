"""`feedworker run` end to end: real files, a real SQLite file (and, for the @both_dialects() tests,
a new PostgreSQL database too), the CLI in a subprocess."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from lxml import etree

from tests.conftest import ROOT, SAMPLE, Project, article_text, both_dialects, make_project
from tests.feedcheck import ATOM, CONTENT, assert_valid_atom, assert_valid_rss
from worker.store.version import SCHEMA_VERSION

RSS_ITEMS = ".//item"


def rss_items(project: Project, name: str) -> list[etree._Element]:
    return etree.fromstring(project.feed(name)).findall(RSS_ITEMS)


def titles(project: Project, name: str) -> list[str]:
    return [item.findtext("title") for item in rss_items(project, name)]


def guids(project: Project, name: str) -> dict[str, str]:
    return {item.findtext("link"): item.findtext("guid") for item in rss_items(project, name)}


def db(project: Project) -> sqlite3.Connection:
    """The SQLite file itself (the SQLite-only tests; the others read with project.query)."""
    return sqlite3.connect(project.database)


@both_dialects()
def test_cold_run_builds_every_feed_and_the_report(project: Project):
    project.article(
        "one.txt",
        title="One",
        web_url="https://a.example/1",
        topics=["AI", "Space"],
        publishedDateTime="2021-01-01T10:00:00Z",
    )
    project.article(
        "sub/dir/two.md",
        title="Two",
        web_url="https://a.example/2",
        topics=["ai"],
        publishedDateTime="2021-01-02T10:00:00Z",
    )
    project.article("draft.txt", title="Draft", web_url="https://a.example/3", topics=["AI"], published=False)
    project.write("notes.yaml", "not an article: wrong extension")
    report = project.run()
    assert report["status"] == "ok"
    assert report["files"] == {"seen": 3, "new": 3, "changed": 0, "unchanged": 0, "deleted": 0, "quarantined": 0}
    assert report["articles"] == {"total": 3, "published": 2}
    assert report["errors"] == []
    assert isinstance(report["duration_s"], float)
    files = set(project.feed_files())
    assert files == {
        "all.rss",
        "all.atom",
        "all.json",
        "index.opml",
        "topics/ai.rss",
        "topics/ai.atom",
        "topics/ai.json",
        "topics/space.rss",
        "topics/space.atom",
        "topics/space.json",
    }
    assert report["feeds"]["written"] == len(files)
    assert titles(project, "topics/ai.rss") == ["Two", "One"]  # newest first; the draft in no feed
    assert titles(project, "all.rss") == ["Two", "One"]
    opml = etree.fromstring(project.feed("index.opml"))
    urls = [outline.get("xmlUrl") for outline in opml.iter("outline")]
    assert urls == [project.base_url + name for name in ("topics/ai.atom", "topics/space.atom")]  # each topic once


@both_dialects()
def test_a_no_change_rerun_rewrites_nothing(project: Project):
    project.write("sample.txt", SAMPLE.read_text().replace("published: false", "published: true"))
    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["Computer Vision"])
    project.run()
    before = project.feed_files()
    time.sleep(0.05)
    report = project.run()
    assert report["files"]["unchanged"] == 2 and report["files"]["changed"] == 0
    assert report["feeds"]["written"] == 0
    assert project.feed_files() == before  # same bytes, same mtimes


@both_dialects()
def test_a_touched_but_identical_file_is_not_parsed_again(project: Project):
    path = project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    before = project.feed_files()
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    report = project.run()
    assert report["files"]["changed"] == 0 and report["files"]["unchanged"] == 1
    assert project.feed_files() == before
    [(mtime,)] = project.query("select mtime_ns from source_file")
    assert mtime == path.stat().st_mtime_ns  # the new stat is recorded: next time no read at all


@both_dialects()
def test_an_edit_updates_the_entry_in_place_with_the_same_id(project: Project):
    path = project.article("a.txt", title="Before", web_url="https://a.example/a?utm_source=x")
    project.run()
    old_guid = guids(project, "all.rss")
    path.write_text(article_text(title="After", web_url="https://a.example/a", excerpt="New text"))
    report = project.run()
    assert report["files"]["changed"] == 1
    assert titles(project, "all.rss") == ["After"]
    assert list(guids(project, "all.rss").values()) == list(old_guid.values())
    atom = etree.fromstring(project.feed("all.atom"))
    assert atom.find(f"{ATOM}entry/{ATOM}summary").text == "New text"
    # renamed and moved: still the same entry
    path.rename(project.inbox / "moved.txt")
    project.run()
    assert list(guids(project, "all.rss").values()) == list(old_guid.values())
    assert project.query("select count(*) from article") == [(1,)]


@both_dialects()
def test_a_deleted_file_leaves_the_feeds_but_stays_in_the_store(project: Project):
    project.article("a.txt", title="Keep", web_url="https://a.example/a", topics=["AI"])
    gone = project.article("b.txt", title="Gone", web_url="https://a.example/b", topics=["AI", "Space"])
    project.run()
    gone.unlink()
    report = project.run()
    assert report["files"]["deleted"] == 1
    assert report["articles"] == {"total": 1, "published": 1}
    assert titles(project, "topics/ai.rss") == ["Keep"]
    assert not (project.feeds / "topics" / "space.rss").exists()  # no published article left
    assert "Space" not in project.feed("index.opml").decode()
    assert project.query("select removed from article where title = 'Gone'") == [(True,)]


@both_dialects()
def test_two_files_with_one_web_url_are_one_article(project: Project):
    first = project.article("a.txt", title="First copy", web_url="https://a.example/same")
    second = project.article("b.txt", title="Second copy", web_url="https://A.EXAMPLE:443/same#top")
    os.utime(first, ns=(1_600_000_000_000_000_000,) * 2)
    os.utime(second, ns=(1_700_000_000_000_000_000,) * 2)
    report = project.run()
    assert report["articles"]["total"] == 1
    assert titles(project, "all.rss") == ["Second copy"]  # the newest edit wins
    second.unlink()
    report = project.run()
    assert report["articles"]["total"] == 1
    assert titles(project, "all.rss") == ["First copy"]  # still carried by the other file


@both_dialects()
def test_bad_files_are_quarantined_and_retried_when_fixed(project: Project):
    project.article("good.txt", title="Good", web_url="https://a.example/good")
    bad = project.write("bad.txt", "---\ntitle: Broken\nwebUrl: not a url\n---\n")
    report = project.run()  # exit 0 despite the bad file
    assert report["status"] == "ok"
    assert report["files"]["quarantined"] == 1
    assert report["errors"] == [
        {"path": str(bad), "message": "webUrl: must be an absolute http or https URL, not 'not a url' (line 3)"}
    ]
    assert bad.read_text() == "---\ntitle: Broken\nwebUrl: not a url\n---\n"  # never modified
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["quarantined"] == report["errors"]
    # unchanged: not tried again, still quarantined
    assert project.run()["files"]["quarantined"] == 1
    bad.write_text(article_text(title="Fixed", web_url="https://a.example/fixed"))
    report = project.run()
    assert report["files"]["quarantined"] == 0 and report["errors"] == []
    assert sorted(titles(project, "all.rss")) == ["Fixed", "Good"]


def test_a_hostile_zoo_never_stops_the_run(project: Project):
    project.article("good.txt", title="Good", web_url="https://a.example/good")
    bomb = ["---", 'a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for n in range(1, 12):
        bomb.append(f"{chr(97 + n)}: &{chr(97 + n)} [{', '.join(['*' + chr(96 + n)] * 10)}]")
    bomb += ["title: Bomb", "webUrl: https://a.example/bomb", "topics: *l", "---", ""]
    zoo = {
        "bad-yaml.txt": b"---\ntitle: [oops\n---\n",
        "no-fence.txt": b"---\ntitle: T\nwebUrl: https://a.example/nf\n",
        "binary.txt": bytes(range(256)) * 4,
        "latin1.txt": "---\ntitle: Caf\u00e9\nwebUrl: https://a.example/l\n---\n".encode("latin-1"),
        "empty.txt": b"",
        "python-tag.txt": b"---\ntitle: !!python/object/apply:os.system ['touch /tmp/pwned']\nwebUrl: https://a.example/p\n---\n",
        "bomb.txt": "\n".join(bomb).encode(),
        "no-title.md": b"---\nwebUrl: https://a.example/nt\n---\nbody\n",
    }
    for name, data in zoo.items():
        project.write(name, data)
    project.write("huge.txt", article_text(title="Huge", web_url="https://a.example/h", body="x" * 3000))
    project.config.write_text(
        project.config.read_text().replace("- path: ../inbox", "- path: ../inbox\n  max_bytes: 2000")
    )
    started = time.monotonic()
    report = project.run()
    assert time.monotonic() - started < 30
    assert report["status"] == "ok"
    assert report["articles"]["total"] == 1
    messages = {Path(error["path"]).name: error["message"] for error in report["errors"]}
    assert set(messages) == set(zoo) | {"huge.txt"}
    assert "larger than max_bytes" in messages["huge.txt"]
    assert "alias" in messages["bomb.txt"]
    assert "not UTF-8" in messages["latin1.txt"] and "line 2" in messages["latin1.txt"]
    assert "tag" in messages["python-tag.txt"]
    assert "title" in messages["no-title.md"]
    assert not Path("/tmp/pwned").exists()


# What the parser accepts, the store keeps on both dialects: one file never stops every run
# (each of these failed every run on PostgreSQL, until f56330b).


@both_dialects()
def test_a_quality_or_heat_the_parser_accepts_does_not_stop_the_run(project: Project):
    project.article("wide.txt", title="Wide", web_url="https://a.example/wide", quality=2**62 - 1, heat=-(2**62) + 1)
    project.article("plain.txt", title="Plain", web_url="https://a.example/plain")
    report = project.run(check=False)
    assert report["status"] == "ok", report
    assert report["articles"] == {"total": 2, "published": 2}


@both_dialects()
def test_a_nul_escaped_in_a_text_field_does_not_stop_the_run(project: Project):
    project.write("nul.txt", '---\ntitle: "Before\\0after"\nwebUrl: https://a.example/nul\n---\n')
    project.article("plain.txt", title="Plain", web_url="https://a.example/plain")
    report = project.run(check=False)
    assert report["status"] == "ok", report
    assert "Plain" in titles(project, "all.rss")


@both_dialects()
def test_a_file_past_2_gib_is_quarantined_without_stopping_the_run(project: Project):
    with open(project.inbox / "huge.txt", "wb") as huge:
        huge.truncate(3 * 2**30)  # sparse: no disk space taken
    project.article("plain.txt", title="Plain", web_url="https://a.example/plain")
    report = project.run(check=False)
    assert report["status"] == "ok", report
    assert report["files"]["quarantined"] == 1 and "larger than max_bytes" in report["errors"][0]["message"]
    assert titles(project, "all.rss") == ["Plain"]


def test_html_and_control_characters_render_safe_valid_feeds(project: Project):
    project.article(
        "x.txt",
        title="<b>Bold</b> move\u0007 <script>alert(1)</script>",
        web_url="https://news.example.com/2021/story.html",
        excerpt="Plain <i>excerpt</i>\u000b",
        topics=["Security"],
        provider={"name": "Example <News>", "domain": "example.com"},
        images=[{"url": "https://img.example.com/lead.jpg", "width": 800, "height": 600}],
        related=[
            {
                "title": "Other take",
                "webUrl": "https://other.example/take?utm_source=x",
                "provider": {"name": "Other", "domain": "other.example"},
            },
            {"webUrl": "https://untitled.example/page"},
        ],
        body='Read <a href="/more" onclick="steal()">more</a> and ![pic](img/p.png)\n\n'
        "<script>alert(2)</script> [js](javascript:alert(3))\n",
    )
    project.run()  # every feed is validated here, HTML safety included
    item = rss_items(project, "topics/security.rss")[0]
    assert item.findtext("title") == "Bold move"  # markup reduced to text, script content dropped
    content = item.findtext(f"{CONTENT}encoded")
    assert 'href="https://news.example.com/more"' in content
    assert 'src="https://news.example.com/2021/img/p.png"' in content
    assert "onclick" not in content and "<script" not in content and 'href="javascript' not in content
    assert "Related coverage" in content and 'href="https://other.example/take"' in content
    atom = etree.fromstring(project.feed("topics/security.atom"))
    related = [
        (link.get("href"), link.get("title")) for link in atom.iter(f"{ATOM}link") if link.get("rel") == "related"
    ]
    assert related == [
        ("https://other.example/take", "Other take"),
        ("https://untitled.example/page", "untitled.example"),
    ]
    media = atom.find(f"{ATOM}entry/{{http://search.yahoo.com/mrss/}}content")
    assert media.get("url") == "https://img.example.com/lead.jpg" and media.get("width") == "800"
    assert [c.get("term") for c in atom.iter(f"{ATOM}category")] == ["Security"]
    assert atom.findtext(f"{ATOM}entry/{ATOM}author/{ATOM}name") == "Example"  # text is text: <News> is a tag


@both_dialects()
def test_topics_group_by_normalised_name_and_look_alikes_stay_apart(project: Project):
    project.article("1.txt", web_url="https://a.example/1", topics=["AI"])
    project.article("2.txt", web_url="https://a.example/2", topics=[" ai "])
    project.article("3.txt", web_url="https://a.example/3", topics=["Ai", "C"])
    project.article("4.txt", web_url="https://a.example/4", topics=["C++"])
    project.article("5.txt", web_url="https://a.example/5", topics=["C#", "Cafe\u0301"])  # decomposed é
    project.article("6.txt", web_url="https://a.example/6", topics=["CAF\u00c9", "../../etc/passwd", ".", ".."])
    project.run()
    names = sorted(p.name for p in (project.feeds / "topics").iterdir())
    slugs = sorted({name.rsplit(".", 1)[0] for name in names})
    assert len(slugs) == 8  # ai, c, c++, c#, café, ../../etc/passwd, ., ..
    assert {"ai", "c", "c-plus-plus", "c-sharp", "cafe", "etc-passwd"} <= set(slugs)
    assert len(rss_items(project, "topics/ai.rss")) == 3
    assert len(rss_items(project, "topics/cafe.rss")) == 2
    top = sorted(p.name for p in project.feeds.iterdir())
    assert top == ["all.atom", "all.json", "all.rss", "index.html", "index.opml", "topics"]
    assert not (project.root / "etc").exists()


@both_dialects()
def test_a_topic_slug_once_given_never_changes(project: Project):
    project.article("1.txt", web_url="https://a.example/1", topics=["Machine Learning"])
    project.run()
    (project.inbox / "1.txt").unlink()
    project.run()
    project.article("2.txt", web_url="https://a.example/2", topics=["MACHINE  learning"])
    project.article("3.txt", web_url="https://a.example/3", topics=["Machine-Learning"])
    project.run()
    rows = dict(project.query("select key, slug from topic"))
    assert rows["machine learning"] == "machine-learning"
    assert rows["machine-learning"].startswith("machine-learning-")  # a look-alike gets its own


@both_dialects()
def test_a_draft_is_stored_but_in_no_feed_and_publishing_it_adds_it(project: Project):
    path = project.article("d.txt", title="Draft", web_url="https://a.example/d", topics=["AI"], published=False)
    project.article("p.txt", title="Public", web_url="https://a.example/p", topics=["Space"])
    report = project.run()
    assert report["articles"] == {"total": 2, "published": 1}
    assert not (project.feeds / "topics" / "ai.rss").exists()
    path.write_text(article_text(title="Draft", web_url="https://a.example/d", topics=["AI"], published=True))
    project.run()
    assert titles(project, "topics/ai.rss") == ["Draft"]


@both_dialects()
def test_max_entries_caps_every_feed(tmp_path: Path, new_database):
    project = make_project(tmp_path, database=new_database(), feeds={"max_entries": 3})
    for n in range(6):
        project.article(
            f"{n}.txt", title=f"N{n}", web_url=f"https://a.example/{n}", publishedDateTime=f"2021-01-0{n + 1}T00:00:00Z"
        )
    project.run()
    assert titles(project, "all.rss") == ["N5", "N4", "N3"]
    assert len(etree.fromstring(project.feed("topics/ai.atom")).findall(f"{ATOM}entry")) == 3


def test_the_source_folder_is_never_written(project: Project):
    project.write("sample.txt", SAMPLE.read_bytes())
    project.write("bad.txt", "---\nnope\n---\n")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in project.inbox.rglob("*")}
    project.run()
    project.run()
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in project.inbox.rglob("*")}
    assert after == before


def test_symlinks_out_of_the_source_folder_are_not_followed(project: Project, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(article_text(title="Secret", web_url="https://a.example/secret"))
    (project.inbox / "link.txt").symlink_to(outside / "secret.txt")
    (project.inbox / "linkdir").symlink_to(outside, target_is_directory=True)
    project.article("in.txt", title="Inside", web_url="https://a.example/in")
    (project.inbox / "alias.txt").symlink_to(project.inbox / "in.txt")
    (project.inbox / "loop").symlink_to(project.inbox, target_is_directory=True)
    report = project.run()
    assert report["articles"]["total"] == 1
    assert titles(project, "all.rss") == ["Inside"]


def test_an_unreadable_source_folder_deletes_nothing(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    moved = project.root / "inbox-away"
    project.inbox.rename(moved)
    report = project.run(check=False)  # no source readable: the run fails, and changes nothing
    assert report["status"] == "failed"
    assert report["files"]["deleted"] == 0 and report["articles"]["total"] == 1
    assert "source folder cannot be read" in report["errors"][0]["message"]
    assert titles(project, "all.rss") == ["A"]


# SQLite-only: "without storing" is seen as no database file (a PostgreSQL database exists beforehand).
def test_check_validates_files_without_storing(project: Project):
    good = project.article("good.txt", title="Good", web_url="https://a.example/g", related=[{"title": "no url"}])
    bad = project.write("bad.txt", "---\ntitle: T\nwebUrl: https://a.example/b\nquality: high\n---\n")
    result = project.cli("check", str(good), check=False)
    assert result.returncode == 0
    assert "warning: related[0]: dropped" in result.stdout
    result = project.cli("check", str(good), str(bad), str(project.inbox / "missing.txt"), check=False)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert f"{bad}: quality: must be an integer, not 'high' (line 4)" in lines
    assert any(line.startswith(f"{project.inbox / 'missing.txt'}: cannot be read") for line in lines)
    assert not project.database.exists()


@both_dialects()
def test_status_reports_counts_last_run_and_quarantine(project: Project):
    result = project.cli("status", "--json")
    assert json.loads(result.stdout)["last_run"] is None
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI", "Space"])
    project.write("b.txt", "garbage")
    report = project.run()
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["articles"]["total"] == 1 and status["articles"]["published"] == 1
    assert status["topics"] == 2
    assert [q["path"] for q in status["quarantined"]] == [str(project.inbox / "b.txt")]
    assert status["last_run"]["run_id"] == report["run_id"]
    text = project.cli("status").stdout
    assert "quarantined: 1" in text and "b.txt" in text


# SQLite-only: its last case is a folder where the SQLite file should be.
def test_fatal_errors_exit_non_zero_with_one_line(tmp_path: Path):
    project = make_project(tmp_path / "a", feeds={"max_entries": "many"})
    result = project.cli("run", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "feeds.max_entries" in result.stderr

    project = make_project(tmp_path / "b", surprise=True)
    result = project.cli("run", check=False)
    assert result.returncode != 0 and "surprise: unknown key" in result.stderr

    project = make_project(tmp_path / "c")
    project.article("a.txt")
    project.feeds.parent.mkdir(parents=True)
    project.feeds.write_text("a file where the feeds folder should be")
    result = project.cli("run", "--json", check=False)
    assert result.returncode != 0
    assert json.loads(result.stdout)["status"] == "failed"
    assert "Error:" in result.stderr.strip().splitlines()[-1]

    project = make_project(tmp_path / "d")
    project.database.mkdir(parents=True)  # a folder where the database file should be
    result = project.cli("run", check=False)
    assert result.returncode != 0 and "database" in result.stderr.strip().splitlines()[-1]


def test_environment_overrides_the_config_file(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.cli("run", env={"FEEDWORKER_FEEDS__TITLE": "Overridden", "FEEDWORKER_FEEDS__MAX_ENTRIES": "5"})
    assert etree.fromstring(project.feed("all.rss")).findtext("channel/title") == "Overridden"
    result = project.cli("run", check=False, env={"FEEDWORKER_ENRICH__NOPE": "1"})
    assert result.returncode != 0 and "enrich.nope: unknown key" in result.stderr


# SQLite-only: holds the flock beside the file (PostgreSQL's advisory lock: tests/test_postgres.py).
def test_a_run_waits_for_a_cycle_in_progress_and_says_so(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.database.parent.mkdir(parents=True, exist_ok=True)
    with open(str(project.database) + ".lock", "a+") as lock:  # closing it ends the other "cycle"
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--json", "--config", str(project.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        # Held until the run says it waits (however long the interpreter took to start), then 0.5 s more.
        said = ""
        while "another cycle is running" not in said:
            line = process.stderr.readline()
            assert line, f"the run ended without saying it waits: {said}"
            said += line
        time.sleep(0.5)
        assert process.poll() is None  # still waiting
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert json.loads(out)["waited_s"] >= 0.5


@both_dialects()
def test_feeds_missing_on_disk_are_written_again(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a")
    project.run()
    (project.feeds / "topics" / "ai.atom").unlink()
    (project.feeds / "all.rss").unlink()
    report = project.run()
    # On PostgreSQL the feeds are the store's documents (what replicas serve), and the report
    # counts those: they did not change; the folder, their copy, gets the two files back.
    assert report["feeds"]["written"] == (2 if project.dialect == "sqlite" else 0)
    assert_valid_rss(project.feed("all.rss"), project.base_url + "all.rss")
    assert_valid_atom(project.feed("topics/ai.atom"), project.base_url + "topics/ai.atom")


@both_dialects()
def test_new_feed_settings_render_every_feed_again(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI", "Space"])
    project.run()
    before = project.feed_files()
    assert project.run()["feeds"]["written"] == 0
    project.config.write_text(project.config.read_text().replace(project.base_url, "https://news.example.org/f/"))
    project.base_url = "https://news.example.org/f/"
    report = project.run()  # every feed is checked against the new base URL
    assert report["feeds"]["written"] == len(before)
    assert b"https://news.example.org/f/topics/ai.atom" in project.feed("topics/ai.atom")
    assert project.run()["feeds"]["written"] == 0


def test_topic_names_are_shown_as_plain_text(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI <b>bold</b>", "R&amp;D"])
    project.run()
    atom = etree.fromstring(project.feed("all.atom"))
    assert sorted(c.get("term") for c in atom.iter(f"{ATOM}category")) == ["AI bold", "R&D"]
    titles = sorted(
        etree.fromstring(project.feed(f"topics/{p.name}")).findtext(f"{ATOM}title")
        for p in (project.feeds / "topics").glob("*.atom")
    )
    assert titles == ["Test News: AI bold", "Test News: R&D"]


def version_1_store(root: Path) -> Project:
    """A project over the examples whose database is what feedworker 0.1 (schema 1) stored for them.

    SQLite-only, as the tests that use it: feedworker 0.1 stored only SQLite files."""
    project = make_project(root)
    shutil.copytree(ROOT / "examples" / "inbox", project.inbox, dirs_exist_ok=True)
    project.database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(project.database) as conn:
        conn.executescript(gzip.decompress((ROOT / "tests" / "data" / "store-v1.sql.gz").read_bytes()).decode())
        conn.execute("update source_file set path = replace(path, '/tmp/v1gen/inbox', ?)", (str(project.inbox),))
    conn.close()
    return project


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path):
    # tests/data/store-v1.sql.gz: what feedworker 0.1 (schema 1) stored for examples/inbox
    # at FEEDWORKER_CLOCK=2026-01-01T00:00:00Z, from /tmp/v1gen/inbox.
    clock = {"FEEDWORKER_CLOCK": "2026-01-01T00:00:00Z"}
    upgraded = version_1_store(tmp_path / "upgraded")
    report = json.loads(upgraded.cli("run", "--json", env=clock).stdout)
    assert report["files"]["changed"] == 0 and report["files"]["new"] == 0  # only the stats of the copies moved
    with db(upgraded) as conn:
        assert conn.execute("select value from meta where key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("select count(*) from orphan_candidate").fetchone() == (0,)
        assert {row[1] for row in conn.execute("pragma table_info(article)")}.isdisjoint({"body_html", "body"})

    fresh = make_project(tmp_path / "fresh")
    shutil.copytree(ROOT / "examples" / "inbox", fresh.inbox, dirs_exist_ok=True)
    fresh.cli("run", env=clock)
    # The upgraded store renders exactly the feeds a fresh store of the same files does.
    assert {name: data for name, (data, _) in upgraded.feed_files().items()} == {
        name: data for name, (data, _) in fresh.feed_files().items()
    }
    with db(upgraded) as old, db(fresh) as new:
        for query in (
            (
                "select url, body, extra_json, related_json from article join article_content on id = article_id "
                "order by url"
            ),
            (
                "select a.url, r.position, r.url, r.wants_page, r.shows_page from related_item r "
                "join article a on a.id = r.article_id order by 1, 2"
            ),
        ):
            assert old.execute(query).fetchall() == new.execute(query).fetchall()


def test_many_feeds_rendered_by_two_processes_equal_those_rendered_by_one(project: Project, tmp_path: Path):
    from datetime import UTC, datetime

    from worker.model import FeedSettings
    from worker.publish.feeds import PARALLEL_FROM, publish
    from worker.store.db import connect

    for n in range(PARALLEL_FROM + 4):
        project.article(
            f"a{n}.txt",
            title=f"A{n}",
            web_url=f"https://a.example/{n}",
            topics=[f"Topic {n}", "Shared"],
            publishedDateTime=f"2021-01-{n + 1:02d}T10:00:00Z",
        )
    project.cli("run", env={"FEEDWORKER_CLOCK": "2026-01-01T00:00:00Z"})  # more feeds than PARALLEL_FROM
    engine = connect(f"sqlite:///{project.database}")
    try:
        settings = FeedSettings(tmp_path / "serial", project.base_url, "Test News", 50)
        stats = publish(engine, settings, datetime(2026, 1, 1, tzinfo=UTC))  # no helper: one process
    finally:
        engine.dispose()
    assert stats.written == 3 * (PARALLEL_FROM + 4 + 2) + 1  # topics, the shared one, all; and the index
    serial = {
        path.relative_to(settings.dir).as_posix(): path.read_bytes()
        for path in settings.dir.rglob("*.*")
        if path.name != "index.html"  # the page, which feed_files leaves out
    }
    assert serial == {name: data for name, (data, _) in project.feed_files().items()}


def test_every_event_of_a_run_carries_its_run_id(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["AI"])
    project.write("bad.txt", "no front matter")
    result = project.cli("run", "--json")
    run_id = json.loads(result.stdout)["run_id"]
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    names = {event["event"] for event in events}
    assert {"feed.written", "file.quarantined", "run.finished"} <= names
    assert all(event.get("run_id") == run_id for event in events), events


def test_an_article_a_killed_run_of_an_older_version_left_published_goes_at_the_upgrade(tmp_path: Path):
    # Before schema 3, a run killed between forgetting a deleted file and removing its article
    # lost the deletion: the file row gone, the article published for good. The upgrade finds
    # such articles (no file carries them) and the next cycle removes them.
    upgraded = version_1_store(tmp_path / "upgraded")
    with sqlite3.connect(upgraded.database) as conn:
        lost, url = conn.execute(
            "select f.path, a.url from source_file f join article a on a.url = f.article_url "
            "where a.is_published = 1 order by f.path limit 1"
        ).fetchone()
        conn.execute("delete from source_file where path = ?", (lost,))
    conn.close()
    Path(lost).unlink()
    report = json.loads(upgraded.cli("run", "--json").stdout)
    assert report["status"] == "ok" and report["files"]["deleted"] == 0
    with db(upgraded) as conn:
        assert conn.execute("select removed from article where url = ?", (url,)).fetchone() == (1,)
        assert conn.execute("select count(*) from orphan_candidate").fetchone() == (0,)
        assert conn.execute("select count(*) from article where removed = 1").fetchone() == (1,)
