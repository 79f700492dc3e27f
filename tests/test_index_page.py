"""The page people find their feeds on: feeds/index.html, written by the cycles that render feeds and
served at `/`, `/feeds/` and `/feeds/index.html`; checked as a reader's browser loads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import lxml.html
import pytest
import yaml

from tests.conftest import Project, both_dialects, store_database
from tests.service_helpers import Service, copy_examples, free_port, write_config

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
MEDIA_TYPES = {"application/atom+xml", "application/rss+xml", "application/feed+json", "text/x-opml"}
# Untrusted text as an article file may give it: markup, quotes and ampersands, escaped or not.
HOSTILE_TITLE = '&lt;script&gt;alert("title")&lt;/script&gt; Fish &amp; "Chips" <img src=x onerror=alert(1)>'
HOSTILE_TOPIC = "Q&A \"Quotes\" 'single' <script>alert(2)</script>&lt;b onclick=alert(3)&gt;bold"
SHOWN_TITLE = '<script>alert("title")</script> Fish & "Chips"'  # its characters, as the feeds show them
SHOWN_TOPIC = "Q&A \"Quotes\" 'single' b onclick=alert(3) bold"  # a label: no angle brackets


def tree(body: bytes | str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(body)


def shown(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def hostile_article() -> str:
    fields = {
        "title": HOSTILE_TITLE,
        "webUrl": "https://hostile.example/story?a=1&b=2",
        "topics": [HOSTILE_TOPIC],
        "excerpt": "An excerpt",
        "publishedDateTime": "2030-01-01T00:00:00Z",  # the newest of all: first in every list it is in
    }
    return "---\n" + yaml.safe_dump(fields, allow_unicode=True) + "---\n"


@dataclass
class Site:
    service: Service
    feeds: Path

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.service.get(path, **kwargs)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, dialect: str) -> Iterator[Site]:
    """`serve` over the examples and one hostile article, its feeds.base_url its own address (so
    every link of the page is on this machine: nothing is fetched from elsewhere)."""
    root = tmp_path_factory.mktemp("site")
    copy_examples(root / "inbox")
    (root / "inbox" / "hostile.txt").write_text(hostile_article(), encoding="utf-8")
    port = free_port()
    feeds = {"base_url": f"http://127.0.0.1:{port}/feeds/", "title": "Test News"}
    with (
        store_database(dialect) as database,
        Service(write_config(root, port=port, database=database, feeds=feeds), port) as service,
    ):
        service.wait_healthy(60)
        yield Site(service, root / "feeds")


def json_feed(site: Site, stem: str) -> dict:
    return json.loads((site.feeds / f"{stem}.json").read_bytes())


def test_the_page_lists_every_topic_with_its_count_and_newest_headlines_as_the_feeds_do(site: Site):
    page = site.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == (site.feeds / "index.html").read_bytes()
    root = tree(page.content)
    slugs = sorted(path.stem for path in (site.feeds / "topics").glob("*.json"))
    assert len(slugs) >= 5
    sections = {section.get("id"): section for section in root.iter("section")}
    assert set(sections) == {"all-articles", *(f"topic-{slug}" for slug in slugs)}
    nav_targets = [a.get("href") for a in root.find(".//nav").iter("a")]
    assert sorted(nav_targets) == sorted(f"#topic-{slug}" for slug in slugs)  # every topic once, in the nav
    for slug in slugs:
        feed = json_feed(site, f"topics/{slug}")
        section = sections[f"topic-{slug}"]
        name = feed["title"].removeprefix("Test News: ")
        assert shown(section.find(".//h2")) == name
        count = len(feed["items"])  # fewer than feeds.max_entries here: the feed holds them all
        assert f"{count} article{'s' if count != 1 else ''}" in shown(section)
        headlines = [(shown(a), a.get("href")) for a in section.findall(".//ol/li/a")]
        assert headlines == [(item["title"], item["url"]) for item in feed["items"][:3]]
        times = [datetime.fromisoformat(t.get("datetime")) for t in section.findall(".//ol/li/time")]
        assert times == [datetime.fromisoformat(item["date_published"]) for item in feed["items"][:3]]
        subscribe = {a.get("type"): a.get("href") for a in section.findall(".//a[@rel='alternate']")}
        assert subscribe == {
            "application/atom+xml": f"{site.service.base}/feeds/topics/{slug}.atom",
            "application/rss+xml": f"{site.service.base}/feeds/topics/{slug}.rss",
            "application/feed+json": f"{site.service.base}/feeds/topics/{slug}.json",
        }
    everything = json_feed(site, "all")
    assert f"{len(everything['items'])} articles" in shown(sections["all-articles"])
    headlines = [(shown(a), a.get("href")) for a in sections["all-articles"].findall(".//ol/li/a")]
    assert headlines == [(item["title"], item["url"]) for item in everything["items"][:3]]
    head = {link.get("type"): link.get("href") for link in root.findall(".//head/link[@rel='alternate']")}
    assert head == {
        "application/atom+xml": f"{site.service.base}/feeds/all.atom",
        "application/rss+xml": f"{site.service.base}/feeds/all.rss",
        "application/feed+json": f"{site.service.base}/feeds/all.json",
    }
    assert root.find(".//a[@type='text/x-opml']").get("href") == f"{site.service.base}/feeds/index.opml"


@both_dialects()  # on PostgreSQL, from the store's documents, as replicas serve feeds
def test_the_page_is_served_at_the_root_and_the_feeds_folder_like_a_feed_with_a_strict_policy(site: Site):
    body = (site.feeds / "index.html").read_bytes()
    for path in ("/", "/feeds/", "/feeds/index.html"):
        response = site.get(path)
        assert response.status_code == 200, path
        assert response.content == body, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        etag = response.headers["etag"]
        again = site.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
        assert site.get(path, headers={"Accept-Encoding": "gzip"}).headers["content-encoding"] == "gzip"
        with site.service.client() as client:
            head = client.head(path)
        assert head.status_code == 200 and head.headers["etag"] == etag and not head.content
    assert site.get("/index.html").status_code == 404  # nothing else new is served


def test_hostile_titles_and_topic_names_are_text_on_the_page_never_markup(site: Site):
    body = site.get("/").content
    root = tree(body)
    assert not root.findall(".//script") and not root.findall(".//img") and not root.findall(".//b")
    assert not [el for el in root.iter() if any(name.startswith("on") for name in el.attrib)]
    section = next(s for s in root.iter("section") if shown(s.find(".//h2")) == SHOWN_TOPIC)
    assert shown(section.find(".//ol/li/a")) == SHOWN_TITLE
    assert section.find(".//ol/li/a").get("href") == "https://hostile.example/story?a=1&b=2"
    assert SHOWN_TITLE in [shown(a) for a in root.find(".//section[@id='all-articles']").iterfind(".//ol/li/a")]
    assert b"<script" not in body and b"&lt;script&gt;" in body
    # The topic's subscribe links name it as it is shown.
    labels = {a.get("aria-label") for a in section.iterfind(".//a[@rel='alternate']")}
    assert f"Subscribe to {SHOWN_TOPIC} (Atom)" in labels


@both_dialects()
def test_the_page_stays_byte_identical_follows_a_new_article_and_comes_back_when_deleted(project: Project):
    project.article("a.txt", title="Alpha", web_url="https://a.example/a", topics=["AI"])
    project.article("b.txt", title="Beta", web_url="https://a.example/b", topics=["Space"])
    first = project.run()
    page = project.feeds / "index.html"
    before, mtime = page.read_bytes(), page.stat().st_mtime_ns
    assert first["feeds"]["written"] == len(project.feed_files())  # the page is no feed: not counted
    assert project.run()["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}  # nothing to do
    assert (page.read_bytes(), page.stat().st_mtime_ns) == (before, mtime)

    project.article(
        "c.txt",
        title="Gamma &amp; &lt;Delta&gt;",
        web_url="https://a.example/c",
        topics=["AI"],
        publishedDateTime="2021-02-01T00:00:00Z",
    )
    project.run()
    after = page.read_bytes()
    assert after != before
    ai = tree(after).find(".//section[@id='topic-ai']")
    assert "2 articles" in shown(ai)
    assert [shown(a) for a in ai.iterfind(".//ol/li/a")] == ["Gamma & <Delta>", "Alpha"]
    assert "1 article" in shown(tree(after).find(".//section[@id='topic-space']"))

    page.unlink()
    if project.dialect == "postgresql":  # replicas serve the store's copy: that is what goes missing there
        project.query("DELETE FROM feed_document WHERE path = 'index.html'")
    report = project.run()
    assert report["status"] == "ok" and report["feeds"]["written"] == 0
    assert page.read_bytes() == after
    if project.dialect == "postgresql":
        assert project.query("SELECT body FROM feed_document WHERE path = 'index.html'")[0][0] == after
    assert project.run()["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}


# --------------------------------------------------------------------------- in a real browser

CHROMIUM = shutil.which("chromium")
# Flags that keep a headless Chromium on this machine: no background requests (updates, sync,
# safe browsing, metrics), no proxy, and every host name but 127.0.0.1 resolved to nothing
# without a lookup (so not even a DNS prefetch of the headlines' hosts leaves the machine).
# Checked with strace: its only TCP connections go to 127.0.0.1; it still connect()s a UDP
# socket to a public IPv6 address to learn the local route, which sends no packet.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--metrics-recording-only",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


@pytest.fixture
def chromium(tmp_path: Path):
    """Runs headless Chromium with a fresh profile; skips (or fails, with REQUIRE_BROWSER_TESTS=1)
    when Debian's `chromium` is not installed."""
    if CHROMIUM is None:
        reason = "headless Chromium is not installed (Debian package `chromium`)"
        if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
            pytest.fail(f"{reason}, and REQUIRE_BROWSER_TESTS=1 requires it")
        pytest.skip(reason)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
        command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        result = subprocess.run(command, capture_output=True, timeout=120, check=False, cwd=tmp_path)
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
        return result

    return run


