"""Feeds for what a reader cares about (issue 14, item 9): `/feeds/query.{rss,atom,json}?topics=a,b&match=any|all&provider=x`.

A real `feedworker serve` over the example articles with `feeds.max_entries: 5` (so the limit
bites), read as feed readers read it: feedparser for RSS and Atom, json for JSON Feed. What a
query should hold is worked out from the article files themselves and from the topic feeds.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import httpx
import pytest
import yaml

from tests.feedcheck import assert_valid_atom, assert_valid_json_feed, assert_valid_rss
from tests.service_helpers import ServedExamples, Service, serve_examples, wait_for

BASE = "http://feeds.example.test/feeds/"
TOKEN = "query-feeds-token-0123456789"
MAX = 5
IDENTITY = {"Accept-Encoding": "identity"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedExamples]:
    with serve_examples(
        tmp_path_factory.mktemp("query"), feeds={"max_entries": MAX}, server={"token": TOKEN}, schedule={"every": "1h"}
    ) as served:
        yield served


def articles(inbox: Path) -> list[dict]:
    """The published articles of the inbox's files, as their front matter says (topics by name, casefolded)."""
    found = []
    for path in sorted(inbox.rglob("*.txt")):
        front = yaml.safe_load(path.read_text(encoding="utf-8-sig").split("---")[1])
        if front.get("published", True) is False:
            continue
        topics = front.get("topics") or []
        provider = front.get("provider") or {}
        found.append(
            {
                "url": front["webUrl"],
                "date": datetime.fromisoformat(str(front["publishedDateTime"])),
                "topics": {" ".join(name.split()).casefold() for name in topics},
                "provider": {(provider.get("name") or "").lower(), (provider.get("domain") or "").lower()} - {""},
            }
        )
    return found


def newest(selected: list[dict]) -> list[str]:
    return [article["url"] for article in sorted(selected, key=lambda a: a["date"], reverse=True)[:MAX]]


def get_json(service: Service, path: str) -> dict:
    response = service.get(path, headers=IDENTITY)
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return json.loads(response.content)


def query(service: Service, kind: str, canonical: str) -> bytes:
    """A query feed, checked as every feed is (self link: the canonical URL under feeds.base_url)."""
    response = service.get(f"/feeds/query.{kind}?{canonical}", headers=IDENTITY)
    assert response.status_code == 200, (kind, canonical, response.status_code, response.text[:200])
    check = {"rss": assert_valid_rss, "atom": assert_valid_atom, "json": assert_valid_json_feed}[kind]
    check(response.content, f"{BASE}query.{kind}?{canonical}")
    return response.content


def links(feed: dict) -> list[str]:
    return [item["url"] for item in feed["items"]]


def test_all_is_every_topic_and_any_is_the_union_by_date(served: ServedExamples) -> None:
    service = served.service
    published = articles(served.root / "inbox")
    topic = {slug: get_json(service, f"/feeds/topics/{slug}.json") for slug in ("ai", "privacy", "machine-learning")}

    # A∧B: the articles carrying both topics, newest first; each is an entry of A's and of B's
    # feed, or older than every entry of a feed the limit filled.
    both = json.loads(query(service, "json", "topics=ai,privacy&match=all"))
    assert links(both) == newest([a for a in published if {"ai", "privacy"} <= a["topics"]])
    assert len(both["items"]) >= 3
    for item in both["items"]:
        assert {"AI", "Privacy"} <= set(item["tags"]), item["tags"]
        for slug in ("ai", "privacy"):
            entries = topic[slug]["items"]
            if item["id"] not in {entry["id"] for entry in entries}:
                assert len(entries) == MAX and item["date_published"] < entries[-1]["date_published"], (slug, item)
            else:
                assert item == next(entry for entry in entries if entry["id"] == item["id"])
    assert set(links(both)) <= set(links(topic["privacy"]))

    # A∨B: the union of A's and B's entries by date, cut at max_entries (here it bites: 6 + 4).
    either = json.loads(query(service, "json", "topics=machine-learning,privacy&match=any"))
    union = {item["id"]: item for slug in ("machine-learning", "privacy") for item in topic[slug]["items"]}
    by_date = sorted(union.values(), key=lambda item: item["date_published"], reverse=True)
    assert len(union) > MAX
    assert either["items"] == by_date[:MAX]
    assert links(either) == newest([a for a in published if a["topics"] & {"machine learning", "privacy"}])
    assert either["title"] == "Test News: Machine Learning or Privacy"
    assert both["title"] == "Test News: AI + Privacy"


