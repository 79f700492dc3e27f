"""Related items end to end: cross-links, symmetry and fetched metadata in the generated feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from lxml import etree

from tests.conftest import ROOT, Project, make_project
from tests.feedcheck import ATOM, CONTENT, assert_valid_feeds
from tests.localserver import LocalServer
from tests.nodns import fake_names
from worker.config import EnrichConfig
from worker.enrich.fetcher import FetchResult
from worker.enrich.stage import fetch_budget, next_page_record
from worker.model import PageMetadata

OG_PAGE = b"""<html><head><title>Plain title</title>
<meta property="og:title" content="Open Graph title"><meta property="og:site_name" content="Local Site">
<meta property="og:description" content="Described"><meta property="og:image" content="/lead.jpg">
</head><body>hi</body></html>"""
ETAG = '"v1"'


class PageServer(LocalServer):
    """Open Graph pages on 127.0.0.1, counting requests and keeping their headers."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, dict[str, str]]] = []
        super().__init__(_handler(self))


def _handler(server: PageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            with server.lock:
                server.counts[self.path] += 1
                server.headers.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            try:
                if self.path.startswith("/og"):
                    if self.headers.get("If-None-Match") == ETAG:
                        self.send_response(304)
                        self.send_header("ETag", ETAG)
                        self.end_headers()
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(OG_PAGE)))
                    self.send_header("ETag", ETAG)
                    self.end_headers()
                    self.wfile.write(OG_PAGE)
                elif self.path == "/never":
                    server.stop.wait(60)  # answers nothing until the test ends
                else:
                    self.send_error(404)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def pages() -> Iterator[PageServer]:
    with fake_names():  # http.server asks for the name of the address it binds: answered here
        server = PageServer()
    yield server
    server.close()


def atom_related(project: Project, feed: str, entry_title: str) -> list[tuple[str, str]]:
    root = etree.fromstring(project.feed(feed))
    for entry in root.iter(f"{ATOM}entry"):
        if entry.findtext(f"{ATOM}title") == entry_title:
            return [
                (link.get("href"), link.get("title"))
                for link in entry.iter(f"{ATOM}link")
                if link.get("rel") == "related"
            ]
    raise AssertionError(f"no entry {entry_title!r} in {feed}")


def atom_updated(project: Project, feed: str, entry_title: str) -> str:
    root = etree.fromstring(project.feed(feed))
    for entry in root.iter(f"{ATOM}entry"):
        if entry.findtext(f"{ATOM}title") == entry_title:
            return entry.findtext(f"{ATOM}updated")
    raise AssertionError(f"no entry {entry_title!r} in {feed}")


def rss_content(project: Project, feed: str, entry_title: str) -> str:
    root = etree.fromstring(project.feed(feed))
    for item in root.iter("item"):
        if item.findtext("title") == entry_title:
            return item.findtext(f"{CONTENT}encoded")
    raise AssertionError(f"no item {entry_title!r} in {feed}")


def set_enrich(project: Project, **values: object) -> None:
    config = yaml.safe_load(project.config.read_text())
    config["enrich"].update(values)
    project.config.write_text(yaml.safe_dump(config))


STORED = "https://news.example.com/2021/01/26/story/"  # WordPress style: its AMP twin is story/amp


def test_amp_cache_and_tracking_variants_link_to_the_stored_article(project: Project):
    project.article(
        "stored.txt",
        title="The stored story",
        web_url=STORED,
        topics=["AI"],
        provider={"name": "Example News", "domain": "example.com"},
    )
    project.article(
        "amp.txt",
        title="Via AMP cache",
        web_url="https://other.example/amp-view",
        topics=["AI"],
        related=[
            {
                "title": "A headline from an aggregator",
                "webUrl": "https://news-example-com.cdn.ampproject.org/c/s/news.example.com/2021/01/26/"
                "story/amp?amp_js_v=0.1&usqp=mq331AQ",
            }
        ],
    )
    project.article(
        "utm.txt",
        title="Via tracking link",
        web_url="https://third.example/utm-view",
        topics=["AI"],
        related=[{"webUrl": "https://NEWS.example.com:443/2021/01/26/story/?utm_source=x&fbclid=1#top"}],
    )
    project.run()
    for title in ("Via AMP cache", "Via tracking link"):
        assert atom_related(project, "topics/ai.atom", title) == [(STORED, "The stored story")]
        content = rss_content(project, "topics/ai.rss", title)
        assert f'<a href="{STORED}">The stored story</a> — Example News' in content
    # and the stored article shows both of them, once each
    assert sorted(atom_related(project, "all.atom", "The stored story")) == [
        ("https://other.example/amp-view", "Via AMP cache"),
        ("https://third.example/utm-view", "Via tracking link"),
    ]