def test_a_browser_loads_the_page_and_every_subscribe_link_answers_with_the_type_it_names(site: Site, chromium):
    dom = chromium("--dump-dom", f"{site.service.base}/").stdout.decode()
    root = tree(dom)
    assert root.get("lang") == "en"
    assert root.find(".//head/meta[@name='viewport']") is not None
    for landmark in ("header", "nav", "main", "footer"):
        assert root.find(f".//{landmark}") is not None, landmark
    assert not root.findall(".//script") and not root.findall(".//iframe") and not root.findall(".//object")
    # Nothing is loaded from anywhere: no stylesheet, image or frame from a URL.
    assert not [el for el in root.iter() if el.get("src")]
    assert not root.findall(".//link[@rel='stylesheet']")
    links = root.findall(".//a")
    assert links and all((a.get("aria-label") or shown(a)).strip() for a in links), "a link without a name"
    typed = [el for el in root.iter("a", "link") if el.get("type")]
    assert {el.get("type") for el in typed} == MEDIA_TYPES
    expected = 3 + 3 * len(root.findall(".//section[@id]"))  # the head's three, every feed's three
    assert len([el for el in typed if el.get("rel") == "alternate"]) == expected
    with site.service.client() as client:
        for href in sorted({el.get("href") for el in typed}):
            assert href.startswith(f"{site.service.base}/feeds/"), href
            response = client.get(urlsplit(href).path)
            assert response.status_code == 200, href
            names = {el.get("type") for el in typed if el.get("href") == href}
            assert names == {response.headers["content-type"].split(";")[0]}, href
    # Every subscribe link says what it subscribes to.
    ai = root.find(".//section[@id='topic-ai']")
    assert ai is not None
    name = shown(ai.find(".//h2"))
    assert [a.get("aria-label") for a in ai.iterfind(".//a[@rel='alternate']")] == [
        f"Subscribe to {name} (Atom)",
        f"Subscribe to {name} (RSS)",
        f"Subscribe to {name} (JSON Feed)",
    ]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 900)], ids=["phone", "desktop"])
