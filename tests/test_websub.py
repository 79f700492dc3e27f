"""WebSub (issue 14, item 6): feeds name their hubs, and a cycle that changed feeds tells each hub which."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import feedparser
import pytest
import yaml

from tests.conftest import make_project
from tests.localserver import LocalServer
from tests.nodns import fake_names
from tests.service_helpers import Service, copy_examples, free_port, write_config

BASE = "http://feeds.example.test/feeds/"


class Hub(LocalServer):
    """A WebSub hub on 127.0.0.1: records each publish notification; fails the first `failing`."""

    def __init__(self, failing: int = 0) -> None:
        self.pings: list[dict[str, list[str]]] = []
        self.failing = failing
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                with hub.lock:
                    if hub.failing:
                        hub.failing -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    hub.pings.append(urllib.parse.parse_qs(body))
                self.send_response(204)
                self.end_headers()

        super().__init__(Handler)


@pytest.fixture
def hub() -> Iterator[Hub]:
    with fake_names():
        server = Hub()
    yield server
    server.close()


def with_hubs(project, *hubs: str) -> None:
    config = yaml.safe_load(project.config.read_text())
    config["websub"] = {"hubs": list(hubs)}
    project.config.write_text(yaml.safe_dump(config))


def test_a_dropped_file_reaches_the_hub_naming_exactly_the_changed_feeds(tmp_path: Path, hub: Hub) -> None:
    project = make_project(tmp_path)
    with_hubs(project, hub.url("/hub"))
    project.article("a.txt", title="A", web_url="https://a.example/a", topics=["Energy"])
    report = project.run()
    assert report["websub"] == {"pinged": 1, "failed": 0}
    assert len(hub.pings) == 1 and hub.pings[0]["hub.mode"] == ["publish"]
    assert sorted(hub.pings[0]["hub.url"]) == [
        BASE + name
        for name in ("all.atom", "all.json", "all.rss", "topics/energy.atom", "topics/energy.json", "topics/energy.rss")
    ]
    for feed in ("all.rss", "all.atom", "topics/energy.rss"):
        links = feedparser.parse(project.feed(feed)).feed.links
        assert {(link.rel, link.href) for link in links} >= {("hub", hub.url("/hub")), ("self", BASE + feed)}
    for feed in ("all.json", "topics/energy.json"):
        document = json.loads(project.feed(feed))
        assert document["hubs"] == [{"type": "WebSub", "url": hub.url("/hub")}]
        assert document["feed_url"] == BASE + feed

    project.run()  # nothing changed: no notification
    assert len(hub.pings) == 1

    project.article("b.txt", title="B", web_url="https://a.example/b", topics=["Oceans"])
    project.run()
    assert len(hub.pings) == 2
    assert sorted(hub.pings[1]["hub.url"]) == [
        BASE + name
        for name in ("all.atom", "all.json", "all.rss", "topics/oceans.atom", "topics/oceans.json", "topics/oceans.rss")
    ]  # not Energy's feeds: they did not change


def test_a_failing_hub_is_asked_again_then_counted_failed(tmp_path: Path) -> None:
    with fake_names():
        flaky, down = Hub(failing=1), Hub(failing=10)
    try:
        project = make_project(tmp_path)
        with_hubs(project, flaky.url("/"), down.url("/"))
        project.article("a.txt", title="A", web_url="https://a.example/a")
        report = project.run()
        assert report["status"] == "ok"  # a hub's trouble never fails the run
        assert report["websub"] == {"pinged": 1, "failed": 1}
        assert len(flaky.pings) == 1 and down.pings == []
    finally:
        flaky.close()
        down.close()


def test_served_feeds_carry_hub_and_self_link_headers(tmp_path: Path, hub: Hub) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port, websub={"hubs": [hub.url("/hub")]})
    with Service(config, port) as service:
        service.wait_listening()
        service.wait_healthy()
        answer = service.get("/feeds/all.atom")
        assert answer.headers["link"] == f'<{hub.url("/hub")}>; rel="hub", <{BASE}all.atom>; rel="self"'
        answer = service.get("/feeds/topics/ai.json")
        assert answer.headers["content-type"] == "application/feed+json; charset=utf-8"
        assert answer.headers["link"] == f'<{hub.url("/hub")}>; rel="hub", <{BASE}topics/ai.json>; rel="self"'
        metrics = service.get("/metrics").text
        assert 'feedworker_websub_pings_total{result="ok"} 1.0' in metrics
    assert json.loads(json.dumps(hub.pings))[0]["hub.mode"] == ["publish"]