def test_entries_are_the_topic_feeds_entries_in_every_format(served: ServedExamples) -> None:
    service = served.service
    for kind in ("rss", "atom"):
        fields = ("id", "title", "link", "published", "summary", "author", *(("updated",) if kind == "atom" else ()))
        stored = feedparser.parse(service.get(f"/feeds/topics/privacy.{kind}", headers=IDENTITY).content)
        asked = feedparser.parse(query(service, kind, "topics=privacy&match=any"))
        assert not asked.bozo and len(asked.entries) == len(stored.entries) == 4
        for mine, theirs in zip(asked.entries, stored.entries, strict=True):
            assert {f: mine.get(f) for f in fields} == {f: theirs.get(f) for f in fields}, kind
            assert mine.get("content") == theirs.get("content") and mine.tags == theirs.tags
        assert asked.feed.title == "Test News: Privacy"
    stored_json = get_json(service, "/feeds/topics/privacy.json")
    asked_json = json.loads(query(service, "json", "topics=privacy&match=any"))
    assert asked_json["items"] == stored_json["items"]
    assert asked_json["feed_url"] == f"{BASE}query.json?topics=privacy&match=any"
    # The three formats of a query agree with one another, and its id is its own and stable.
    union = "topics=ai,machine-learning&match=any"
    atom = feedparser.parse(query(service, "atom", union))
    rss = feedparser.parse(query(service, "rss", union))
    items = json.loads(query(service, "json", union))["items"]
    assert [e.id for e in atom.entries] == [e.id for e in rss.entries] == [item["id"] for item in items]
    assert [e.link for e in atom.entries] == [e.link for e in rss.entries] == [item["url"] for item in items]
    assert (
        atom.feed.id.startswith("urn:uuid:") and atom.feed.id == feedparser.parse(query(service, "atom", union)).feed.id
    )
    assert atom.feed.id != feedparser.parse(query(service, "atom", "topics=ai,machine-learning&match=all")).feed.id


def test_provider_keeps_one_providers_articles(served: ServedExamples) -> None:
    service = served.service
    published = articles(served.root / "inbox")
    expected = newest([a for a in published if "ai" in a["topics"] and "byteline" in a["provider"]])
    assert len(expected) >= 2
    by_name = json.loads(query(service, "json", "topics=ai&match=any&provider=byteline"))
    by_domain = json.loads(query(service, "json", "topics=ai&match=any&provider=byteline.io"))
    assert links(by_name) == links(by_domain) == expected
    assert all(item["authors"] == [{"name": "Byteline"}] for item in by_name["items"])
    assert by_name["title"] == "Test News: AI (Byteline)"
    for kind in ("rss", "atom"):
        parsed = feedparser.parse(query(service, kind, "topics=ai&match=any&provider=byteline"))
        assert [entry.link for entry in parsed.entries] == expected
    wired = json.loads(query(service, "json", "topics=ai,privacy&match=all&provider=wired"))
    assert links(wired) == newest(
        [a for a in published if {"ai", "privacy"} <= a["topics"] and "wired" in a["provider"]]
    )
    # A provider with nothing in these topics: a valid, empty feed.
    assert json.loads(query(service, "json", "topics=space&match=any&provider=byteline"))["items"] == []
    feedparser.parse(query(service, "atom", "topics=space&match=any&provider=byteline"))


