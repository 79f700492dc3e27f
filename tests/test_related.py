"""The related graph: the pure link builder, and its store queries (bulk, incremental)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.conftest import article_text
from worker.ingest.frontmatter import parse_article
from worker.model import Ingested, LinkedArticle, PageMetadata, RelatedItem, RelatedLink
from worker.publish.links import related_links
from worker.publish.sanitize import plain_text
from worker.store import articles as article_store
from worker.store import feeds as feed_store
from worker.store import files as file_store
from worker.store import pages
from worker.store import related as graph_store
from worker.store import topics as topic_store
from worker.store.db import connect, migrate, transaction

T0 = datetime(2021, 1, 1, tzinfo=UTC)
OWN = "https://own.example/story"


def given_item(url: str, title: str | None = None, provider: str | None = None) -> RelatedItem:
    """A related item as a file gives it: its canonical URL, a title and a provider name."""
    return RelatedItem(url, url, title, provider_name=provider)


def stored(url: str, title: str, day: int = 1, provider: str | None = "Stored") -> LinkedArticle:
    return LinkedArticle(url, title, provider, T0 + timedelta(days=day))


# ------------------------------------------------------------------ pure


def test_given_items_come_first_in_file_order_then_reverse_links_newest_first():
    given = [given_item("https://b.example/1", "B one"), given_item("https://a.example/1", "A one")]
    linking = [
        stored("https://old.example/x", "Old", 1),
        stored("https://new.example/x", "New", 9),
        stored("https://mid.example/x", "Mid", 5),
        stored("https://amid.example/x", "Also mid", 5),
    ]
    links = related_links(OWN, given, linking, {}, {})
    assert [link.title for link in links] == ["B one", "A one", "New", "Also mid", "Mid", "Old"]


def test_never_itself_and_never_twice():
    given = [
        given_item(OWN, "Me"),
        given_item("https://b.example/1", "B"),
        given_item("https://b.example/1", "B again"),
    ]
    linking = [stored(OWN, "Me"), stored("https://b.example/1", "B stored"), stored("https://c.example/1", "C")]
    stored_by_url = {"https://b.example/1": stored("https://b.example/1", "B stored")}
    links = related_links(OWN, given, linking, stored_by_url, {})
    assert [link.url for link in links] == ["https://b.example/1", "https://c.example/1"]
    assert links[0].title == "B stored"  # the stored article links as itself, at the given position


def test_a_stored_article_shows_its_own_title_and_provider():
    given = [given_item("https://b.example/1", "Headline as the other outlet wrote it", "Aggregator")]
    links = related_links(
        OWN, given, [], {"https://b.example/1": stored("https://b.example/1", "Real", provider="B News")}, {}
    )
    assert links == (RelatedLink("https://b.example/1", "Real", "B News"),)
    # no provider stored: the item's is better than none
    links = related_links(
        OWN, given, [], {"https://b.example/1": stored("https://b.example/1", "Real", provider=None)}, {}
    )
    assert links == (RelatedLink("https://b.example/1", "Real", "Aggregator"),)


def test_missing_titles_fall_back_to_fetched_metadata_then_the_host_name():
    given = [
        given_item("https://fetched.example/a"),
        given_item("https://given.example/a", "Given title"),
        given_item("https://www.nothing.example:8443/a"),
        given_item("https://markup.example/a", "<b></b>"),
    ]
    pages = {
        "https://fetched.example/a": PageMetadata(title="Fetched title", site_name="Fetched Site"),
        "https://given.example/a": PageMetadata(title="Page title", site_name="Page Site"),
    }
    links = related_links(OWN, given, [], {}, pages, clean=plain_text)
    assert links == (
        RelatedLink("https://fetched.example/a", "Fetched title", "Fetched Site"),
        RelatedLink("https://given.example/a", "Given title", "Page Site"),
        RelatedLink("https://www.nothing.example:8443/a", "www.nothing.example", None),
        RelatedLink("https://markup.example/a", "markup.example", None),  # nothing left once cleaned
    )


def test_reverse_links_are_capped_newest_kept():
    linking = [stored(f"https://x.example/{n}", f"X{n}", n) for n in range(10)]
    links = related_links(OWN, [], linking, {}, {}, max_reverse=3)
    assert [link.title for link in links] == ["X9", "X8", "X7"]


def test_the_result_does_not_depend_on_input_order():
    linking = [stored(f"https://x.example/{n}", f"X{n}", n % 3) for n in range(9)]
    assert related_links(OWN, [], linking, {}, {}) == related_links(OWN, [], linking[::-1], {}, {})


# ------------------------------------------------------------------ store


class Store:
    """A real SQLite store, written through the same batch writer as a run."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.statements = 0
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args: object) -> None:
        self.statements += 1

    def write(self, now: datetime, *articles: dict) -> None:
        with transaction(self.engine) as conn:
            known = file_store.known_files(conn)
            items = []
            for fields in articles:
                path = f"/inbox/{fields['web_url'].rsplit('/', 1)[1]}.txt"
                data = article_text(**fields).encode()
                parsed = parse_article(data, path)
                items.append(Ingested.of_article(path, len(data), 1, str(hash(data)), parsed))
            article_store.write_batch(conn, items, known, topic_store.TopicRegistry(conn), now)

    def propagate(self, now: datetime) -> int:
        self.statements = 0
        with transaction(self.engine) as conn:
            changed = graph_store.changed_articles(conn, now)
            touched = graph_store.propagate_changes(conn, changed, now)
            pages.enqueue(conn, changed.ids, changed.gone_urls, now)
            return touched

    def query(self, sql: str) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]

    def clean(self) -> None:
        with transaction(self.engine) as conn:
            conn.execute(sa.text("update topic set dirty = 0"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    engine = connect(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield Store(engine)
    engine.dispose()


def related(*urls: str) -> list[dict]:
    return [{"webUrl": url} for url in urls]


def test_a_new_article_touches_what_it_lists_and_what_lists_it(db: Store):
    db.write(
        T0,
        {
            "title": "A",
            "web_url": "https://a.example/a",
            "topics": ["Space"],
            "related": related("https://c.example/c"),
        },
        {"title": "B", "web_url": "https://a.example/b", "topics": ["Sport"]},
        {"title": "Other", "web_url": "https://a.example/o", "topics": ["Other"]},
    )
    assert db.propagate(T0) == 0  # all of them are new: nothing else to touch
    db.clean()
    later = T0 + timedelta(hours=1)
    db.write(
        later,
        {"title": "C", "web_url": "https://c.example/c", "topics": ["AI"], "related": related("https://a.example/b")},
    )
    assert db.propagate(later) == 2
    assert db.query(
        "select title from article where updated_at = (select max(updated_at) from article) order by title"
    ) == [("A",), ("B",), ("C",)]
    # A's own item (C) shows differently, in its archived entry too; B only gains a reverse link,
    # which archive pages leave out: its content_at stays.
    assert db.query(
        "select title from article where content_at = (select max(content_at) from article) order by title"
    ) == [("A",), ("C",)]
    assert db.query("select name from topic where dirty order by name") == [("AI",), ("Space",), ("Sport",)]


def test_an_edit_dropping_an_item_touches_the_article_it_pointed_at(db: Store):
    db.write(
        T0,
        {"title": "A", "web_url": "https://a.example/a", "topics": ["Space"]},
        {"title": "C", "web_url": "https://a.example/c", "topics": ["AI"], "related": related("https://a.example/a")},
    )
    db.propagate(T0)
    db.clean()
    later = T0 + timedelta(hours=1)
    db.write(later, {"title": "C", "web_url": "https://a.example/c", "topics": ["AI"], "excerpt": "edited, no related"})
    assert db.propagate(later) == 1
    assert db.query("select name from topic where dirty order by name") == [("AI",), ("Space",)]
    # nothing changed since: nothing to touch
    db.clean()
    assert db.propagate(later + timedelta(hours=1)) == 0
    assert db.query("select name from topic where dirty") == []


def test_propagation_catches_up_on_changes_a_failed_run_left(db: Store):
    db.write(T0, {"title": "A", "web_url": "https://a.example/a", "topics": ["Space"]})
    db.propagate(T0)
    crashed = T0 + timedelta(hours=1)
    db.write(
        crashed,
        {"title": "C", "web_url": "https://a.example/c", "topics": ["AI"], "related": related("https://a.example/a")},
    )
    db.clean()  # as if the crashed run published, but never propagated
    assert db.propagate(crashed + timedelta(hours=1)) == 1


def test_propagation_and_graph_reads_are_bulk(db: Store):
    hub = "https://a.example/hub"
    articles = [
        {
            "title": f"N{n}",
            "web_url": f"https://a.example/n{n}",
            "topics": [f"T{n % 5}"],
            "related": related(hub, *(f"https://x.example/{n}/{k}" for k in range(20))),
        }
        for n in range(120)
    ]
    db.write(T0, {"title": "Hub", "web_url": hub, "topics": ["Hub"]}, *articles)
    db.propagate(T0)
    later = T0 + timedelta(hours=1)
    db.write(later, {"title": "Hub v2", "web_url": hub, "topics": ["Hub"]})
    assert db.propagate(later) == 120
    assert db.statements <= 20  # a handful per chunk of changed articles, not per article

    with db.engine.connect() as conn:
        hub_id = conn.execute(sa.text("select id from article where title = 'Hub v2'")).scalar_one()
        ids = [id_ for id_, _ in feed_store.feed_window(conn, None, 49)] + [hub_id]
        entries = feed_store.articles_by_ids(conn, ids)
        db.statements = 0
        graph = graph_store.load_graph(
            conn, {e.article.url for e in entries.values()}, {i.url for e in entries.values() for i in e.related}
        )
    assert db.statements <= 6
    assert len(graph.linking[hub]) == 120
    assert graph.stored[hub].title == "Hub v2"


def test_pages_are_queued_for_items_lacking_metadata_and_forgotten_when_no_longer_asked_for(db: Store):
    full = {"title": "Full", "excerpt": "Said", "images": [{"url": "https://img.example/i.jpg"}]}
    db.write(
        T0,
        {
            "title": "A",
            "web_url": "https://a.example/a",
            "related": [
                {"webUrl": "https://x.example/untitled"},
                {"webUrl": "https://x.example/full", **full},
                {"webUrl": "https://a.example/b"},
            ],
        },
        {"title": "B", "web_url": "https://a.example/b"},
        {
            "title": "Draft",
            "web_url": "https://a.example/d",
            "published": False,
            "related": [{"webUrl": "https://x.example/draft-only"}],
        },
    )
    db.propagate(T0)
    assert db.query("select url, status from page") == [("https://x.example/untitled", "pending")]
    with db.engine.connect() as conn:
        assert pages.due_urls(conn, T0, 3600, 10) == ["https://x.example/untitled"]
        assert pages.page_counts(conn, T0, 3600) == {"fetched": 0, "cached": 0, "failed": 0, "pending": 1}

    later = T0 + timedelta(hours=1)
    db.write(
        later,
        {"title": "A", "web_url": "https://a.example/a", "related": [{"webUrl": "https://x.example/untitled", **full}]},
    )
    db.propagate(later)
    with transaction(db.engine) as conn:
        assert pages.prune(conn, later, 3600) == 1
        assert pages.due_urls(conn, later, 3600, 10) == []


def test_one_process_renders_every_change_of_an_entrys_inputs_across_cycles(tmp_path: Path) -> None:
    """`serve` keeps built entries across its cycles (publish.feeds._EntryMemo): a neighbour's
    new title, a new reverse link and an edit of the article itself each show in the next
    cycle of the same process, exactly as a fresh process renders them."""
    from tests.conftest import make_project
    from worker.config import load_config
    from worker.pipeline import run_cycle

    project = make_project(tmp_path / "p")
    b_url, c_url = "https://news.example.com/b", "https://news.example.com/c"
    project.article(
        "a.txt", title="Alpha", web_url="https://news.example.com/a", related=[{"title": "B?", "webUrl": b_url}]
    )
    project.article("b.txt", title="Beta", web_url=b_url)
    config = load_config(project.config)
    run_cycle(config)
    assert b"Beta" in project.feed("all.atom")

    project.article("b.txt", title="Beta renamed", web_url=b_url)  # a's related link shows b's title
    run_cycle(config)
    in_process = project.feed("all.atom")
    assert in_process.count(b"Beta renamed") >= 2  # b's own entry and a's link to it

    project.article("c.txt", title="Gamma", web_url=c_url, related=[{"title": "to b", "webUrl": b_url}])
    run_cycle(config)  # b gains a reverse link to c
    project.article(
        "a.txt", title="Alpha edited", web_url="https://news.example.com/a", related=[{"title": "B?", "webUrl": b_url}]
    )
    run_cycle(config)
    fresh = make_project(tmp_path / "fresh")
    for path in sorted(project.inbox.iterdir()):
        (fresh.inbox / path.name).write_bytes(path.read_bytes())
    fresh.run()
    assert b"Alpha edited" in project.feed("all.atom")
    strip = lambda body: [
        line
        for line in body.splitlines()
        if not any(stamp in line for stamp in (b"updated>", b"lastBuildDate", b"date_modified"))
    ]
    for name in ("all.atom", "all.rss", "all.json"):
        assert strip(project.feed(name)) == strip(fresh.feed(name)), name


@pytest.mark.parametrize("neighbour_topics", [1, 20], ids=["one-process", "with-the-helper-process"])
def test_the_feeds_of_a_changed_articles_topics_are_written_before_its_neighbours(
    tmp_path: Path, neighbour_topics: int
) -> None:
    """A new article's own topic feeds (the Atom of each, then their other formats), then the
    all feed, come before the feeds that change only because a neighbour gains a reverse link
    to it (a reader, and `serve`'s watcher, waits for the first); the archive pages after
    every current feed. With enough feeds due for a helper process to render half of them,
    the first ones stay in this process."""
    import json

    from tests.conftest import make_project
    from worker.publish.feeds import PARALLEL_FROM

    assert neighbour_topics == 1 or neighbour_topics + 2 >= PARALLEL_FROM
    project = make_project(tmp_path / "p")
    b_url = "https://news.example.com/b"
    # "Aardvarks ..." are listed (and stored) before "Zebras": the order of the store alone
    # would write the neighbour's feeds first.
    project.article("b.txt", title="Beta", web_url=b_url, topics=[f"Aardvarks {n}" for n in range(neighbour_topics)])
    project.run()
    project.article(
        "c.txt",
        title="Gamma",
        web_url="https://news.example.com/c",
        topics=["Zebras", "Yaks"],
        related=[{"title": "to b", "webUrl": b_url}],
        publishedDateTime="2021-01-27T08:00:00Z",
    )
    result = project.cli("run", "--json")
    written = [
        event["feed"]
        for event in (json.loads(line) for line in result.stderr.splitlines() if line.startswith("{"))
        if event["event"] == "feed.written" and event["feed"] != "index.opml"
    ]
    assert sorted(written[:2]) == ["topics/yaks.atom", "topics/zebras.atom"], written
    others = ["topics/yaks.json", "topics/yaks.rss", "topics/zebras.json", "topics/zebras.rss"]
    assert sorted(written[2:6]) == others, written
    assert written[6:9] == ["all.rss", "all.atom", "all.json"], written
    # b's entry now links back to c: every one of its topics' feeds, after.
    assert sorted(written[9:]) == sorted(
        f"topics/aardvarks-{n}.{kind}" if neighbour_topics > 1 else f"topics/aardvarks-0.{kind}"
        for n in range(neighbour_topics)
        for kind in ("rss", "atom", "json")
    ), written


def test_a_process_with_its_clock_pinned_never_renders_an_entry_it_built_before_an_edit(tmp_path: Path) -> None:
    """Entries are kept by article version (its updated_at); with FEEDWORKER_CLOCK pinned every
    cycle writes at the same time, so a version says nothing: the next cycle builds again."""
    from tests.conftest import make_project
    from worker.config import load_config
    from worker.pipeline import run_cycle

    project = make_project(tmp_path / "p")
    pinned = datetime(2026, 11, 29, 12, tzinfo=UTC)
    project.article("a.txt", title="Alpha", web_url="https://news.example.com/a")
    config = load_config(project.config)
    run_cycle(config, clock=lambda: pinned)
    assert b"Alpha" in project.feed("all.atom")
    project.article("a.txt", title="Alpha edited", web_url="https://news.example.com/a")
    # A new article too: the all feed's window moves (the edit alone keeps the pinned time).
    project.article("b.txt", title="Beta", web_url="https://news.example.com/b")
    run_cycle(config, clock=lambda: pinned)
    assert b"Alpha edited" in project.feed("all.atom") and b"Beta" in project.feed("all.atom")