def test_a_browser_draws_the_page_at_phone_and_desktop_widths(site: Site, chromium, tmp_path: Path, width, height):
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", f"--window-size={width},{height}", f"{site.service.base}/")
    assert png_size(shot) == (width, height)
    assert shot.stat().st_size > 5_000  # text was drawn, not a blank page


# --------------------------------------------------------------------------- the renderer alone


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(one: str, other: str) -> float:
    high, low = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_page_is_the_same_bytes_for_the_same_input_and_its_colours_meet_wcag_aa():
    import re
    from datetime import UTC

    from worker.publish.page import FeedUrls, Headline, PageFeed, render_page

    base = "https://news.example.test/feeds/"
    urls = FeedUrls(base + "all.atom", base + "all.rss", base + "all.json")
    headline = Headline('A & "B" <c>', "javascript:alert(1)", datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC))
    everything = PageFeed("Every article", "all", 1, (headline,), urls)
    title = '</title><script>alert("site")</script>'
    page = render_page(title, base, everything, [])
    assert page == render_page(title, base, everything, [])  # no build time, no randomness
    root = tree(page)
    assert not root.findall(".//script") and shown(root.find(".//h1")) == title
    item = root.find(".//ol/li")
    assert item.find("a") is None and 'A & "B" <c>' in shown(item)  # not a web address: no link
    assert item.find("time").get("datetime") == "2021-01-02T03:04:05Z"
    # Every text colour on every background it sits on, in the light and the dark scheme.
    schemes = re.findall(r":root\{([^}]*)\}", page.decode())
    assert len(schemes) == 2  # light, and dark (prefers-color-scheme)
    for scheme in schemes:
        palette = dict(re.findall(r"--([a-z]+):(#[0-9a-f]{6})", scheme))
        for text_colour in ("fg", "muted", "link"):
            for background in ("bg", "card", "chip"):
                ratio = _contrast(palette[text_colour], palette[background])
                assert ratio >= 4.5, (scheme, text_colour, background, ratio)