def test_relatedness_is_symmetric(project: Project):
    project.article(
        "a.txt",
        title="Article A",
        web_url="https://a.example/a",
        topics=["AI"],
        related=[
            {"title": "B as A's file names it", "webUrl": "https://b.example/b?utm_medium=rss"},
            {"title": "Elsewhere", "webUrl": "https://elsewhere.example/x"},
        ],
    )
    project.article(
        "b.txt", title="Article B", web_url="https://b.example/b", topics=["Space"], provider={"name": "B News"}
    )
    project.run()
    assert atom_related(project, "topics/space.atom", "Article B") == [("https://a.example/a", "Article A")]
    assert '<a href="https://a.example/a">Article A</a>' in rss_content(project, "topics/space.rss", "Article B")
    assert atom_related(project, "topics/ai.atom", "Article A") == [
        ("https://b.example/b", "Article B"),
        ("https://elsewhere.example/x", "Elsewhere"),
    ]
    assert "— B News" in rss_content(project, "topics/ai.rss", "Article A")


def test_a_new_article_updates_the_entries_it_relates_to(project: Project):
    project.article("a.txt", title="Article A", web_url="https://a.example/a", topics=["Space"])
    project.article("b.txt", title="Article B", web_url="https://a.example/b", topics=["Sport"])
    project.run()
    before = project.feed_files()
    updated_before = atom_updated(project, "topics/space.atom", "Article A")
    time.sleep(0.05)

    c = project.article(
        "c.txt",
        title="Article C",
        web_url="https://c.example/c",
        topics=["AI"],
        publishedDateTime="2021-02-01T00:00:00Z",
        related=[{"webUrl": "https://a.example/a"}],
    )
    report = project.run()
    after = project.feed_files()
    assert after["topics/space.atom"] != before["topics/space.atom"]  # A's topic rendered again, with C
    assert atom_related(project, "topics/space.atom", "Article A") == [("https://c.example/c", "Article C")]
    assert "Article C" in rss_content(project, "topics/space.rss", "Article A")
    assert atom_updated(project, "topics/space.atom", "Article A") > updated_before  # readers see it changed
    assert after["topics/sport.rss"] == before["topics/sport.rss"]  # B is unrelated: untouched
    assert report["feeds"]["written"] == 10  # space, ai, all (rss + atom + json) and the index

    project.run()
    assert project.feed_files() == after  # nothing changed: nothing written

    c.unlink()
    project.run()
    assert atom_related(project, "topics/space.atom", "Article A") == []
    assert rss_content(project, "topics/space.rss", "Article A") is None  # no body, no related list: no content


def test_an_edit_dropping_a_related_item_takes_the_reverse_link_away(project: Project):
    project.article("a.txt", title="Article A", web_url="https://a.example/a", topics=["Space"])
    c = project.article(
        "c.txt",
        title="Article C",
        web_url="https://c.example/c",
        topics=["AI"],
        related=[{"webUrl": "https://a.example/a"}],
    )
    project.run()
    assert atom_related(project, "topics/space.atom", "Article A") == [("https://c.example/c", "Article C")]
    c.write_text(c.read_text().replace("https://a.example/a", "https://elsewhere.example/z"))
    project.run()
    assert atom_related(project, "topics/space.atom", "Article A") == []


def test_a_retitled_article_is_retitled_where_it_is_linked(project: Project):
    project.article(
        "a.txt",
        title="Article A",
        web_url="https://a.example/a",
        topics=["Space"],
        related=[{"webUrl": "https://b.example/b"}],
    )
    b = project.article("b.txt", title="Old B title", web_url="https://b.example/b", topics=["AI"])
    project.run()
    assert atom_related(project, "topics/space.atom", "Article A") == [("https://b.example/b", "Old B title")]
    b.write_text(b.read_text().replace("Old B title", "New B title"))
    project.run()
    assert atom_related(project, "topics/space.atom", "Article A") == [("https://b.example/b", "New B title")]


