"""A feed's own time (Atom `updated`, RSS `lastBuildDate`) is when its entries last changed."""

from __future__ import annotations

from pathlib import Path

import yaml
from lxml import etree

from tests.conftest import make_project

ATOM = "{http://www.w3.org/2005/Atom}"


def feed_times(project) -> tuple[str, str, str]:
    atom = etree.fromstring(project.feed("all.atom"))
    rss = etree.fromstring(project.feed("topics/energy.rss"))
    newest = atom.find(f"{ATOM}entry").findtext(f"{ATOM}title")
    return atom.findtext(f"{ATOM}updated"), rss.find("channel").findtext("lastBuildDate"), newest


def test_a_feed_s_time_is_its_last_change_never_its_build(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    for index, day in enumerate(("10", "11", "12")):
        project.article(
            f"{index}.txt",
            title=f"Story {day}",
            web_url=f"https://a.example/{day}",
            topics=["Energy"],
            publishedDateTime=f"2021-01-{day}T08:00:00Z",
        )
    env = {"FEEDWORKER_CLOCK": "2026-11-01T10:00:00+00:00"}
    project.cli("run", env=env)
    first = feed_times(project)
    assert first[0] == "2026-11-01T10:00:00+00:00" and first[1] == "Sun, 01 Nov 2026 10:00:00 +0000"
    files = project.feed_files()

    for hour in range(11, 21):  # ten reruns, nothing changed: the same bytes, not even rewritten
        project.cli("run", env={"FEEDWORKER_CLOCK": f"2026-11-02T{hour}:00:00+00:00"})
        assert project.feed_files() == files

    # The oldest article goes: the newest entry stays, the feed's time moves.
    (project.inbox / "0.txt").unlink()
    project.cli("run", env={"FEEDWORKER_CLOCK": "2026-11-03T09:30:00+00:00"})
    after = feed_times(project)
    assert after[2] == first[2] == "Story 12"
    assert after[0] == "2026-11-03T09:30:00+00:00" and after[1] == "Tue, 03 Nov 2026 09:30:00 +0000"

    # Rendered again for another reason (a new title): the entries did not change, nor their time.
    config = yaml.safe_load(project.config.read_text())
    config["feeds"]["title"] = "Renamed News"
    project.config.write_text(yaml.safe_dump(config))
    project.cli("run", env={"FEEDWORKER_CLOCK": "2026-11-04T09:00:00+00:00"})
    assert b"Renamed News" in project.feed("all.atom")
    assert feed_times(project)[:2] == after[:2]
