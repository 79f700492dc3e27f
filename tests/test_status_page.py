"""GET /status, the operator page of `serve`: the figures of `status --json` and /metrics, the last
100 runs as inline SVG, escaped text, no secret; checked over HTTP and in headless Chromium."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import test_index_page
from tests.conftest import article_text, both_dialects, run_cli, store_database, store_rows
from tests.service_helpers import Service, free_port, wait_for, write_config
from tests.test_index_page import CSP, _contrast, png_size

TOKEN = "tok-Status-Page-Secret-4f2a9c"
PASSWORD = "pw-Status-Page-Secret-9b1e"  # PostgreSQL's test server trusts root: a password it never checks
# A file whose path is markup: a folder `<script>alert(1)<` holding `script>.txt`.
HOSTILE_PATH = "<script>alert(1)</script>.txt"
HOSTILE_MESSAGE = '<script>alert("run")</script> & <img src=x onerror=alert(2)>'
WATCH_STATES = ("off", "starting", "watching", "limited", "failed")
browser = test_index_page.chromium  # the fixture: headless Chromium kept on this machine (its flags)


def tree(body: bytes | str) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(body)


def shown(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def figure(root: lxml.html.HtmlElement, element_id: str) -> str:
    found = root.get_element_by_id(element_id)
    return shown(found)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def run_marks(root: lxml.html.HtmlElement) -> list[lxml.html.HtmlElement]:
    svg = root.find(".//svg")
    assert svg is not None, "no chart"
    return [g for g in svg.iter("g") if "run" in (g.get("class") or "").split()]


@dataclass
class Served:
    service: Service
    root: Path
    config: Path

    def status_json(self) -> dict:
        return json.loads(run_cli("status", "--json", "--config", str(self.config)).stdout)

    def cycle(self) -> dict:
        """One run asked for over HTTP, waited for: its request document."""
        accepted = self.service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert accepted.status_code == 202, accepted.text
        run_id = accepted.json()["run_id"]
        return wait_for(
            lambda: (r := self.service.get(f"/runs/{run_id}").json())["status"] in ("ok", "failed") and r,
            60,
            f"run {run_id} to end",
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dialect: str) -> Iterator[Served]:
    """`serve` (no watcher: the test's cycles are the only ones) after four cycles: the first
    with a quarantined file whose path is markup, one more article, a failed one (the source
    folder gone), and one ok again."""
    root = tmp_path_factory.mktemp("status")
    inbox = root / "inbox"
    for index, topic in enumerate(("AI", "Space", "AI")):
        (inbox / f"a{index}.txt").parent.mkdir(parents=True, exist_ok=True)
        (inbox / f"a{index}.txt").write_text(
            article_text(title=f"Story {index}", web_url=f"https://news.example.test/{index}", topics=[topic]),
            encoding="utf-8",
        )
    hostile = inbox / HOSTILE_PATH
    hostile.parent.mkdir(parents=True)
    hostile.write_text("---\ntitle: [not, a, title\n---\n", encoding="utf-8")  # invalid YAML: quarantined
    port = free_port()
    with store_database(dialect) as database:
        if database is not None:
            database = database.replace("://root@", f"://root:{PASSWORD}@")
        config = write_config(
            root,
            port=port,
            database=database,
            server={"token": TOKEN},
            watch=False,
            enrich={"fetch": False},
        )
        with Service(config, port) as service:
            service.wait_healthy(60)
            served = Served(service, root, config)
            (inbox / "a3.txt").write_text(
                article_text(title="Story 3", web_url="https://news.example.test/3", topics=["Space"]),
                encoding="utf-8",
            )
            assert served.cycle()["status"] == "ok"
            inbox.rename(root / "away")
            assert served.cycle()["status"] == "failed"
            (root / "away").rename(inbox)
            assert served.cycle()["status"] == "ok"
            yield served


@both_dialects()
def test_the_page_shows_the_figures_of_status_json_and_metrics(served: Served):
    response = served.service.get("/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    root = tree(response.content)
    status = served.status_json()
    metrics = served.service.get("/metrics").text

    # The chart: one mark per run that ended, in order, the failed one marked, each with its tooltip.
    runs = status["recent_runs"]
    assert [run["status"] for run in runs] == ["ok", "ok", "failed", "ok"]
    marks = run_marks(root)
    assert [int(g.get("data-run-id")) for g in marks] == [run["run_id"] for run in runs]
    assert ["failed" in g.get("class").split() for g in marks] == [False, False, True, False]
    for mark, run in zip(marks, runs, strict=True):
        title = shown(mark.find("title"))
        assert title.startswith(f"Run {run['run_id']}: {run['status']}")
        assert f"{run['files']['new']} new, {run['files']['changed']} changed" in title
        assert f"{run['feeds_written']} feeds written" in title
    # The first run read four files: its bar of new files is the tallest; the failed run has none.
    new_heights = [sum(float(r.get("height")) for r in g.iter("rect") if r.get("class") == "new") for g in marks]
    assert new_heights[0] > new_heights[1] > 0 and new_heights[2] == 0
    assert [run["files"]["new"] for run in runs][:2] == [4, 1]
    rows = root.get_element_by_id("runs-table").findall(".//tbody/tr")
    assert [int(row.get("data-run-id")) for row in rows] == [run["run_id"] for run in reversed(runs)]

    # The last run: the store's report, and this process's /metrics gauges (it ran it).
    last = status["last_run"]
    assert figure(root, "last-run-id") == str(last["run_id"]) == str(runs[-1]["run_id"])
    assert figure(root, "last-run-status") == "ok"
    for state in ("new", "changed", "unchanged", "deleted", "quarantined"):
        shown_count = int(figure(root, f"last-run-files-{state}"))
        assert shown_count == last["files"][state] == metric(metrics, "feedworker_files", state=state), state
    assert last["files"]["quarantined"] == 1
    assert int(figure(root, "last-run-feeds-written")) == last["feeds"]["written"]

    # Articles, enrichment: status --json's figures (and /metrics' where it has them).
    assert int(figure(root, "articles-total")) == status["articles"]["total"] == 4
    assert int(figure(root, "articles-total")) == metric(metrics, "feedworker_articles")
    assert int(figure(root, "articles-published")) == status["articles"]["published"]
    assert int(figure(root, "articles-published")) == metric(metrics, "feedworker_articles_published")
    assert int(figure(root, "articles-removed")) == status["articles"]["removed"]
    assert int(figure(root, "enrich-pending")) == status["enrich"]["pending"]
    assert int(figure(root, "enrich-failed")) == status["enrich"]["failed"]

    # This process's runs: its /metrics counters (the start-up run and three asked for).
    assert int(figure(root, "process-runs-ok")) == metric(metrics, "feedworker_runs_total", outcome="ok") == 3
    assert int(figure(root, "process-runs-failed")) == metric(metrics, "feedworker_runs_total", outcome="failed") == 1

    # Each source folder with its state and file count.
    sources = root.get_element_by_id("sources-table").findall(".//tbody/tr")
    assert [shown(row.find("th")) for row in sources] == [source["path"] for source in status["sources"]]
    for row, source in zip(sources, status["sources"], strict=True):
        cells = [shown(cell) for cell in row.findall("td")]
        assert cells[0].split()[0] == source["state"] == "ok"
        assert int(cells[1]) == source["files"] == metric(metrics, "feedworker_source_files", source=source["path"])

    # The quarantine: its paths and messages, as text.
    quarantined = root.get_element_by_id("quarantine-table").findall(".//tbody/tr")
    assert [(shown(row.find("th")), shown(row.find("td"))) for row in quarantined] == [
        (entry["path"], " ".join(entry["message"].split())) for entry in status["quarantined"]
    ]
    assert status["quarantined"][0]["path"].endswith(HOSTILE_PATH)

    # The watcher is off in this config.
    assert figure(root, "watch-state") == "off"


@both_dialects()
def test_the_page_is_text_only_strict_uncached_and_holds_no_secret(served: Served):
    response = served.service.get("/status")
    body = response.content
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "etag" not in response.headers  # a fresh page each time
    root = tree(body)
    # The hostile path is text: no element came of it.
    assert not root.findall(".//script") and not root.findall(".//img")
    assert b"<script" not in body and b"&lt;script&gt;alert(1)&lt;/script&gt;.txt" in body
    assert not [el for el in root.iter() if any(name.startswith("on") for name in el.attrib)]
    # Nothing is loaded or linked from anywhere: no URL at all, only in-page anchors.
    assert not re.search(rb"(?i)[a-z]+://|url\(|@import", body)
    assert not [el for el in root.iter() if el.get("src")]
    assert {a.get("href") for a in root.iter("a")} == {"#status"}
    # No secret: the token, the database password, the database URL.
    assert TOKEN.encode() not in body and PASSWORD.encode() not in body
    assert b"postgresql" not in body.lower() and b"feedworker.db" not in body
    # gzip as any other answer, HEAD without a body.
    assert served.service.get("/status", headers={"Accept-Encoding": "gzip"}).headers["content-encoding"] == "gzip"
    with served.service.client() as client:
        head = client.head("/status")
    assert head.status_code == 200 and not head.content
    assert head.headers["content-security-policy"] == CSP and head.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- more than 100 runs


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`serve` (SQLite, the watcher as configured by default) over a store with 105 more runs
    than its own, written as rows (one cycle takes 0.7 s as a process); every 10th failed, with
    a message that is markup."""
    root = tmp_path_factory.mktemp("crowded")
    (root / "inbox").mkdir()
    (root / "inbox" / "a.txt").write_text(article_text(title="One"), encoding="utf-8")
    port = free_port()
    config = write_config(root, port=port, server={"token": TOKEN})
    run_cli("run", "--config", str(config))
    with sqlite3.connect(root / "db" / "feedworker.db") as conn:
        ((report_json, started, finished),) = conn.execute("SELECT report_json, started_at, finished_at FROM run")
    report = json.loads(report_json)
    rows = []
    for index in range(105):
        failed = index % 10 == 9
        row = {
            **report,
            "status": "failed" if failed else "ok",
            "message": HOSTILE_MESSAGE if failed else None,
            "duration_s": 0.05 * (index % 7 + 1),
            "files": {**report["files"], "new": index % 4, "changed": index % 3, "deleted": index % 2},
        }
        rows.append((started, finished, row["status"], json.dumps(row)))
    with sqlite3.connect(root / "db" / "feedworker.db") as conn:
        conn.executemany("INSERT INTO run (started_at, finished_at, status, report_json) VALUES (?, ?, ?, ?)", rows)
    conn.close()
    with Service(config, port) as service:
        service.wait_healthy(60)
        yield Served(service, root, config)


def test_the_chart_draws_the_last_100_runs_of_more_with_failures_marked_and_messages_as_text(crowded: Served):
    status = crowded.status_json()
    ended = [row[0] for row in store_rows(f"sqlite:///{crowded.root / 'db' / 'feedworker.db'}", "SELECT id FROM run")]
    assert len(ended) == 107  # the first run, 105 rows, serve's start-up run
    runs = status["recent_runs"]
    assert [run["run_id"] for run in runs] == sorted(ended)[-100:]
    body = crowded.service.get("/status").content
    root = tree(body)
    marks = run_marks(root)
    assert [int(g.get("data-run-id")) for g in marks] == [run["run_id"] for run in runs]
    assert len(marks) == 100
    failed = [int(g.get("data-run-id")) for g in marks if "failed" in g.get("class").split()]
    assert failed == [run["run_id"] for run in runs if run["status"] == "failed"] and len(failed) == 10
    # Left to right, one slot each; a failed run carries its message in the tooltip, as text.
    xs = [float(g.find("rect").get("x")) for g in marks]
    assert xs == sorted(xs) and len(set(xs)) == 100
    one = next(g for g in marks if "failed" in g.get("class").split())
    assert shown(one.find("title")).endswith(HOSTILE_MESSAGE)
    assert not root.findall(".//script") and not root.findall(".//img") and b"<script" not in body
    assert len(root.get_element_by_id("runs-table").findall(".//tbody/tr")) == 100
    summary = shown(root.find(".//svg/desc"))
    assert summary.startswith(f"The last 100 runs, {runs[0]['run_id']} to {runs[-1]['run_id']}: 10 failed")
    assert figure(root, "watch-state") in WATCH_STATES


def test_a_browser_draws_the_page_with_one_mark_per_run(crowded: Served, browser):
    dom = browser("--dump-dom", f"{crowded.service.base}/status").stdout.decode()
    root = tree(dom)
    assert root.get("lang") == "en"
    for landmark in ("header", "main", "footer"):
        assert root.find(f".//{landmark}") is not None, landmark
    assert shown(root.find(".//h1")) == "feedworker status"
    assert len(root.findall(".//section//h2")) >= 7
    marks = run_marks(root)
    assert len(marks) == 100 and all(g.find("title") is not None for g in marks)
    svg = root.find(".//svg")
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "run-chart-title run-chart-desc"
    assert not root.findall(".//script") and not [el for el in root.iter() if el.get("src")]
    for table in root.iter("table"):
        assert table.findall(".//thead//th[@scope='col']"), table.get("id")


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 900)], ids=["phone", "desktop"])
def test_a_browser_draws_the_page_at_phone_and_desktop_widths(
    crowded: Served, browser, tmp_path: Path, width: int, height: int
):
    shot = tmp_path / "status.png"
    browser(f"--screenshot={shot}", f"--window-size={width},{height}", f"{crowded.service.base}/status")
    assert png_size(shot) == (width, height)
    assert shot.stat().st_size > 10_000  # the chart and text were drawn, not a blank page


