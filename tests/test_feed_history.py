"""RFC 5005 feed history (issue 14, item 7): complete feeds say so; longer topics get archive
pages a client walks back through with prev-archive, and the pages stay byte-stable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import both_dialects, make_project
from tests.feedcheck import ATOM, strict_parse
from worker.publish.history import archive_page_count, archive_pages, ends_page
from worker.urls import page_cut

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


def expected_pages(urls_oldest_first: list[str]) -> list[list[str]]:
    """The archive pages' articles, oldest page first, as the rule says: every article but the
    newest SIZE, a page ending after each article whose URL's cut SIZE divides."""
    pages: list[list[str]] = [[]]
    for url in urls_oldest_first[:-SIZE] if len(urls_oldest_first) > SIZE else []:
        pages[-1].append(url)
        if page_cut(url) % SIZE == 0:
            pages.append([])
    return [page for page in pages if page]


def story(number: int) -> str:
    return f"https://news.example.com/{number}"


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
        oldest_first = sorted(articles, key=lambda url: int(url.rsplit("/", 1)[1]))
        assert current == oldest_first[::-1][:SIZE]
        # Archive pages: each ends where an article's cut says, newest entry first; with the
        # current feed they hold every published article once.
        assert [page[::-1] for page in archives[::-1]] == expected_pages(oldest_first)
        assert sorted(current + [url for page in archives for url in page]) == sorted(articles)
    assert len(walk(project, "energy")) > 2 and len(walk(project, "oceans")) > 1  # pages to walk

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
def test_a_new_article_changes_the_current_feeds_and_the_newest_page_alone(project) -> None:
    """Each new article pushes the oldest entry of the current feed onto the newest page; the
    pages before it keep their bytes. A page ends after an article whose cut says so: then the
    next article starts a new page."""
    project.config.write_text(project.config.read_text().replace("max_entries: 50", f"max_entries: {SIZE}"))
    for number in range(8):
        add(project, number, ["Energy"])
    project.run()
    pages = lambda: {path: data for path, data in project.feed_files().items() if path.startswith("archive/")}
    before = pages()
    started = 0
    for number in range(8, 30):
        add(project, number, ["Energy"])
        report = project.run()
        now = pages()
        wanted = expected_pages([story(n) for n in range(number + 1)])
        assert sorted(now) == [f"archive/energy/{n}.atom" for n in range(1, len(wanted) + 1)]
        newest = f"archive/energy/{len(wanted)}.atom"
        assert {path: now[path] for path in before if path != newest} == {
            path: data for path, data in before.items() if path != newest
        }  # same bytes, same mtimes
        assert story(number - SIZE).encode() in now[newest][0]  # the entry the current feed stopped showing
        started += newest not in before
        # The current feeds (3 formats, topic and all) and the newest page: nothing else written.
        assert report["feeds"]["written"] == 7, number
        before = now
    assert started >= 2  # new pages began on the way
    walked = walk(project, "energy")
    assert {url for document in walked for url in document} == {story(n) for n in range(30)}
    # The newest page was extended article by article: the bytes of pages rendered at once.
    fresh = make_project(project.root / "fresh", feeds={"max_entries": SIZE})  # SQLite: bytes of any store
    for path in sorted(project.inbox.iterdir()):
        (fresh.inbox / path.name).write_bytes(path.read_bytes())
    fresh.run()
    assert {path: data for path, (data, _) in project.feed_files().items() if path.startswith("archive/")} == {
        path: data for path, (data, _) in fresh.feed_files().items() if path.startswith("archive/")
    }


@both_dialects()
def test_an_article_published_in_the_past_changes_the_one_page_it_lands_on(project) -> None:
    """Pages end where their own articles say, not at positions: an article dated in the past
    (its URL ending no page) joins one page and changes no other document; deleted, it leaves
    that page as it was. One that does end a page splits its page in two, and the pages after
    it take the next numbers."""
    project.config.write_text(project.config.read_text().replace("max_entries: 50", f"max_entries: {SIZE}"))
    for number in range(0, 60, 2):
        add(project, number, ["Energy"])
    project.run()
    before = project.feed_files()
    plain = next(n for n in range(1, 59, 2) if page_cut(story(n)) % SIZE and n > 10)
    add(project, plain, ["Energy"])
    report = project.run()
    after = project.feed_files()
    changed = sorted(path for path in after if after[path] != before.get(path))
    wanted = expected_pages(sorted([story(n) for n in range(0, 60, 2)] + [story(plain)], key=lambda u: int(u[25:])))
    page = next(number for number, urls in enumerate(wanted, start=1) if story(plain) in urls)
    assert changed == [f"archive/energy/{page}.atom"] and report["feeds"]["written"] == 1
    assert page < len(wanted) - 1  # not the newest pages: positions would have moved every later one

    (project.inbox / f"a{plain:03d}.txt").unlink()
    report = project.run()
    assert report["feeds"]["written"] == 1
    assert {path: data for path, (data, _) in project.feed_files().items()} == {
        path: data for path, (data, _) in before.items()
    }

    ending = next(n for n in range(1, 59, 2) if page_cut(story(n)) % SIZE == 0 and n > 10)
    add(project, ending, ["Energy"])
    project.run()
    urls = sorted([story(n) for n in range(0, 60, 2)] + [story(ending)], key=lambda u: int(u[25:]))
    assert [page[::-1] for page in walk(project, "energy")[1:][::-1]] == expected_pages(urls)


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


