"""An entry keeps its id when its article's URL changes (issue 14, item 1): one entry in a reader."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import feedparser

from tests.conftest import make_project


def entries(project, feed: str) -> list[dict]:
    parsed = feedparser.parse(project.feed(feed))
    assert not parsed.bozo, parsed.bozo_exception
    return parsed.entries


def run_at(project, moment: str) -> dict:
    import json

    return json.loads(project.cli("run", "--json", env={"FEEDWORKER_CLOCK": moment}).stdout)


def the_entry(project) -> tuple[str, str, str, str]:
    """(Atom id, RSS guid, Atom published, Atom updated) of the one entry of the all feeds,
    once the JSON Feed's item is checked to say the same."""
    import json

    atom, rss = entries(project, "all.atom"), entries(project, "all.rss")
    items = json.loads(project.feed("all.json"))["items"]
    assert len(atom) == 1 and len(rss) == 1 and len(items) == 1, [entry.link for entry in atom]
    assert items[0]["id"] == atom[0].id
    assert (items[0]["date_published"], items[0]["date_modified"]) == (atom[0].published, atom[0].updated)
    return atom[0].id, rss[0].id, atom[0].published, atom[0].updated


def test_an_entry_keeps_its_id_when_its_url_is_edited(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    path = project.article(
        "story.txt",
        title="Ministers agree on a plan",
        web_url="http://news.example.com/2021/01/ministers-agree",
        publishedDateTime="2021-01-26T22:12:00Z",
    )
    run_at(project, "2026-11-01T10:00:00+00:00")
    first_id, first_guid, published, updated = the_entry(project)
    assert first_id == first_guid and published == updated

    edits = [
        ("http://news.example.com/2021/01/ministers-agree", "http://news.example.com/2021/01/ministers-agree-on-plan"),
        ("http://news.example.com", "https://news.example.com"),  # http -> https
        ("ministers-agree-on-plan", "ministers-agree-on-plan?utm_source=newsletter&utm_medium=email"),
    ]
    for hour, (before, after) in enumerate(edits, start=11):
        path.write_text(path.read_text().replace(before, after, 1))
        report = run_at(project, f"2026-11-01T{hour}:00:00+00:00")
        assert report["status"] == "ok"
        entry_id, guid, now_published, now_updated = the_entry(project)
        assert entry_id == guid == first_id  # the same id in RSS, Atom and JSON Feed, after every edit
        assert now_published == published  # published unchanged
        assert datetime.fromisoformat(now_updated) > datetime.fromisoformat(now_published)
    assert report["articles"] == {"total": 1, "published": 1}


def test_a_file_s_own_id_wins_and_follows_it_to_another_file(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    first = project.article("a.txt", title="Budget vote", web_url="https://news.example.com/budget", id="story-4711")
    run_at(project, "2026-11-01T10:00:00+00:00")
    given, _, published, _ = the_entry(project)
    assert given.startswith("urn:uuid:")

    # The story moves to another file, under another URL: the id goes with it.
    first.unlink()
    project.article(
        "b.txt", title="Budget vote passes", web_url="https://news.example.com/budget-passes", id="story-4711"
    )
    run_at(project, "2026-11-01T11:00:00+00:00")
    assert the_entry(project)[0] == given
    assert the_entry(project)[2] == published

    # Without an id, the same two steps give a new entry (another article, another id).
    project.article("c.txt", title="Another", web_url="https://news.example.com/another")
    run_at(project, "2026-11-01T12:00:00+00:00")
    ids = {entry.id for entry in entries(project, "all.atom")}
    assert given in ids and len(ids) == 2