# --------------------------------------------------------------------------- the store away


def test_with_the_store_unreadable_the_page_says_so_and_shows_what_the_process_knows(tmp_path: Path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.txt").write_text(article_text(title="One"), encoding="utf-8")
    port = free_port()
    config = write_config(tmp_path, port=port, watch=False)
    with Service(config, port) as service:
        service.wait_healthy(60)
        before = tree(service.get("/status").content)
        assert before.find(".//section[@id='store-notice']") is None
        assert len(run_marks(before)) == 1
        # SIGHUP onto a database file that is no database: the server's reads now fail.
        (tmp_path / "db" / "garbage.db").write_bytes(b"this is not an SQLite database\n" * 200)
        text = config.read_text(encoding="utf-8").replace("db/feedworker.db", "db/garbage.db")
        config.write_text(text, encoding="utf-8")
        service.signal(signal.SIGHUP)
        wait_for(lambda: "config.reloaded" in service.log(), 20, "the reload")
        response = service.get("/status")
        assert response.status_code == 200  # as /healthz: the page answers from what this process knows
        root = tree(response.content)
        assert shown(root.get_element_by_id("store-notice-heading")) == "The store could not be read"
        assert root.find(".//svg") is None and "No run in the store that could be read" in shown(
            root.get_element_by_id("runs")
        )
        for section in ("store", "enrich", "quarantine"):
            assert "Unknown: the store could not be read" in shown(root.get_element_by_id(section)), section
        # This process's own last run, its counters and the folder are still shown.
        assert figure(root, "last-run-status") == "ok"
        assert figure(root, "last-run-id") == figure(before, "last-run-id")
        assert figure(root, "process-runs-ok") == "1"
        assert [shown(row.find("th")) for row in root.get_element_by_id("sources-table").iter("tr")][1:] == [
            str(tmp_path / "inbox")
        ]
        assert b"sqlalche.me" not in response.content and b"garbage.db" not in response.content
        # The CLI fails on that store, in its own way: the page does not pretend otherwise.
        assert run_cli("status", "--json", "--config", str(config), check=False).returncode == 1


# --------------------------------------------------------------------------- the renderer alone


def _page(**overrides):
    from worker.service.status_page import StatusPage

    status = {
        "articles": {"total": 2, "published": 1, "removed": 0},
        "topics": 1,
        "quarantined": [{"path": "/in/<b>x</b>.txt", "message": "bad & <i>worse</i>"}],
        "enrich": {"fetched": 0, "cached": 0, "failed": 3, "pending": 5},
        "sources": [{"path": "/in", "state": "ok", "files": 2, "reason": None, "last_run_state": "ok"}],
        "last_run": None,
        "recent_runs": [],
    }
    process = {
        "name": "host:1",
        "role": "single",
        "running": False,
        "queued": False,
        "accepting": True,
        "runs_ok": 0,
        "runs_failed": 0,
        "last_success_at": None,
    }
    fields = {"generated_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "store": "ok", "status": status}
    fields["process"] = process
    fields.update(overrides)
    return StatusPage(**fields)


def _run(run_id: int, status: str = "ok", duration: float = 1.0, new: int = 0, feeds: int = 0, message=None):
    return {
        "run_id": run_id,
        "status": status,
        "started_at": "2030-01-01T00:00:00+00:00",
        "finished_at": "2030-01-01T00:00:01+00:00",
        "duration_s": duration,
        "files": {"new": new, "changed": 0, "unchanged": 0, "deleted": 0, "quarantined": 0},
        "feeds_written": feeds,
        "message": message,
    }


def test_the_chart_scales_each_panel_and_keeps_the_newest_100_runs():
    from worker.service.status_page import chart

    runs = [_run(1, duration=1.0, new=10), _run(2, "failed", duration=4.0, new=0, message="x"), _run(3, duration=2.0)]
    drawn = chart(runs)
    assert [mark["run_id"] for mark in drawn["marks"]] == [1, 2, 3]
    assert [mark["failed"] for mark in drawn["marks"]] == [False, True, False]
    heights = [mark["duration"]["height"] for mark in drawn["marks"]]
    assert heights[1] == pytest.approx(4 * heights[0]) and heights[2] == pytest.approx(2 * heights[0])
    assert {panel["key"]: panel["max_label"] for panel in drawn["panels"]} == {
        "duration": "5",
        "files": "10",
        "feeds": "1",
    }
    assert drawn["marks"][1]["files"] == [] and drawn["marks"][0]["feeds"] is None
    # Bars sit on their panel's baseline.
    duration_panel = drawn["panels"][0]
    for mark in drawn["marks"]:
        assert mark["duration"]["y"] + mark["duration"]["height"] == pytest.approx(duration_panel["bottom"])
    many = chart([_run(index) for index in range(1, 151)])
    assert [mark["run_id"] for mark in many["marks"]] == list(range(51, 151))
    assert chart([])["marks"] == [] and chart([])["summary"] == "No run has ended yet."


def test_the_renderer_escapes_text_hides_secrets_and_shows_the_watcher():
    from worker.service.status_page import render_status_page

    runs = [_run(7, "failed", message="token tok-Secret-1234 <script>alert(1)</script>")]
    page = _page(
        status={**_page().status, "recent_runs": runs},
        watch={"state": "limited", "reason": "inotify <watch> limit", "folders": 2, "events": 5, "cycles": 1},
    )
    body = render_status_page(page, secrets=["tok-Secret-1234"])
    root = tree(body)
    assert b"tok-Secret-1234" not in body and "token *** <script>" in shown(root.find(".//svg//g[@class='run failed']"))
    assert not root.findall(".//script") and not root.findall(".//b") and not root.findall(".//i")
    assert shown(root.get_element_by_id("quarantine-table").find(".//tbody/tr/th")) == "/in/<b>x</b>.txt"
    assert figure(root, "enrich-pending") == "5" and figure(root, "enrich-failed") == "3"
    assert figure(root, "watch-state") == "limited" and figure(root, "watch-reason") == "inotify <watch> limit"
    assert figure(root, "watch-events") == "5" and figure(root, "watch-folders") == "2"
    off = tree(render_status_page(_page()))
    assert figure(off, "watch-state") == "off" and off.find(".//*[@id='watch-events']") is None
    assert "No run in the store." in shown(off.get_element_by_id("runs"))
    with pytest.raises(ValueError):
        render_status_page(_page(store="maybe"))


def test_the_page_colours_meet_wcag_aa_in_light_and_dark():
    from worker.service.status_page import render_status_page

    page = render_status_page(_page()).decode()
    schemes = re.findall(r":root\{([^}]*)\}", page)
    assert len(schemes) == 2  # light, and dark (prefers-color-scheme)
    for scheme in schemes:
        palette = dict(re.findall(r"--([a-z]+):(#[0-9a-f]{6})", scheme))
        for text_colour in ("fg", "muted", "link", "bad"):
            for background in ("bg", "card", "band"):
                ratio = _contrast(palette[text_colour], palette[background])
                assert ratio >= 4.5, (scheme, text_colour, background, ratio)
        # The chart's marks against the card (WCAG 1.4.11, graphical objects: 3:1).
        for mark in ("dur", "new", "changed", "deleted", "feeds", "fail", "grid"):
            assert _contrast(palette[mark], palette["card"]) >= 3, (scheme, mark)


def test_the_template_ships_as_package_data():
    import tomllib

    from tests.service_helpers import ROOT

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "templates/*.j2" in data["tool"]["setuptools"]["package-data"]["worker.service"]
    assert (ROOT / "worker" / "service" / "templates" / "status.html.j2").is_file()
