"""What an entry carries: its lead image where readers look (issue 14, item 5), full content or
a summary as configured (item 4), all its topics as categories."""

from __future__ import annotations

import json
from pathlib import Path

import feedparser
import yaml

from tests.conftest import make_project

IMAGE = "https://img.example.com/2021/lead.png?w=1200"


def parsed(project, feed: str):
    result = feedparser.parse(project.feed(feed))
    assert not result.bozo, result.bozo_exception
    return result.entries[0]


def story(project) -> None:
    project.article(
        "a.txt",
        title="Tidal power",
        web_url="https://news.example.com/tidal",
        topics=["Energy", "Oceans"],
        excerpt="Turbines under the strait.",
        body="The **full** story, paragraph one.",
        images=[{"url": IMAGE, "width": 1200, "height": 675}],
    )


def test_the_lead_image_is_an_enclosure_a_thumbnail_and_media_content(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    story(project)
    project.run()
    for feed in ("all.rss", "all.atom", "topics/energy.rss", "topics/oceans.atom"):
        entry = parsed(project, feed)
        assert [(e.href, e.type, e.length) for e in entry.enclosures] == [(IMAGE, "image/png", "0")], feed
        assert entry.media_thumbnail[0]["url"] == IMAGE and entry.media_thumbnail[0]["width"] == "1200"
        assert entry.media_content[0]["url"] == IMAGE
        assert {tag.term for tag in entry.tags} == {"Energy", "Oceans"}
    for feed in ("all.json", "topics/oceans.json"):
        (item,) = json.loads(project.feed(feed))["items"]
        assert item["image"] == IMAGE and item["tags"] == ["Energy", "Oceans"]


def test_summary_mode_links_and_excerpts_without_content(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    story(project)
    project.run()
    full = parsed(project, "all.atom")
    assert "paragraph one" in full.content[0].value

    config = yaml.safe_load(project.config.read_text())
    config["feeds"]["content"] = "summary"
    project.config.write_text(yaml.safe_dump(config))
    report = json.loads(project.cli("run", "--json").stdout)
    assert report["feeds"]["written"] == 9  # every feed rendered again, in 3 formats (index.opml stays)
    for feed in ("all.atom", "all.rss", "topics/energy.rss"):
        entry = parsed(project, feed)
        assert "content" not in entry, feed
        assert entry.link == "https://news.example.com/tidal"
        assert entry.summary == "Turbines under the strait."
        assert {tag.term for tag in entry.tags} == {"Energy", "Oceans"}
    assert b"paragraph one" not in project.feed("all.rss")
    (item,) = json.loads(project.feed("topics/energy.json"))["items"]
    assert "content_html" not in item and item["content_text"] == item["summary"] == "Turbines under the strait."
    assert item["url"] == "https://news.example.com/tidal" and item["tags"] == ["Energy", "Oceans"]