@given(st.lists(st.integers(0, 2**31 - 1), max_size=60), st.integers(1, 6))
def test_pages_are_counted_from_the_index_as_they_are_cut_from_the_history(cuts: list[int], size: int) -> None:
    """archive_page_count, from what the feed index counts, agrees with archive_pages, which
    cuts the whole history; the pages hold every entry but the newest `size`, in order, once."""
    newest = cuts[::-1][: size + 1]
    total_ends = sum(ends_page(cut, size) for cut in cuts)
    pages = archive_pages(cuts, size)
    assert archive_page_count(len(cuts), total_ends, newest, size) == len(pages)
    assert [index for start, stop in pages for index in range(start, stop)] == list(range(max(0, len(cuts) - size)))
    assert all(ends_page(cuts[stop - 1], size) for _, stop in pages[:-1])


@given(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=60), st.integers(1, 6), st.data())
def test_an_entry_that_ends_no_page_changes_one_page_wherever_it_lands(cuts: list[int], size: int, data) -> None:
    """Inserted anywhere before the current feed's entries, an entry that ends no page joins
    one page (a new newest one, after the last page's end) and leaves every other page as it
    was (the same entries, the same numbers)."""
    assume(len(cuts) >= size)  # an entry more, and there is an archive page
    position = data.draw(st.integers(0, len(cuts) - size))
    cut = data.draw(st.integers(0, 2**31 - 1).filter(lambda value: not ends_page(value, size)))
    entries = list(range(len(cuts)))  # entry identities, oldest first
    before = [entries[start:stop] for start, stop in archive_pages(cuts, size)]
    after_entries = [*entries[:position], -1, *entries[position:]]
    after_cuts = [*cuts[:position], cut, *cuts[position:]]
    after = [after_entries[start:stop] for start, stop in archive_pages(after_cuts, size)]
    assert len(before) <= len(after) <= len(before) + 1  # a page more when it lands after the last page's end
    changed = [number for number, page in enumerate(after) if number >= len(before) or before[number] != page]
    assert len(changed) == 1 and -1 in after[changed[0]]


def test_a_page_a_killed_cycle_wrote_without_noting_it_is_rendered_whole(tmp_path: Path) -> None:
    """A cycle killed after replacing the newest page and before noting its window leaves the
    page's new document beside the old window: the next cycle must not extend that document
    as if it held the old entries (they would show twice), but render the page whole."""
    stories = [story(n) for n in range(60)]
    count = next(
        n for n in range(8, 57) if len({len(expected_pages(stories[: n + step])) for step in range(3)}) == 1
    )  # n, n + 1 and n + 2 articles: the same pages, the newest one growing
    project = make_project(tmp_path, feeds={"max_entries": SIZE})
    for number in range(count):
        add(project, number, ["Energy"])
    project.run()
    newest = f"feed_window:archive/energy/{len(expected_pages(stories[:count]))}"
    (noted,) = project.query(f"SELECT value FROM meta WHERE key = '{newest}'")
    add(project, count, ["Energy"])
    project.run()
    project.query(f"UPDATE meta SET value = '{noted[0]}' WHERE key = '{newest}'")  # as if killed before noting
    add(project, count + 1, ["Energy"])
    project.run()
    fresh = make_project(tmp_path / "fresh", feeds={"max_entries": SIZE})
    for path in sorted(project.inbox.iterdir()):
        (fresh.inbox / path.name).write_bytes(path.read_bytes())
    fresh.run()
    pages = lambda p: {path: data for path, (data, _) in p.feed_files().items() if path.startswith("archive/")}
    assert pages(project) == pages(fresh)


def test_with_the_clock_pinned_edits_reach_the_current_feeds_and_the_archive_pages(tmp_path: Path) -> None:
    """FEEDWORKER_CLOCK pins every cycle's time (reproducible output). An edit then leaves the
    article's `updated_at` and `content_at` as they were; the run table says the clock
    stalled, and the dirty topics' feeds and pages are rendered regardless: the same bytes as
    one run of a new store on the final files."""
    pinned = {"FEEDWORKER_CLOCK": "2026-11-29T12:00:00+00:00"}
    project = make_project(tmp_path, feeds={"max_entries": SIZE})
    for number in range(8):
        add(project, number, ["Energy"])
    project.cli("run", env=pinned)
    for number in (0, 7):  # on the first archive page, and in the current feed
        project.article(
            f"a{number:03d}.txt",
            title=f"Story {number}, edited",
            web_url=story(number),
            topics=["Energy"],
            publishedDateTime=(datetime(2021, 1, 1, tzinfo=UTC) + timedelta(hours=number)).isoformat(),
        )
    project.cli("run", env=pinned)
    assert b"Story 0, edited" in project.feed("archive/energy/1.atom")
    assert b"Story 7, edited" in project.feed("topics/energy.atom")
    fresh = make_project(tmp_path / "fresh", feeds={"max_entries": SIZE})
    for path in sorted(project.inbox.iterdir()):
        (fresh.inbox / path.name).write_bytes(path.read_bytes())
    fresh.cli("run", env=pinned)
    assert {path: data for path, (data, _) in project.feed_files().items()} == {
        path: data for path, (data, _) in fresh.feed_files().items()
    }
