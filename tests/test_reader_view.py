"""What a feed reader sees (issue 11): drafts never move a published entry, no blank
elements, and an OPML index that subscribes to each topic once.

Real projects, a real SQLite file, the CLI in a subprocess; each run's time is pinned with
FEEDWORKER_CLOCK, so an entry whose `updated` moved would show the later time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree

from tests.conftest import Project, make_project
from tests.feedcheck import ATOM, CONTENT, assert_valid_feeds, strict_parse

T1, T2, T3, T4, T5 = (f"2024-06-0{day}T12:00:00+00:00" for day in range(1, 6))


def run_at(project: Project, clock: str) -> dict[str, Any]:
    """One full `feedworker run --json` at the time `clock`; every feed on disk is checked."""
    result = project.cli("run", "--json", env={"FEEDWORKER_CLOCK": clock})
    report = json.loads(result.stdout)
    assert report["status"] == "ok", report
    assert_valid_feeds(project.feeds, project.base_url)
    return report


def set_feeds(project: Project, **values: object) -> None:
    config = yaml.safe_load(project.config.read_text())
    config["feeds"].update(values)
    project.config.write_text(yaml.safe_dump(config))


def atom_entries(project: Project, feed: str) -> dict[str, etree._Element]:
    root = etree.fromstring(project.feed(feed))
    return {entry.findtext(f"{ATOM}title"): entry for entry in root.iter(f"{ATOM}entry")}


def rss_items(project: Project, feed: str) -> dict[str, etree._Element]:
    root = etree.fromstring(project.feed(feed))
    return {item.findtext("title"): item for item in root.iter("item")}


def updated(project: Project, feed: str, title: str) -> str:
    return atom_entries(project, feed)[title].findtext(f"{ATOM}updated")


def published_pair(project: Project) -> None:
    """Two published articles in two topics each (five feeds, the index and all)."""
    project.article(
        "a.txt",
        title="Published A",
        web_url="https://pub.example/a",
        topics=["AI", "Space"],
        publishedDateTime="2021-01-10T10:00:00Z",
    )
    project.article(
        "b.txt",
        title="Published B",
        web_url="https://pub.example/b",
        topics=["AI", "Sport"],
        publishedDateTime="2021-01-11T10:00:00Z",
        related=[{"webUrl": "https://elsewhere.example/x", "title": "Elsewhere"}],
    )


# ------------------------------------------------------------------ 1. a draft touches nothing


def test_a_draft_listing_a_published_article_leaves_every_feed_byte_identical(project: Project):
    published_pair(project)
    run_at(project, T1)
    before = project.feed_files()
    assert len(before) == 13  # ai, space, sport, all (rss + atom + json), index.opml

    draft = project.article(
        "draft.txt",
        title="Draft",
        web_url="https://draft.example/d",
        published=False,
        topics=["AI", "Drafts"],
        related=[{"webUrl": "https://pub.example/a"}],
    )
    report = run_at(project, T2)
    assert report["files"]["new"] == 1 and report["feeds"]["written"] == 0
    assert project.feed_files() == before  # same bytes, same mtimes: no entry moved

    project.article(
        "draft.txt",
        title="Draft, edited",
        web_url="https://draft.example/d",
        published=False,
        topics=["Sport", "Drafts"],
        related=[{"webUrl": "https://pub.example/b", "title": "B"}, {"webUrl": "https://pub.example/a"}],
    )
    report = run_at(project, T3)
    assert report["files"]["changed"] == 1 and report["feeds"]["written"] == 0
    assert project.feed_files() == before

    draft.unlink()
    report = run_at(project, T4)
    assert report["files"]["deleted"] == 1 and report["feeds"]["written"] == 0
    assert project.feed_files() == before


def test_a_draft_a_published_article_lists_leaves_every_feed_byte_identical(project: Project):
    published_pair(project)
    project.article(
        "c.txt",
        title="Published C",
        web_url="https://pub.example/c",
        topics=["Space"],
        publishedDateTime="2021-01-12T10:00:00Z",
        related=[{"webUrl": "https://draft.example/d", "title": "Given title of the draft"}],
    )
    run_at(project, T1)
    before = project.feed_files()
    shown = [
        (link.get("href"), link.get("title"))
        for link in atom_entries(project, "all.atom")["Published C"].iter(f"{ATOM}link")
        if link.get("rel") == "related"
    ]
    assert shown == [("https://draft.example/d", "Given title of the draft")]

    draft = project.article(
        "draft.txt",
        title="Stored title of the draft",
        web_url="https://draft.example/d",
        published=False,
        topics=["Space"],
        related=[{"webUrl": "https://pub.example/c"}],
    )
    assert run_at(project, T2)["feeds"]["written"] == 0
    assert project.feed_files() == before
    project.article(
        "draft.txt", title="Draft, edited", web_url="https://draft.example/d", published=False, topics=["AI"]
    )
    assert run_at(project, T3)["feeds"]["written"] == 0
    assert project.feed_files() == before
    draft.unlink()
    assert run_at(project, T4)["feeds"]["written"] == 0
    assert project.feed_files() == before


def test_a_neighbour_moves_only_when_the_links_it_shows_change(project: Project):
    published_pair(project)
    project.article(
        "c.txt",
        title="Lister",
        web_url="https://pub.example/c",
        topics=["Space"],
        publishedDateTime="2021-01-12T10:00:00Z",
        related=[{"webUrl": "https://pub.example/a"}],
    )
    run_at(project, T1)
    assert updated(project, "all.atom", "Published A") == "2021-01-10T10:00:00+00:00"

    # The lister's body changes: its own entry moves, the article it lists shows the same links.
    project.article(
        "c.txt",
        title="Lister",
        web_url="https://pub.example/c",
        topics=["Space"],
        publishedDateTime="2021-01-12T10:00:00Z",
        related=[{"webUrl": "https://pub.example/a"}],
        body="A new paragraph.\n",
    )
    ai = project.feed_files()["topics/ai.atom"]
    run_at(project, T2)
    assert updated(project, "all.atom", "Lister") == "2024-06-02T12:00:00+00:00"
    assert updated(project, "all.atom", "Published A") == "2021-01-10T10:00:00+00:00"
    assert project.feed_files()["topics/ai.atom"] == ai  # A and B: no entry of it changed

    # The lister's title changes: A shows it as a reverse link, so A moves too.
    project.article(
        "c.txt",
        title="Lister, renamed",
        web_url="https://pub.example/c",
        topics=["Space"],
        publishedDateTime="2021-01-12T10:00:00Z",
        related=[{"webUrl": "https://pub.example/a"}],
        body="A new paragraph.\n",
    )
    run_at(project, T3)
    assert updated(project, "all.atom", "Published A") == "2024-06-03T12:00:00+00:00"
    assert updated(project, "all.atom", "Published B") == "2021-01-11T10:00:00+00:00"

    # A draft that becomes published is news to what it lists, and leaves it when unpublished.
    project.article(
        "draft.txt",
        title="Draft",
        web_url="https://draft.example/d",
        published=False,
        topics=["Drafts"],
        related=[{"webUrl": "https://pub.example/b"}],
    )
    run_at(project, T4)
    assert updated(project, "all.atom", "Published B") == "2021-01-11T10:00:00+00:00"
    project.article(
        "draft.txt",
        title="Draft",
        web_url="https://draft.example/d",
        published=True,
        topics=["Drafts"],
        related=[{"webUrl": "https://pub.example/b"}],
    )
    run_at(project, T5)
    assert updated(project, "all.atom", "Published B") == "2024-06-05T12:00:00+00:00"
    related = [
        link.get("href")
        for link in atom_entries(project, "all.atom")["Published B"].iter(f"{ATOM}link")
        if link.get("rel") == "related"
    ]
    assert related == ["https://elsewhere.example/x", "https://draft.example/d"]
    project.article(
        "draft.txt",
        title="Draft",
        web_url="https://draft.example/d",
        published=False,
        topics=["Drafts"],
        related=[{"webUrl": "https://pub.example/b"}],
    )
    run_at(project, "2024-06-06T12:00:00+00:00")
    assert updated(project, "all.atom", "Published B") == "2024-06-06T12:00:00+00:00"
    assert "draft.example" not in project.feed("all.atom").decode()


# ------------------------------------------------------------------ 2. no blank elements


def sparse_corpus(project: Project) -> None:
    """Articles with and without body, excerpt, related items, image and provider."""
    day = iter(range(28, 0, -1))

    def add(name: str, title: str, **fields: Any) -> None:
        fields.setdefault("publishedDateTime", f"2021-01-{next(day):02d}T10:00:00Z")
        project.article(f"{name}.txt", title=title, web_url=f"https://sparse.example/{name}", topics=["AI"], **fields)

    add(
        "full",
        "Full",
        body="# Heading\n\nSome *text*.\n",
        related=[{"webUrl": "https://x.example/1", "title": "X"}],
        images=[{"url": "https://img.example/1.jpg", "width": 4, "height": 3}],
        provider={"name": "P"},
    )
    add("bodiless", "Bodiless", excerpt="Only an excerpt")
    add("excerptless", "Excerptless", excerpt="", body="Only a body.\n")
    add("titleonly", "Title only", excerpt="")
    add("blankexcerpt", "Blank excerpt", excerpt="<b></b> ", body="   \n")
    add("scriptbody", "Script body", excerpt="Excerpt", body="<script>alert(1)</script>\n")
    add("relatedonly", "Related only", excerpt="", related=[{"webUrl": "https://x.example/2", "title": "Y"}])
    add(
        "imageonly",
        "Image only",
        excerpt="",
        images=[{"url": "https://img.example/2.jpg"}],
        provider={"name": "Prov", "domain": "prov.example"},
    )


def test_an_entry_without_a_body_has_no_content_and_no_element_is_blank(project: Project):
    sparse_corpus(project)
    run_at(project, T1)  # feedcheck: no blank element, summary before content, description before content:encoded
    atom, rss = atom_entries(project, "topics/ai.atom"), rss_items(project, "topics/ai.rss")
    # title: (summary: the excerpt, or the title without one; content: with a body or related links)
    expected = {
        "Full": ("Excerpt of Full", True),
        "Bodiless": ("Only an excerpt", False),
        "Excerptless": ("Excerptless", True),
        "Title only": ("Title only", False),
        "Blank excerpt": ("Blank excerpt", False),  # an excerpt and a body that show nothing
        "Script body": ("Excerpt", False),  # nothing left of the body once sanitised
        "Related only": ("Related only", True),  # the "Related coverage" list, which RSS has no other place for
        "Image only": ("Image only", False),  # media:content and the author carry the rest
    }
    assert set(atom) == set(rss) == set(expected)
    for title, (summary, has_content) in expected.items():
        entry, item = atom[title], rss[title]
        assert entry.findtext(f"{ATOM}summary") == item.findtext("description") == summary, title
        content = entry.findtext(f"{ATOM}content")
        assert (content is not None) is has_content, title
        assert item.findtext(f"{CONTENT}encoded") == content, title
    body = rss["Full"].findtext(f"{CONTENT}encoded")
    assert "<h1>Heading</h1>" in body and "Related coverage" in body and "Excerpt of Full" in body
    assert "Only a body." in rss["Excerptless"].findtext(f"{CONTENT}encoded")
    assert "Related coverage" in atom["Related only"].findtext(f"{ATOM}content")


def test_feedcheck_refuses_blank_elements_and_the_orders_readers_misread():
    from tests.feedcheck import assert_valid_atom, assert_valid_rss

    url = "https://feeds.example.test/feeds/x"
    entry = (
        "<entry><id>urn:x</id><title>T</title><updated>2021-01-01T00:00:00Z</updated>"
        "<published>2021-01-01T00:00:00Z</published><link href='https://a.example/'/>{}</entry>"
    )
    atom = (
        "<feed xmlns='http://www.w3.org/2005/Atom'><id>urn:f</id><title>F</title>"
        f"<updated>2021-01-01T00:00:00Z</updated><link rel='self' href='{url}'/>{{}}</feed>"
    )
    for good in (
        "<summary>S</summary><content type='html'>C</content>",
        "<summary>S</summary>",
        "<content type='html'>C</content>",
    ):
        assert_valid_atom(atom.format(entry.format(good)).encode(), url)
    for bad in (
        "<content type='html'/>",
        "<summary type='html'> </summary>",
        "",
        "<content type='html'>C</content><summary>S</summary>",
    ):
        with pytest.raises(AssertionError):
            assert_valid_atom(atom.format(entry.format(bad)).encode(), url)
    rss = (
        "<rss version='2.0' xmlns:atom='http://www.w3.org/2005/Atom' "
        "xmlns:content='http://purl.org/rss/1.0/modules/content/'><channel><title>F</title>"
        f"<link>https://a.example/</link><description>D</description><atom:link rel='self' href='{url}'/>"
        "<item><title>T</title><link>https://a.example/</link><guid isPermaLink='false'>urn:x</guid>"
        "<pubDate>Fri, 01 Jan 2021 00:00:00 +0000</pubDate>{}</item></channel></rss>"
    )
    for good in ("", "<description>D</description><content:encoded>C</content:encoded>"):
        assert_valid_rss(rss.format(good).encode(), url)
    for bad in (
        "<description></description>",
        "<description>D</description><content:encoded> </content:encoded>",
        "<content:encoded>C</content:encoded>",
        "<content:encoded>C</content:encoded><description>D</description>",
    ):
        with pytest.raises(AssertionError):
            assert_valid_rss(rss.format(bad).encode(), url)


# ------------------------------------------------------------------ 3. the OPML index


def opml_outlines(project: Project) -> list[etree._Element]:
    root = strict_parse(project.feed("index.opml"))
    assert root.tag == "opml" and root.get("version") == "2.0"
    body = root.find("body")
    outlines = list(body)
    assert all(outline.tag == "outline" and len(outline) == 0 for outline in outlines), "folders in the index"
    return outlines


def two_topics(project: Project) -> None:
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["Space", "AI"])
    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["AI"])
    project.article("d.txt", title="D", web_url="https://a.example/d", topics=["Drafts"], published=False)


def test_the_index_lists_each_topic_feed_once_in_atom_and_not_the_all_feed(project: Project):
    two_topics(project)
    run_at(project, T1)
    outlines = opml_outlines(project)
    assert [(o.get("text"), o.get("title"), o.get("type"), o.get("xmlUrl")) for o in outlines] == [
        ("AI", "AI", "rss", project.base_url + "topics/ai.atom"),
        ("Space", "Space", "rss", project.base_url + "topics/space.atom"),
    ]


def test_opml_format_rss_lists_the_rss_feeds_and_a_switch_rewrites_the_index_alone(project: Project):
    two_topics(project)
    run_at(project, T1)
    before = project.feed_files()
    set_feeds(project, opml_format="rss")
    report = run_at(project, T2)
    assert report["feeds"]["written"] == 1
    after = project.feed_files()
    assert {name for name in after if after[name] != before[name]} == {"index.opml"}
    assert [o.get("xmlUrl") for o in opml_outlines(project)] == [
        project.base_url + "topics/ai.rss",
        project.base_url + "topics/space.rss",
    ]
    # back to Atom by the environment, the documented override
    result = project.cli("run", "--json", env={"FEEDWORKER_CLOCK": T3, "FEEDWORKER_FEEDS__OPML_FORMAT": "atom"})
    assert json.loads(result.stdout)["feeds"]["written"] == 1
    assert [o.get("xmlUrl") for o in opml_outlines(project)] == [
        project.base_url + "topics/ai.atom",
        project.base_url + "topics/space.atom",
    ]


def test_without_a_topic_feed_the_index_lists_the_all_feed(project: Project):
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=None)
    run_at(project, T1)
    assert [(o.get("text"), o.get("xmlUrl")) for o in opml_outlines(project)] == [
        ("Test News", project.base_url + "all.atom"),  # OPML wants an outline, and nothing comes twice
    ]
    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["AI"])
    run_at(project, T2)
    assert [o.get("xmlUrl") for o in opml_outlines(project)] == [project.base_url + "topics/ai.atom"]


def test_an_unknown_opml_format_is_refused_naming_the_key(tmp_path: Path):
    project = make_project(tmp_path, feeds={"opml_format": "json"})
    result = project.cli("run", check=False)
    assert result.returncode == 1
    assert "feeds.opml_format" in result.stderr
