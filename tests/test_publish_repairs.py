"""What a cycle killed part-way through publishing leaves, the next working cycle repairs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import make_project


def test_an_index_a_killed_cycle_left_without_a_new_topic_gets_it_next_run(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["Energy"])
    project.run()
    before = project.feed("index.opml")
    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["Oceans"])
    project.run()
    assert b"topics/oceans" in project.feed("index.opml")

    # As a kill between the new topic's feeds and the index leaves it: the index without the
    # topic, the topic's feeds written and clean, and the run row still marked running.
    (project.feeds / "index.opml").write_bytes(before)
    with sqlite3.connect(project.database) as conn:
        conn.execute("UPDATE run SET status = 'running', finished_at = NULL WHERE id = (SELECT max(id) FROM run)")
    conn.close()
    report = project.run()
    assert report["status"] == "ok"
    assert b"topics/oceans" in project.feed("index.opml")
    assert report["feeds"]["written"] == 1  # the index alone