def test_other_spellings_redirect_to_the_canonical_url(served: ServedExamples) -> None:
    spellings = {
        "topics=privacy,ai&match=all": "topics=ai,privacy&match=all",
        "topics=AI,Privacy&match=all": "topics=ai,privacy&match=all",
        "topics=ai,privacy,ai&match=all": "topics=ai,privacy&match=all",
        "topics=ai,privacy": "topics=ai,privacy&match=any",
        "match=all&topics=ai,privacy": "topics=ai,privacy&match=all",
        "topics=ai,privacy&match=all&utm_source=x&page=2": "topics=ai,privacy&match=all",
        "topics=ai%2Cprivacy&match=ALL": "topics=ai,privacy&match=all",
        "topics=ai&topics=privacy&match=all": "topics=ai,privacy&match=all",
        "topics=ai,%20privacy,&match=all&provider=": "topics=ai,privacy&match=all",
        "topics=ai&match=any&provider=%20Wired%20": "topics=ai&match=any&provider=wired",
        "provider=Signal+%26+Noise&topics=ai": "topics=ai&match=any&provider=signal+%26+noise",
        "topics=ai&provider=wired&match=any": "topics=ai&match=any&provider=wired",
        "topics=ai&provider=CAF%C3%89": "topics=ai&match=any&provider=caf%C3%A9",
    }
    with served.service.client(follow_redirects=False) as client:
        for kind in ("atom", "rss", "json"):
            for asked, canonical in spellings.items():
                response = client.get(f"/feeds/query.{kind}?{asked}")
                assert response.status_code == 301, (kind, asked, response.status_code)
                assert response.headers["location"] == f"/feeds/query.{kind}?{canonical}", (kind, asked)
                assert client.get(response.headers["location"]).status_code == 200, (kind, canonical)


def test_bad_queries_are_400_and_unknown_topics_404(served: ServedExamples) -> None:
    service = served.service
    bad = [
        "",
        "topics=",
        "match=all",
        "topics=ai&match=both",
        "topics=ai&match=any&match=all",
        "topics=ai_privacy",
        "topics=ai%3Cscript%3E",
        "topics=" + ",".join(f"topic-{n}" for n in range(21)),
        "topics=" + "a" * 81,
        "topics=ai&provider=" + "p" * 201,
        "topics=ai&provider=a&provider=b",
        "topics=ai&x=" + "y" * 3000,
        "topics=%ff",
    ]
    for asked in bad:
        response = service.get(f"/feeds/query.atom?{asked}")
        assert response.status_code == 400, (asked, response.status_code)
        assert response.headers["content-type"].startswith("application/json")
        message = response.json()["error"]
        assert len(message) < 100 and "script" not in message and "topic-20" not in message, message
    for asked in ("topics=no-such-topic&match=any", "topics=ai,no-such-topic&match=all"):
        response = service.get(f"/feeds/query.rss?{asked}")
        assert response.status_code == 404 and "no-such-topic" not in response.text
    assert service.get("/feeds/query.xml?topics=ai&match=any").status_code == 404
    assert service.post("/feeds/query.atom?topics=ai&match=any").status_code == 405


