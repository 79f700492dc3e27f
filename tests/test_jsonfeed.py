"""JSON Feed 1.1 (issue 14, item 3): every feed also as `.json`, saying what its RSS and Atom say."""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path

import feedparser
import pytest

from tests.conftest import make_project
from tests.feedcheck import ATOM, assert_valid_json_feed, strict_parse
from tests.service_helpers import copy_examples, serve_examples

BASE = "http://feeds.example.test/feeds/"


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("examples")
    project = make_project(root)
    copy_examples(project.inbox)
    project.run()
    return project


def feed_pairs(project) -> list[str]:
    stems = ["all", *(f"topics/{path.stem}" for path in sorted((project.feeds / "topics").glob("*.atom")))]
    assert len(stems) > 5
    return stems


def test_every_feed_has_a_json_feed_with_the_same_entries_as_atom_and_rss(examples) -> None:
    for stem in feed_pairs(examples):
        document = json.loads(examples.feed(f"{stem}.json"))
        items = assert_valid_json_feed(examples.feed(f"{stem}.json"), f"{BASE}{stem}.json")
        atom = feedparser.parse(examples.feed(f"{stem}.atom"))
        rss = feedparser.parse(examples.feed(f"{stem}.rss"))
        assert document["title"] == atom.feed.title == rss.feed.title
        assert document["language"] == "en" and document["authors"] == [{"name": atom.feed.title}]
        # Same ids, order, titles, dates and links: item by item.
        assert [item["id"] for item in items] == [entry.id for entry in atom.entries] == [e.id for e in rss.entries]
        assert [item["url"] for item in items] == [entry.link for entry in atom.entries]
        assert [item["title"] for item in items] == [html.unescape(entry.title) for entry in atom.entries]
        # Atom's summary and content as written (feedparser rewrites HTML it reads).
        elements = strict_parse(examples.feed(f"{stem}.atom")).findall(f"{ATOM}entry")
        for item, entry, element in zip(items, atom.entries, elements, strict=True):
            assert datetime.fromisoformat(item["date_published"]) == datetime.fromisoformat(entry.published)
            assert datetime.fromisoformat(item["date_modified"]) == datetime.fromisoformat(entry.updated)
            assert item["summary"] == html.unescape(element.findtext(f"{ATOM}summary"))  # type="html": escaped once
            assert item.get("tags", []) == [tag.term for tag in entry.get("tags", [])]
            assert item.get("authors", [{}])[0].get("name") == entry.get("author")
            assert item.get("content_html") == element.findtext(f"{ATOM}content")
            enclosures = [link.href for link in entry.links if link.rel == "enclosure"]
            assert ([item["image"]] if "image" in item else []) == enclosures


def test_json_feeds_are_rendered_only_when_their_entries_change(examples, tmp_path: Path) -> None:
    before = examples.feed_files()
    report = examples.run()
    assert report["feeds"]["written"] == 0
    assert examples.feed_files() == before  # same bytes, same mtimes

    (examples.feeds / "topics" / "ai.json").unlink()  # a JSON file alone missing is put back
    report = examples.run()
    assert report["feeds"]["written"] == 1
    assert examples.feed_files() == {**before, "topics/ai.json": examples.feed_files()["topics/ai.json"]}
    assert examples.feed("topics/ai.json") == before["topics/ai.json"][0]


def test_text_is_text_in_json_too(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    title = "Q&A: 5 < 6 \u202e and &lt;b&gt; as text"
    project.article(
        "a.txt", title=title, excerpt="x &lt;script&gt;alert(1)&lt;/script&gt;", web_url="https://a.example/q"
    )
    project.run()
    (item,) = json.loads(project.feed("all.json"))["items"]
    atom = feedparser.parse(project.feed("all.atom")).entries[0]
    # Plain text in JSON: the characters a reader shows, as Atom's HTML shows them.
    assert item["title"] == html.unescape(atom.title) == "Q&A: 5 < 6 and <b> as text"
    assert item["summary"] == "x <script>alert(1)</script>"  # shown as text by a JSON Feed reader, never run
    assert "<script" not in item.get("content_html", "").lower()


def test_served_with_the_json_feed_content_type(tmp_path: Path) -> None:
    with serve_examples(tmp_path) as served:
        answer = served.service.get("/feeds/all.json")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/feed+json; charset=utf-8"
        etag = answer.headers["etag"]
        assert json.loads(answer.content)["feed_url"].endswith("/feeds/all.json")
        again = served.service.get("/feeds/all.json", headers={"If-None-Match": etag})
        assert again.status_code == 304
