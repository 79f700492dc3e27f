"""RFC 5005 feed history (issue 14, item 7): complete feeds say so; longer topics get archive
pages a client walks back through with prev-archive, and the pages stay byte-stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser

from tests.conftest import both_dialects, make_project
from tests.feedcheck import ATOM, strict_parse

FH = "{http://purl.org/syndication/history/1.0}"
BASE = "http://feeds.example.test/feeds/"
SIZE = 3  # feeds.max_entries: the current feed's entries, and an archive page's


def add(project, number: int, topics: list[str]) -> None:
    """Article `number`, published on day `number` (a later number is a newer article)."""
    project.article(
        f"a{number:03d}.txt",
        title=f"Story {number}",
        web_url=f"https://news.example.com/{number}",
        topics=topics,
        publishedDateTime=(datetime(2021, 1, 1, tzinfo=UTC) + timedelta(hours=number)).isoformat(),
    )


def links(data: bytes) -> dict[str, str]:
    return {link.get("rel"): link.get("href") for link in strict_parse(data).findall(f"{ATOM}link")}


def walk(project, topic: str) -> list[list[str]]:
    """The article links of each document from the current Atom feed back through prev-archive:
    what an RFC 5005 client reads."""
    documents = []
    url: str | None = f"{BASE}topics/{topic}.atom"
    while url is not None:
        data = project.feed(url.removeprefix(BASE))
        parsed = feedparser.parse(data)
        assert not parsed.bozo, parsed.bozo_exception
        documents.append([entry.link for entry in parsed.entries])
        url = links(data).get("prev-archive")
        assert len(documents) < 100
    return documents


def test_walking_prev_archive_from_each_current_feed_yields_every_article_of_the_topic_once(tmp_path: Path) -> None:
    project = make_project(tmp_path, feeds={"max_entries": SIZE})
    wanted: dict[str, set[str]] = {"energy": set(), "oceans": set(), "rare": set()}
    for number in range(20):
        topics = ["Energy"] + (["Oceans"] if number % 2 else [])
        add(project, number, topics)
        for topic in topics:
            wanted[topic.lower()].add(f"https://news.example.com/{number}")
    add(project, 99, ["Rare"])
    wanted["rare"].add("https://news.example.com/99")
    project.article(
        "draft.txt", title="Draft", web_url="https://news.example.com/draft", topics=["Energy"], published=False
    )
    project.run()

    for topic, articles in wanted.items():
        documents = walk(project, topic)
        current, archives = documents[0], documents[1:]
        assert current == sorted(articles, key=lambda url: int(url.rsplit("/", 1)[1]), reverse=True)[:SIZE]
        # Archive pages: full, disjoint, and with the current feed every published article once
        # (RFC 5005 4.2: an entry in several documents is the one of the newest document).
        assert all(len(page) == SIZE for page in archives), archives
        archived = [url for page in archives for url in page]
        assert len(archived) == len(set(archived))
        seen: list[str] = []
        for document in documents:
            seen += [url for url in document if url not in seen]
        assert sorted(seen) == sorted(articles)
        assert len(archives) == max(0, -(-(len(articles) - SIZE) // SIZE))

    rare = strict_parse(project.feed("topics/rare.atom"))
    assert rare.find(f"{FH}complete") is not None and "prev-archive" not in links(project.feed("topics/rare.atom"))
    energy = strict_parse(project.feed("topics/energy.atom"))
    assert energy.find(f"{FH}complete") is None
    page = strict_parse(project.feed("archive/energy/1.atom"))
    assert page.find(f"{FH}archive") is not None
    assert links(project.feed("archive/energy/1.atom")) | {"alternate": ""} == {
        "self": f"{BASE}archive/energy/1.atom",
        "current": f"{BASE}topics/energy.atom",
        "next-archive": f"{BASE}archive/energy/2.atom",
        "alternate": "",
    }
    rss = strict_parse(project.feed("topics/energy.rss")).find("channel")
    assert [link.get("rel") for link in rss.findall(f"{ATOM}link")] == ["self", "prev-archive"]
    assert strict_parse(project.feed("topics/rare.rss")).find(f"channel/{FH}complete") is not None


@both_dialects()
def test_a_new_article_changes_only_the_current_feed_until_a_page_fills(project) -> None:
    project.config.write_text(project.config.read_text().replace("max_entries: 50", f"max_entries: {SIZE}"))
    for number in range(8):
        add(project, number, ["Energy"])
    project.run()
    pages = lambda: {path: data for path, data in project.feed_files().items() if path.startswith("archive/")}
    before = pages()
    assert sorted(before) == ["archive/energy/1.atom", "archive/energy/2.atom"]  # 8 entries: 3 current, 6 archived

    for number in range(8, 15):
        add(project, number, ["Energy"])
        report = project.run()
        now = pages()
        new = sorted(set(now) - set(before))
        assert {path: now[path] for path in before} == before  # same bytes, same mtimes
        filled = (number + 1 - SIZE) % SIZE == 1  # one entry past a full page: a page more
        assert new == ([f"archive/energy/{len(before) + 1}.atom"] if filled else []), number
        # The current feeds (3 formats, topic and all) and index.opml/the new page: nothing else written.
        assert report["feeds"]["written"] == 6 + len(new)
        before = now
    walked = walk(project, "energy")
    assert {url for document in walked for url in document} == {f"https://news.example.com/{n}" for n in range(15)}


@both_dialects()
def test_an_archived_entry_changes_with_its_own_items_never_with_newer_articles_linking_to_it(project) -> None:
    """RFC 5005 asks archive documents not to change. A new article listing archived ones as
    related shows them in its own entry, and each of them shows it as a reverse link where it
    is current (the all feed here), but their archive pages keep their bytes. What an archived
    entry shows of its own items does change it: an article it lists retitled."""
    project.config.write_text(project.config.read_text().replace("max_entries: 50", f"max_entries: {SIZE}"))
    for number in range(9):
        add(project, number, ["Energy" if number < 8 else "Oceans"])
    project.article(
        "lister.txt",
        title="Story lister",
        web_url="https://news.example.com/lister",
        topics=["Energy"],
        publishedDateTime=(datetime(2021, 1, 1, tzinfo=UTC) + timedelta(minutes=30)).isoformat(),  # page 1
        related=[{"title": "as the lister says", "webUrl": "https://news.example.com/8"}],
    )
    project.run()
    pages = lambda: {path: data for path, data in project.feed_files().items() if path.startswith("archive/")}
    before = pages()
    assert sorted(before) == ["archive/energy/1.atom", "archive/energy/2.atom"]

    # Story 99 (newest) lists story 0 (page 1) and story 4 (page 2).
    project.article(
        "new.txt",
        title="Story 99",
        web_url="https://news.example.com/99",
        topics=["Oceans"],
        publishedDateTime=datetime(2021, 2, 1, tzinfo=UTC).isoformat(),
        related=[{"webUrl": "https://news.example.com/0"}, {"webUrl": "https://news.example.com/4"}],
    )
    report = project.run()
    assert pages() == before  # same bytes, same mtimes
    # Oceans' three formats (the new entry), the all feed's (new entry, and no other: stories 0
    # and 4 are not in it), nothing else.
    assert report["feeds"]["written"] == 6, report
    assert b"Story 99" not in b"".join(data for data, _ in before.values())

    # Story 8, which the lister lists, retitled: the lister's page shows the new title.
    project.article(
        "a008.txt",
        title="Story 8, retitled",
        web_url="https://news.example.com/8",
        topics=["Oceans"],
        publishedDateTime=(datetime(2021, 1, 1, tzinfo=UTC) + timedelta(hours=8)).isoformat(),
    )
    project.run()
    after = pages()
    assert after["archive/energy/2.atom"] == before["archive/energy/2.atom"]
    assert after["archive/energy/1.atom"] != before["archive/energy/1.atom"]
    assert b"Story 8, retitled" in after["archive/energy/1.atom"][0]
    assert b"as the lister says" not in after["archive/energy/1.atom"][0]


def test_pages_follow_the_topic_when_articles_go_and_come_back_when_deleted(tmp_path: Path) -> None:
    project = make_project(tmp_path, feeds={"max_entries": SIZE})
    for number in range(10):
        add(project, number, ["Energy"])
    (project.feeds / "archive" / "energy").mkdir(parents=True)
    foreign = project.feeds / "archive" / "energy" / "notes.txt"
    foreign.write_text("<feed/>")  # not a page name: not feedworker's
    project.run()
    assert sorted(path.name for path in (project.feeds / "archive" / "energy").iterdir()) == [
        "1.atom",
        "2.atom",
        "3.atom",
        "notes.txt",
    ]
    first = project.feed("archive/energy/1.atom")

    (project.feeds / "archive" / "energy" / "1.atom").unlink()  # a page lost: the next run puts it back
    assert project.run()["feeds"]["written"] == 1
    assert project.feed("archive/energy/1.atom") == first
    assert project.run()["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}

    for number in range(6, 10):  # 6 entries left: one page
        (project.inbox / f"a{number:03d}.txt").unlink()
    report = project.run()
    assert report["feeds"]["removed"] == 2
    assert sorted(path.name for path in (project.feeds / "archive" / "energy").iterdir()) == ["1.atom", "notes.txt"]
    assert project.feed("archive/energy/1.atom") == first  # its entries did not change
    assert foreign.read_text() == "<feed/>"

    for number in range(6):  # the topic gone: its pages go with its feeds
        (project.inbox / f"a{number:03d}.txt").unlink()
    project.run()
    assert sorted(path.name for path in (project.feeds / "archive" / "energy").iterdir()) == ["notes.txt"]
    assert project.run()["feeds"] == {"written": 0, "unchanged": 0, "removed": 0}  # nothing left to tidy
