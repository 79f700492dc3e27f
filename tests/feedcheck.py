"""Strict checks every generated feed must pass: XML, feedparser, the JSON Feed 1.1 schema, and the rules we promise.

Among them the W3C Feed Validation Service's rules a generator can break with sparse
articles: no blank summary, content or description ("content should not be blank"); an Atom
entry without content has a summary ("Missing textual content"); an RSS item with
content:encoded has a description before it ("Ensure description precedes content:encoded");
and (what feedparser-based readers need) an Atom entry's summary comes before its content.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import jsonschema
import lxml.html
from lxml import etree

JSON_FEED_SCHEMA = json.loads((Path(__file__).parent / "data" / "jsonfeed-1.1.schema.json").read_text())

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)$")
ABSOLUTE = re.compile(r"^(https?|mailto):", re.IGNORECASE)  # schemes are case-insensitive (RFC 3986)


def strict_parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(recover=False, resolve_entities=False, no_network=True))


def assert_valid_feeds(feeds_dir: Path, base_url: str) -> None:
    """Check every file in the feeds folder; no temporary file may be left behind."""
    for path in sorted(feeds_dir.rglob("*")):
        if path.is_dir():
            continue
        relative = str(path.relative_to(feeds_dir))
        assert not path.name.startswith(".feedworker-"), f"left-over temporary file {relative}"
        if path.suffix == ".rss":
            assert_valid_rss(path.read_bytes(), base_url + relative)
        elif path.suffix == ".atom":
            assert_valid_atom(path.read_bytes(), base_url + relative)
        elif path.suffix == ".json":
            assert_valid_json_feed(path.read_bytes(), base_url + relative)
        elif path.suffix == ".opml":
            root = strict_parse(path.read_bytes())
            assert root.tag == "opml"
            for outline in root.iter("outline"):
                if outline.get("xmlUrl"):
                    assert outline.get("xmlUrl").startswith(base_url)


def assert_valid_rss(data: bytes, self_url: str) -> list[etree._Element]:
    root = strict_parse(data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    for name in ("title", "link", "description"):
        assert channel.findtext(name), f"channel <{name}> missing"
    assert ABSOLUTE.match(channel.findtext("link"))
    self_links = [link for link in channel.findall(f"{ATOM}link") if link.get("rel") == "self"]
    assert [link.get("href") for link in self_links] == [self_url]
    for name in ("lastBuildDate", "pubDate"):
        if channel.findtext(name):
            assert RFC822.match(channel.findtext(name)), channel.findtext(name)
    items = channel.findall("item")
    guids = [item.findtext("guid") for item in items]
    assert len(guids) == len(set(guids)), "duplicate guid"
    dates = []
    for item in items:
        assert item.findtext("title"), "item without a title"
        children = list(item)
        texts = {name: item.find(name) for name in ("description", f"{CONTENT}encoded")}
        for name, element in texts.items():
            assert element is None or (element.text or "").strip(), f"blank <{name}> in an item"
        if texts[f"{CONTENT}encoded"] is not None:
            assert texts["description"] is not None, "content:encoded without a description"
            assert children.index(texts["description"]) < children.index(texts[f"{CONTENT}encoded"]), (
                "content:encoded before description"
            )
        assert ABSOLUTE.match(item.findtext("link"))
        assert item.find("guid").get("isPermaLink") == "false"
        assert RFC822.match(item.findtext("pubDate")), item.findtext("pubDate")
        dates.append(parsedate_to_datetime(item.findtext("pubDate")))
        _assert_safe_html(item.findtext(f"{CONTENT}encoded") or "")
    assert dates == sorted(dates, reverse=True), "items not newest first"
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert len(parsed.entries) == len(items)
    return items


def assert_valid_atom(data: bytes, self_url: str) -> list[etree._Element]:
    root = strict_parse(data)
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") and root.findtext(f"{ATOM}title")
    assert RFC3339.match(root.findtext(f"{ATOM}updated"))
    self_links = [link.get("href") for link in root.findall(f"{ATOM}link") if link.get("rel") == "self"]
    assert self_links == [self_url]
    entries = root.findall(f"{ATOM}entry")
    ids = [entry.findtext(f"{ATOM}id") for entry in entries]
    assert len(ids) == len(set(ids)), "duplicate entry id"
    dates = []
    for entry in entries:
        assert entry.findtext(f"{ATOM}title")
        children = list(entry)
        texts = {name: entry.find(f"{ATOM}{name}") for name in ("summary", "content")}
        for name, element in texts.items():
            assert element is None or (element.text or "").strip(), f"blank <{name}> in an entry"
        if texts["summary"] is not None and texts["content"] is not None:
            assert children.index(texts["summary"]) < children.index(texts["content"]), "content before summary"
        if texts["content"] is None:  # RFC 4287: an entry without content has an alternate link
            assert any(link.get("rel", "alternate") == "alternate" for link in entry.findall(f"{ATOM}link"))
            assert texts["summary"] is not None, "entry without textual content"
        for name in ("updated", "published"):
            assert RFC3339.match(entry.findtext(f"{ATOM}{name}")), entry.findtext(f"{ATOM}{name}")
        dates.append(datetime.fromisoformat(entry.findtext(f"{ATOM}published")))
        for link in entry.findall(f"{ATOM}link"):
            assert ABSOLUTE.match(link.get("href")), link.get("href")
            if link.get("rel") == "related":
                assert link.get("title"), "related link without title"
        content = entry.find(f"{ATOM}content")
        if content is not None:
            assert content.get("type") == "html"
            _assert_safe_html(content.text or "")
    assert dates == sorted(dates, reverse=True), "entries not newest first"
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert len(parsed.entries) == len(entries)
    return entries


def assert_valid_json_feed(data: bytes, self_url: str) -> list[dict]:
    """JSON Feed 1.1: the schema (tests/data), and what the spec says in words: absolute URLs,
    RFC 3339 dates, unique ids, no blank text, newest first, safe content_html."""
    feed = json.loads(data)
    jsonschema.Draft202012Validator(JSON_FEED_SCHEMA).validate(feed)
    assert feed["feed_url"] == self_url
    assert ABSOLUTE.match(feed["home_page_url"])
    for hub in feed.get("hubs", []):
        assert hub["type"] == "WebSub" and ABSOLUTE.match(hub["url"])
    items = feed["items"]
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "duplicate item id"
    dates = []
    for item in items:
        assert item["title"].strip() and item["summary"].strip()
        assert ABSOLUTE.match(item["url"]), item["url"]
        assert item.get("content_html", "x").strip() and item.get("content_text", "x").strip()
        for name in ("date_published", "date_modified"):
            assert RFC3339.match(item[name]), item[name]
        dates.append(datetime.fromisoformat(item["date_published"]))
        if "image" in item:
            assert ABSOLUTE.match(item["image"])
        _assert_safe_html(item.get("content_html", ""))
    assert dates == sorted(dates, reverse=True), "items not newest first"
    return items


def _assert_safe_html(fragment: str) -> None:
    if not fragment.strip():
        return
    lowered = fragment.lower()
    assert "<script" not in lowered, fragment[:200]  # as text, "javascript:" is harmless; hrefs are checked below
    document = lxml.html.fragment_fromstring(fragment, create_parent="div")
    for element in document.iter():
        for attribute, value in element.attrib.items():
            assert not attribute.lower().startswith("on"), f"event handler {attribute}"
            if attribute in ("href", "src"):
                assert ABSOLUTE.match(value), f"relative or unsafe URL {value!r}"