def test_fetched_metadata_titles_untitled_items_and_is_cached(tmp_path: Path, pages: PageServer):
    project = make_project(tmp_path, enrich={"fetch": True, "allow_private_networks": True})
    project.article(
        "a.txt",
        title="Article A",
        web_url="https://a.example/a",
        topics=["AI"],
        related=[{"webUrl": pages.url("/og")}, {"title": "Given title", "webUrl": pages.url("/og2")}],
    )
    report = project.run()
    assert report["enrich"] == {"fetched": 2, "not_modified": 0, "failed": 0, "refused": 0, "pending": 0}
    assert atom_related(project, "topics/ai.atom", "Article A") == [
        (pages.url("/og"), "Open Graph title"),
        (pages.url("/og2"), "Given title"),  # the file's own title wins over the page's
    ]
    assert "Open Graph title</a> — Local Site" in rss_content(project, "topics/ai.rss", "Article A")
    status = json.loads(project.cli("status", "--json").stdout)
    assert status["enrich"] == {"fetched": 2, "cached": 2, "failed": 0, "pending": 0}
    assert "enrich:   2 fetched, 2 cached, 0 failed, 0 pending" in project.cli("status").stdout

    before, files = pages.total, project.feed_files()
    report = project.run()
    assert pages.total == before  # cached: nothing fetched again
    assert report["enrich"]["fetched"] == 0 and report["enrich"]["not_modified"] == 0
    assert project.feed_files() == files

    set_enrich(project, ttl="1s")
    time.sleep(1.1)
    report = project.run()
    assert report["enrich"]["not_modified"] == 2 and report["enrich"]["fetched"] == 0
    revalidations = [headers for path, headers in pages.headers[-2:]]
    assert all(headers.get("if-none-match") == ETAG for headers in revalidations)
    assert atom_related(project, "topics/ai.atom", "Article A")[0] == (pages.url("/og"), "Open Graph title")
    assert project.feed_files() == files  # metadata kept: the feeds did not change


def test_loopback_pages_are_refused_by_default_and_never_requested(tmp_path: Path, pages: PageServer):
    project = make_project(tmp_path, enrich={"fetch": True})
    project.article("a.txt", title="Article A", web_url="https://a.example/a", related=[{"webUrl": pages.url("/og")}])
    report = project.run()
    assert pages.total == 0
    assert report["enrich"]["refused"] == 1 and report["enrich"]["fetched"] == 0
    assert atom_related(project, "topics/ai.atom", "Article A") == [(pages.url("/og"), "127.0.0.1")]
    report = project.run()
    assert report["enrich"]["refused"] == 0  # backed off: not tried again at once
    assert json.loads(project.cli("status", "--json").stdout)["enrich"]["failed"] == 1


def test_a_page_that_never_answers_stays_within_the_budget(tmp_path: Path, pages: PageServer):
    project = make_project(tmp_path, enrich={"fetch": True, "allow_private_networks": True, "max_seconds": "2s"})
    project.article(
        "a.txt",
        title="Article A",
        web_url="https://a.example/a",
        related=[{"webUrl": pages.url("/never")}, {"webUrl": pages.url("/og")}],
    )
    result = project.cli("run", "--json")
    report = json.loads(result.stdout)
    assert_valid_feeds(project.feeds, project.base_url)
    assert report["duration_s"] < 2 + 3
    assert report["enrich"]["failed"] == 1 and report["enrich"]["fetched"] == 1
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    fetched = {event["url"]: event for event in events if event["event"] == "enrich.fetched"}
    assert fetched[pages.url("/never")]["status"] == "timeout"
    assert fetched[pages.url("/og")]["status"] == "ok" and fetched[pages.url("/og")]["http_status"] == 200
    assert [event["failed"] for event in events if event["event"] == "enrich.finished"] == [1]
    assert atom_related(project, "topics/ai.atom", "Article A") == [
        (pages.url("/never"), "127.0.0.1"),
        (pages.url("/og"), "Open Graph title"),
    ]