def test_validators_gzip_head_and_the_same_bytes_every_time(served: ServedExamples) -> None:
    service = served.service
    path = "/feeds/query.atom?topics=ai,privacy&match=any"
    first = service.get(path, headers=IDENTITY)
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/atom+xml")
    for _ in range(9):
        again = service.get(path, headers=IDENTITY)
        assert again.content == first.content
        for field in ("etag", "last-modified"):
            assert again.headers[field] == first.headers[field]
    assert first.headers["cache-control"].startswith("max-age=") and int(first.headers["cache-control"][8:]) > 3000
    assert "accept-encoding" in first.headers["vary"].lower()
    # The feed's time: when its topics' entries last changed (their feeds' own time), not now.
    updated = feedparser.parse(first.content).feed.updated_parsed
    topics = [feedparser.parse(service.get(f"/feeds/topics/{slug}.atom").content).feed for slug in ("ai", "privacy")]
    assert updated == max(feed.updated_parsed for feed in topics)
    assert parsedate_to_datetime(first.headers["last-modified"]).utctimetuple()[:6] == tuple(updated)[:6]
    # Conditional requests.
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    not_modified = service.get(path, headers={**IDENTITY, "If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag and not_modified.headers["last-modified"] == modified
    assert service.get(path, headers={**IDENTITY, "If-Modified-Since": modified}).status_code == 304
    # gzip: its own ETag.
    with service.client() as client, client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as zipped:
        raw = b"".join(zipped.iter_raw())
    assert zipped.headers["content-encoding"] == "gzip" and gzip.decompress(raw) == first.content
    assert zipped.headers["etag"] == etag[:-1] + '-gzip"'
    # HEAD: the headers of GET, no body.
    head = service.client().head(path, headers=IDENTITY)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag and int(head.headers["content-length"]) == len(first.content)


def test_a_cycle_renews_the_cached_feed(served: ServedExamples) -> None:
    """Cached until the next cycle: an edit behind serve's back shows only once a cycle has run."""
    service = served.service
    path = "/feeds/query.json?topics=semiconductors&match=any"
    before = service.get(path, headers=IDENTITY)
    assert before.status_code == 200
    old = json.loads(before.content)["items"]
    target = old[-1]["url"]
    database = sqlite3.connect(served.root / "db" / "feedworker.db", timeout=30)
    try:
        with database:
            # As every store write does: an entry changes with its article's updated_at (the
            # rule stored feeds and the entries built in `serve` go by).
            database.execute(
                "UPDATE article SET title = 'Edited in the store', updated_at = '2000-01-01 00:00:00.000000'"
                " WHERE web_url = ?",
                (target,),
            )
    finally:
        database.close()
    assert service.get(path, headers=IDENTITY).content == before.content  # no cycle yet: the cached feed
    (served.root / "inbox" / "zz-new.txt").write_text(
        "---\ntitle: Wafer prices fall\nwebUrl: https://fab.example.com/wafers\n"
        "publishedDateTime: 2021-04-01T08:00:00Z\ntopics: [Semiconductors]\n---\n",
        encoding="utf-8",
    )
    accepted = service.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert accepted.status_code == 202
    run = accepted.json()["run_id"]
    wait_for(lambda: service.get(f"/runs/{run}").json()["status"] in ("ok", "failed"), 60, "the run")
    assert service.get(f"/runs/{run}").json()["status"] == "ok"
    after = service.get(path, headers={**IDENTITY, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    items = json.loads(after.content)["items"]
    assert items[0]["url"] == "https://fab.example.com/wafers"
    assert next(item for item in items if item["url"] == target)["title"] == "Edited in the store"
    assert len(items) == min(MAX, len(old) + 1)
    assert httpx.codes.is_success(service.get(path.replace(".json", ".atom")).status_code)


def test_a_provider_beyond_ascii_is_matched_as_its_canonical_spelling(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, provider in (("uber.txt", "Über Nachrichten"), ("plain.txt", "Plain News")):
        fields = {
            "title": f"From {provider}",
            "webUrl": f"https://{name.removesuffix('.txt')}.example/story",
            "topics": ["AI"],
            "provider": {"name": provider},
            "publishedDateTime": "2030-01-01T00:00:00Z",
        }
        (inbox / name).write_text("---\n" + yaml.safe_dump(fields, allow_unicode=True) + "---\n", encoding="utf-8")
    with serve_examples(tmp_path) as served:
        for spelled in ("provider=%C3%BCber+nachrichten", "provider=%C3%9CBER+Nachrichten"):
            response = served.service.get(f"/feeds/query.json?topics=ai&match=any&{spelled}", follow_redirects=True)
            assert response.status_code == 200
            assert links(json.loads(response.content)) == ["https://uber.example/story"]
