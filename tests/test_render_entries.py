"""Entries are built once and shared by every feed that shows them (publish.render): a feed
rendered from entries built for other feeds, formats or cycles has the bytes of one rendered
from scratch."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from lxml import etree

from worker.model import RelatedLink
from worker.publish import render
from worker.publish._memo import SegmentedMemo
from worker.publish.history import FeedHistory
from worker.publish.render import Entry, FeedInfo, render_archive, render_feeds

T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)


def entries() -> list[Entry]:
    made = []
    for number in range(12):
        made.append(
            Entry(
                id=f"urn:uuid:00000000-0000-0000-0000-{number:012d}",
                link=f"https://news.test/{number}",
                title=f"Title {number} <b>&amp; \u201cquoted\u201d",
                published=T0 - timedelta(hours=number),
                updated=T0 - timedelta(hours=number, minutes=-5 * (number % 3)),
                summary="" if number % 4 == 0 else f"Excerpt {number} & more",
                content_html=f"<p>Body {number}</p>",
                has_body=number % 5 != 0,
                provider=None if number % 3 == 0 else f"Provider {number % 2}",
                categories=("AI", "Machine Learning")[: number % 3],
                image_url=f"https://img.test/{number}.png" if number % 2 else None,
                image_width=640 if number % 4 == 1 else None,
                image_height=480 if number % 4 == 1 else None,
                related=tuple(
                    RelatedLink(f"https://news.test/{other}", f"Other {other}", "P") for other in range(number % 3)
                ),
            )
        )
    return made


def info(stem: str, *, full_content: bool = True, history: FeedHistory | None = None) -> FeedInfo:
    return FeedInfo(
        id=f"urn:test:{stem}",
        title=f"Feed {stem}",
        subtitle="About it",
        home_url="https://feeds.test/",
        rss_url=f"https://feeds.test/{stem}.rss",
        atom_url=f"https://feeds.test/{stem}.atom",
        json_url=f"https://feeds.test/{stem}.json",
        full_content=full_content,
        history=history or FeedHistory(),
    )


def forget_built() -> None:
    render._BUILT = SegmentedMemo(render.BUILT_KEPT, render.BUILT_PASSING)


def from_scratch(call, *args):
    forget_built()
    return call(*args)


def test_feeds_sharing_entries_have_the_bytes_of_feeds_rendered_from_scratch() -> None:
    shown = entries()
    topic = info("topics/ai")
    archive = info("archive/ai/1", history=FeedHistory(archive=True, current_url="https://feeds.test/topics/ai.atom"))
    summary_only = info("all", full_content=False)
    expected = {
        "topic": from_scratch(render_feeds, topic, shown, T0),
        "archive": from_scratch(render_archive, archive, shown[3:], T0),
        "summary": from_scratch(render_feeds, summary_only, shown[::2], T0),
    }
    forget_built()
    # One after another, each finding the others' entries built: the same bytes, every time.
    for _ in range(2):
        assert render_feeds(topic, shown, T0) == expected["topic"]
        assert render_archive(archive, shown[3:], T0) == expected["archive"]
        assert render_feeds(summary_only, shown[::2], T0) == expected["summary"]
    assert len(render._BUILT) == len(shown) + len(shown[::2])  # each built once: full, and summary only
    # The shared entry's elements are copies: each document holds all of its entries.
    rss, atom, _ = render_feeds(topic, shown, T0)
    assert len(etree.fromstring(atom).findall("{http://www.w3.org/2005/Atom}entry")) == len(shown)
    assert len(etree.fromstring(rss).findall("channel/item")) == len(shown)
    # Summary only: the same entry built without its content, not the full one reused.
    assert b"<content" not in render_feeds(summary_only, shown, T0)[1]
    assert b"<content" in render_feeds(topic, shown, T0)[1]


def test_archive_pages_passing_through_never_push_a_current_feeds_entries_out() -> None:
    memo: SegmentedMemo[int, str] = SegmentedMemo(kept=3, passing=2)
    for key in (1, 2, 3):
        memo.put(key, f"current {key}", keep=True)
    for key in range(100, 110):  # a topic's history, page after page
        memo.put(key, f"archive {key}", keep=False)
        memo.get(2, keep=False)  # an archive page showing a current entry leaves it kept
    assert [memo.get(key, keep=True) for key in (1, 2, 3)] == ["current 1", "current 2", "current 3"]
    assert memo.get(100, keep=False) is None and memo.get(109, keep=False) == "archive 109"
    assert memo.get(108, keep=True) == "archive 108"  # now shown by a current feed: kept
    memo.put(200, "archive 200", keep=False)
    memo.put(201, "archive 201", keep=False)
    assert memo.get(108, keep=False) == "archive 108"
    assert memo.get(1, keep=True) is None  # the kept part holds 3, least recently used out
    assert len(memo) == 5


def test_an_archive_page_extended_with_newer_entries_has_the_bytes_of_the_page_rendered_whole() -> None:
    """The newest archive page gains the entries leaving the current feed: its document is
    extended (render.extend_archive), and must be byte for byte the page rendered whole, with
    entries of every shape (no content, no provider, images, related links, markup in text,
    an entry newer in `updated` than the ones added)."""
    from worker.publish.render import archive_updated, extend_archive

    shown = entries()  # newest first
    shown[-1] = dataclasses.replace(shown[-1], updated=T0 + timedelta(hours=1))  # the oldest, edited last
    page = info("archive/ai/3", history=FeedHistory(archive=True, current_url="https://feeds.test/topics/ai.atom"))
    for held in range(1, len(shown)):
        older, newer = shown[held:], shown[:held]
        old = from_scratch(render_archive, page, older, max(entry.updated for entry in older))
        before = archive_updated(old)
        assert before == max(entry.updated for entry in older)
        whole_updated = max(entry.updated for entry in shown)
        head = render_archive(page, newer, max(max(entry.updated for entry in newer), before))
        assert extend_archive(old, head) == from_scratch(render_archive, page, shown, whole_updated), held
    assert extend_archive(b"<feed/>", head) is None  # not a page it knows: rendered whole by the caller