def test_no_network_at_all_stays_within_the_budget(tmp_path: Path):
    """A name that does not exist, a resolver that never answers, an address nobody routes.

    The real command line, in a process of its own under the fake resolver of tests/nodns.py
    (no lookup leaves the machine): the hung lookup must not hold up the run nor its exit.
    """
    project = make_project(tmp_path, enrich={"fetch": True, "max_seconds": "2s"})
    related = ["http://nonexistent.invalid/page", "http://no-answer.invalid/page", "https://10.255.255.1/x"]
    project.article(
        "a.txt", title="Article A", web_url="https://a.example/a", related=[{"webUrl": url} for url in related]
    )
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.nodns",
            "--fail",
            "nonexistent.invalid",
            "--hang",
            "no-answer.invalid",
            "run",
            "--json",
            "--config",
            str(project.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env={key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")},
    )
    assert time.monotonic() - started < 2 + 8  # the whole process, interpreter start included
    assert result.returncode == 0, result.stderr  # 86: it looked up a name outside the machine
    report = json.loads(result.stdout)
    assert report["duration_s"] < 2 + 3
    assert (report["enrich"]["failed"], report["enrich"]["refused"]) == (2, 1)
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    fetched = {event["url"]: event for event in events if event["event"] == "enrich.fetched"}
    assert [fetched[url]["status"] for url in related] == ["error", "timeout", "refused"]
    assert fetched[related[0]]["error"].startswith("cannot resolve host")
    assert [title for _, title in atom_related(project, "topics/ai.atom", "Article A")] == [
        "nonexistent.invalid",
        "no-answer.invalid",
        "10.255.255.1",
    ]


def test_fetching_respects_max_fetches_and_leaves_the_rest_pending(tmp_path: Path, pages: PageServer):
    project = make_project(tmp_path, enrich={"fetch": True, "allow_private_networks": True, "max_fetches": 2})
    project.article(
        "old.txt",
        title="Old",
        web_url="https://a.example/old",
        publishedDateTime="2020-01-01T00:00:00Z",
        related=[{"webUrl": pages.url("/og-old")}],
    )
    project.article(
        "new.txt",
        title="New",
        web_url="https://a.example/new",
        publishedDateTime="2021-01-01T00:00:00Z",
        related=[{"webUrl": pages.url(f"/og-new-{n}")} for n in range(2)],
    )
    report = project.run()
    assert report["enrich"]["fetched"] == 2 and report["enrich"]["pending"] == 1
    assert set(pages.counts) == {"/og-new-0", "/og-new-1"}  # the newest articles' pages first
    report = project.run()
    assert report["enrich"]["fetched"] == 1 and report["enrich"]["pending"] == 0
    assert atom_related(project, "all.atom", "Old") == [(pages.url("/og-old"), "Open Graph title")]


# ------------------------------------------------------------------ cache and budget rules

NOW = datetime(2021, 1, 1, tzinfo=UTC)
URL = "https://x.example/page"


def test_a_page_is_kept_for_the_ttl_and_failures_back_off():
    config = EnrichConfig(ttl=86400, retry_after=3600)
    ok = next_page_record(None, FetchResult(URL, URL, "ok", 200, '"e"', None, PageMetadata(title="T")), NOW, config)
    assert (ok.status, ok.title, ok.etag, ok.failures) == ("ok", "T", '"e"', 0)
    assert ok.next_fetch_at == NOW + timedelta(days=1)

    later = NOW + timedelta(days=1)
    kept = next_page_record(ok, FetchResult(URL, URL, "not_modified", 304), later, config)
    assert (kept.status, kept.title, kept.etag, kept.fetched_at) == ("not_modified", "T", '"e"', later)

    record, delays = kept, []
    for _ in range(9):
        record = next_page_record(record, FetchResult(URL, URL, "timeout", error="slow"), later, config)
        delays.append((record.next_fetch_at - later) / timedelta(hours=1))
    assert delays == [1, 2, 4, 8, 16, 32, 64, 64, 64]
    assert record.failures == 9 and record.title == "T" and record.etag == '"e"'  # kept for revalidation
    assert next_page_record(record, FetchResult(URL, URL, "not_modified", 304), later, config).failures == 0


def test_the_fetch_budget_fits_the_last_page_within_max_seconds():
    policy, deadline = fetch_budget(EnrichConfig(max_seconds=20, timeout_s=10))
    assert policy.total_timeout == 10 and deadline == 10
    policy, deadline = fetch_budget(EnrichConfig(max_seconds=2, timeout_s=10, allow_private_networks=True))
    assert policy.total_timeout == 1 and deadline == 1 and policy.allow_private_networks
    policy, deadline = fetch_budget(EnrichConfig(max_seconds=60, timeout_s=5, per_host=1, max_bytes=1000))
    assert (policy.total_timeout, deadline, policy.per_host, policy.max_bytes) == (5, 55, 1, 1000)


def test_switching_fetching_on_later_fetches_the_backlog(tmp_path: Path, pages: PageServer):
    project = make_project(tmp_path, enrich={"fetch": False, "allow_private_networks": True})
    project.article(
        "a.txt", title="Article A", web_url="https://a.example/a", topics=["AI"], related=[{"webUrl": pages.url("/og")}]
    )
    project.run()
    project.article(
        "b.txt",
        title="Article B",
        web_url="https://a.example/b",
        topics=["AI"],
        related=[{"webUrl": pages.url("/og2")}],
    )
    project.run()
    assert pages.total == 0
    assert json.loads(project.cli("status", "--json").stdout)["enrich"]["pending"] == 0  # nothing queued

    set_enrich(project, fetch=True)
    report = project.run()  # no file changed: the pages both articles ask for are fetched all the same
    assert report["enrich"] == {"fetched": 2, "not_modified": 0, "failed": 0, "refused": 0, "pending": 0}
    assert atom_related(project, "topics/ai.atom", "Article A") == [(pages.url("/og"), "Open Graph title")]
    assert atom_related(project, "topics/ai.atom", "Article B") == [(pages.url("/og2"), "Open Graph title")]
