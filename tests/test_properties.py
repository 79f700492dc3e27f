"""Property-based tests (issue 6, item 4): hostile article files never crash a run, and
hostile text in every field still renders valid, sanitised feeds.

Hypothesis examples run the library in-process (load_config + run_cycle on a real SQLite
file in a fresh temporary folder per example); one fixed, nasty corpus goes through the
`feedworker run` subprocess so the CLI path is covered too.
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lxml.html
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.conftest import SAMPLE, article_text, make_project
from tests.feedcheck import ATOM, CONTENT, assert_valid_feeds, strict_parse
from worker.config import load_config
from worker.ingest.frontmatter import ArticleError, ParseLimits, parse_article
from worker.model import Article
from worker.pipeline import run_cycle
from worker.topics import topic_key

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
MEDIA = "{http://search.yahoo.com/mrss/}"
LIMITS = ParseLimits()

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
HEAVY = settings(FAST, max_examples=30)


# --------------------------------------------------------------------------- harness


@dataclass
class Outcome:
    report: Any
    rows: dict[str, tuple[str, str | None, str | None]]  # file name -> (state, error, article_url)
    feeds: Path
    base_url: str
    root: Path


def run_in_process(files: dict[str, bytes], check) -> None:
    """Write `files` into a fresh project, run one cycle in-process, check, call `check(outcome)`."""
    with tempfile.TemporaryDirectory(prefix="fw-prop-") as tmp:
        project = make_project(Path(tmp))
        for name, data in files.items():
            project.write(name, data)
        config = load_config(project.config, environ={})
        report = run_cycle(config, clock=lambda: NOW)  # raises CycleError on a failed run
        assert report.status == "ok", report.message
        with sqlite3.connect(project.database) as conn:
            rows = {
                Path(path).name: (state, error, url)
                for path, state, error, url in conn.execute("SELECT path, state, error, article_url FROM source_file")
            }
        conn.close()
        outcome = Outcome(report, rows, project.feeds, project.base_url, project.root)
        assert_each_file_taken_or_quarantined(files, outcome)
        assert_valid_feeds(project.feeds, project.base_url)
        assert_output_layout(outcome)
        check(outcome)


def assert_each_file_taken_or_quarantined(files: dict[str, bytes], outcome: Outcome) -> None:
    report = outcome.report
    assert report.files.seen == len(files)
    assert set(outcome.rows) == set(files), "a file was neither ingested nor quarantined"
    quarantined = set()
    for name, (state, error, url) in outcome.rows.items():
        if state == "ok":
            assert url, f"{name}: ingested without an article"
        else:
            assert state == "quarantined", (name, state)
            assert error and error.strip(), f"{name}: quarantined without a message"
            quarantined.add(name)
    assert report.files.quarantined == len(quarantined)
    assert {Path(error["path"]).name for error in report.errors} == quarantined
    assert all(error["message"].strip() for error in report.errors)
    urls = {url for state, _, url in outcome.rows.values() if state == "ok"}
    assert report.articles.total == len(urls)


SLUG_FILE = re.compile(r"^[a-z0-9][a-z0-9._-]*\.(rss|atom|json)$")


def assert_output_layout(outcome: Outcome) -> None:
    """Only feeds.dir gets feeds; topic feeds sit directly in feeds/topics with safe names."""
    assert sorted(p.name for p in outcome.root.iterdir()) == ["config", "data", "inbox", "out"]
    assert sorted(p.name for p in (outcome.root / "out").iterdir()) == ["feeds"]
    top = {p.name for p in outcome.feeds.iterdir()}
    assert top <= {"all.rss", "all.atom", "all.json", "index.opml", "index.html", "topics", "archive"}, top
    topics_dir = outcome.feeds / "topics"
    if topics_dir.exists():
        for path in topics_dir.iterdir():
            assert path.is_file() and not path.is_symlink(), path
            stem = path.name.rsplit(".", 1)[0]
            assert stem not in ("", ".", ".."), path.name
            assert "/" not in path.name and "\\" not in path.name
            assert SLUG_FILE.match(path.name) and path.name.isascii(), path.name
        stems = [p.name.rsplit(".", 1)[0] for p in topics_dir.iterdir()]
        for stem in set(stems):  # always in every format
            assert sorted(p for p in stems if p == stem) == [stem, stem, stem], stem


# --------------------------------------------------------------------------- 1. no input crashes a run

FIELDS = [
    "title",
    "webUrl",
    "topics",
    "related",
    "images",
    "provider",
    "publishedDateTime",
    "published",
    "quality",
    "heat",
    "excerpt",
    "category",
    "type",
    "originalUrl",
    "secured",
]
SUBFIELDS = [
    "title",
    "excerpt",
    "webUrl",
    "ampWebUrl",
    "cdnAmpWebUrl",
    "url",
    "width",
    "height",
    "name",
    "domain",
    "provider",
    "images",
    "publishedDateTime",
]
URLS = st.sampled_from(
    [
        "https://news.example.com/a",
        "http://news.example.com/b?x=1#f",
        "HTTPS://News.Example.com:443/a/../b",
        "https://xn--bcher-kva.example/ä",
        "javascript:alert(1)",
        "data:text/html,<script>",
        "ftp://x/y",
        "//x/y",
        "/relative",
        "",
        " ",
        "https://",
        "http://[::1]/",
        "https://exa mple.com/",
        "https://e.com/\x00",
        "https://e.com/<script>",
        'https://e.com/"onmouseover="x',
        "https://e.com/\u202e/x",
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.dates()
    | st.datetimes()
    | URLS
    | st.sampled_from(
        [
            "2021-01-26T22:12:00Z",
            "2021-13-45T99:99:99Z",
            "Tue, 26 Jan 2021 22:12:00 +0000",
            "yes",
            "no",
            "~",
            "0755",
            "1e3",
            "<b>x</b>",
            "&lt;script&gt;",
            "AI",
            " ai ",
            "..",
            "/",
        ]
    )
)
keys = st.sampled_from(FIELDS) | st.sampled_from(SUBFIELDS) | st.text(max_size=8) | st.integers() | st.booleans()
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


def mostly(good: st.SearchStrategy, anything: st.SearchStrategy, tenths: int = 8) -> st.SearchStrategy:
    """`good` in about `tenths` of ten draws, else `anything`."""
    return st.integers(0, 9).flatmap(lambda i: good if i < tenths else anything)


titles = mostly(st.text(min_size=1, max_size=30) | st.sampled_from(["T", "<b>T</b>", " T "]), values)
good_urls = st.builds(
    "https://news.example.com/{}/{}".format, st.integers(0, 5), st.text("abcXYZ019-._~%/?#=&é", max_size=8)
)
plausible = {
    "excerpt": st.text(),
    "category": st.text(max_size=10),
    "type": st.text(max_size=10),
    "originalUrl": URLS,
    "publishedDateTime": st.datetimes()
    | st.dates()
    | st.sampled_from(
        ["2021-01-26T22:12:00Z", "2021-01-26 22:12:00+05:30", "Tue, 26 Jan 2021 22:12:00 +0000", "2021-13-45"]
    ),
    "published": st.booleans(),
    "quality": st.integers(),
    "heat": st.integers(-(2**63), 2**63),
    "provider": st.fixed_dictionaries({}, optional={"name": st.text(), "domain": st.text()}) | st.text(),
    "topics": st.lists(st.text(max_size=10), max_size=5) | st.text(max_size=10),
    "related": st.lists(
        st.dictionaries(st.sampled_from(SUBFIELDS), values | URLS | good_urls, max_size=6)
        | st.fixed_dictionaries({"webUrl": good_urls, "title": st.text()}),
        max_size=4,
    ),
    "images": st.lists(st.fixed_dictionaries({"url": URLS | values}, optional={"width": values}), max_size=3),
    "secured": values,
}
# Each field: mostly a plausible value, sometimes anything at all.
article_like = st.fixed_dictionaries(
    {"title": titles, "webUrl": mostly(good_urls, URLS | values)},
    optional={name: mostly(strategy, values, 9) for name, strategy in plausible.items()},
)
# Mostly article-shaped mappings, so that many files are ingested and rendered.
documents = st.integers(0, 9).flatmap(
    lambda i: article_like if i < 7 else st.dictionaries(keys, values, max_size=6) if i < 9 else values
)
dump_options = st.fixed_dictionaries(
    {
        "default_flow_style": st.sampled_from([False, True, None]),
        "allow_unicode": st.booleans(),
        "canonical": st.booleans(),
        "width": st.sampled_from([80, 20, 10_000]),
    }
)


@st.composite
def yaml_files(draw) -> bytes:
    document = draw(documents)
    options = draw(dump_options)
    try:
        front = yaml.safe_dump(document, sort_keys=False, **options)
    except (yaml.YAMLError, TypeError, ValueError):  # e.g. a key PyYAML cannot emit
        assume(False)
    if front.startswith("---"):  # canonical output opens its document: that line is our fence
        front = front[3:].lstrip("\n")
    body = draw(st.text(max_size=40))
    data = f"---\n{front}---\n{body}"
    if draw(st.booleans()):
        data = data.replace("\n", "\r\n")
    return data.encode("utf-8", "surrogatepass")


@st.composite
def raw_files(draw) -> bytes:
    prefix = draw(st.sampled_from([b"", b"---\n", b"\xef\xbb\xbf---\n", b"---\r\n"]))
    text = st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
    data = prefix + draw(st.binary(max_size=300) | text)
    if draw(st.booleans()):
        data += b"\n---\n" + draw(st.binary(max_size=50))
    return data


BASE_ARTICLE = SAMPLE.read_bytes()
SMALL_ARTICLE = article_text(
    title="Base",
    web_url="https://news.example.com/base",
    topics=["AI", "C++"],
    provider={"name": "P", "domain": "p.example"},
    images=[{"url": "https://img.example/a.png", "width": 10}],
    related=[{"title": "R", "webUrl": "https://rel.example/r", "provider": {"name": "Q"}}],
    body="Body *text*\n",
).encode()


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from([BASE_ARTICLE, SMALL_ARTICLE])))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "flip", "replace"]))
        at = draw(st.integers(4, len(data)) if draw(st.integers(0, 4)) else st.integers(0, len(data)))
        if kind == "insert":
            data[at:at] = draw(
                st.text(min_size=1, max_size=4).map(str.encode)
                | st.sampled_from(
                    [
                        b"\n---\n",
                        b"\x00",
                        b"\xff",
                        b"\xc3",
                        b"*",
                        b"&a ",
                        b"!!python/object:os.system ",
                        b"\t",
                        b"\r",
                        b"\xe2\x80\xae",
                        b"\xef\xbf\xbe",
                        b"{",
                        b"[",
                        b"'",
                        b'"',
                        b"<script>",
                        b": ",
                    ]
                )
            )
        elif data and at < len(data):
            if kind == "delete":
                del data[at : at + draw(st.integers(1, 16))]
            elif kind == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            else:
                data[at] = draw(st.integers(0, 255))
    return bytes(data)


def _names(n: int) -> list[str]:
    return [f"{i:02d}.txt" for i in range(n)]


@FAST
@given(st.lists(raw_files(), min_size=1, max_size=4))
def test_arbitrary_bytes_never_crash_a_run(files):
    run_in_process(dict(zip(_names(len(files)), files)), lambda outcome: None)


@settings(FAST, max_examples=60)
@given(st.lists(yaml_files(), min_size=1, max_size=4))
def test_arbitrary_yaml_documents_never_crash_a_run(files):
    run_in_process(dict(zip(_names(len(files)), files)), lambda outcome: None)


@FAST
@given(st.lists(mutated_files(), min_size=1, max_size=3))
def test_mutated_articles_never_crash_a_run(files):
    run_in_process(dict(zip(_names(len(files)), files)), lambda outcome: None)


# --------------------------------------------------------------------------- 2. hostile text, sanitised feeds

SURROGATES = ["\ud800", "\udfff", "\udc80", "\ud83d"]
NASTY = [
    "\x01",
    "\x07",
    "\x08",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x80",
    "\x85",
    "\x9f",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u00a0",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u2028",
    "\u2029",
    "\u3000",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\ufffd",
    "\U0001fffe",
    "\U0010ffff",
    "\U000e0001",
    "😀",
    "👩\u200d👩\u200d👧\u200d👦",
    "🇺🇳",
    "e\u0301",
    "\u0301",
    "Z\u0335\u0321\u0322\u0334",
    "ﷺ",
    "𒐫",
    "עברית",
    "العربية",
    "<",
    ">",
    "&",
    '"',
    "'",
    "`",
    "&amp;",
    "&lt;",
    "&gt;",
    "&#0;",
    "&#x1;",
    "&#xD800;",
    "&#65534;",
    "&nbsp;",
    "&bogus;",
    "]]>",
    "<![CDATA[x]]>",
    "<!--",
    "-->",
    "<?xml?>",
    "<!DOCTYPE x>",
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//e.com/x.js></SCRIPT>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&amp;lt;script&amp;gt;",
    "<img src=x onerror=alert(1)>",
    "&lt;img src=x onerror=alert(1)&gt;",
    '<a href="javascript:alert(1)">x</a>',
    "<svg onload=alert(1)>",
    "<b>bold</b>",
    "<style>*{}</style>",
    "<iframe src=//e.com>",
    "javascript:alert(1)",
    "---",
    "...",
    "\n---\n",
    "\n...\n",
    "/",
    "\\",
    "..",
    ".",
    "../../etc/passwd",
    "C++",
    "C#",
    "%00",
    "%2e%2e%2f",
    "*a",
    "&a",
    "!!python/object:os.system",
    "{",
    "[",
    "#",
    ": ",
    "- ",
    "? ",
    "|",
    ">",
    "@",
    "AI",
    " ai ",
    "Ai",
    "İ",
    "ß",
    "ǅ",
    "ﬁ",
    "Ω",
    "Ω",
    "x" * 50,
]
odd_chars = st.characters(categories=["Cc", "Cf", "Co", "Cn", "Mn", "Me", "Zl", "Zp", "Zs", "So"])
piece = st.sampled_from(NASTY) | st.text(max_size=6) | odd_chars


@st.composite
def nasty_text(draw, surrogates: bool = False, huge: int = 100_000) -> str:
    pieces = draw(st.lists(piece | st.sampled_from(SURROGATES) if surrogates else piece, max_size=8))
    text = "".join(pieces)
    if draw(st.integers(0, 9)) == 0:  # sometimes huge: 100 kB
        size = draw(st.sampled_from([5_000, huge]))
        text = ((text or "x") * (size // max(1, len(text)) + 1))[:size]
    return text


ODD_URL_TAILS = [
    "a b",
    "ä/ö",
    "%zz",
    "<x>",
    '"q"',
    "'s'",
    "a&b=c&amp;d",
    "#frag",
    "?q=<script>",
    "\u202e",
    "x\x01y",
    "..%2f..",
    "\ufffe",
    "😀",
    "javascript:alert(1)",
    "`",
    "{}|\\^",
    "\t",
]


# Odd but acceptable in a webUrl (the index in its path keeps the canonical URLs distinct),
# except U+FFFE/U+FFFF, which XML cannot carry: such a file is quarantined.
WEB_URL_TAILS = [
    "ä",
    "\u202e",
    "\u200f",
    "%zz",
    "<x>",
    '"q"',
    "😀",
    "?a=<b>&c='d'",
    "#frag",
    "?utm_source=x",
    "`{}|^",
    "/../b",
    "\ufffe",
    "\uffff",
]


@st.composite
def odd_url(draw, surrogates: bool) -> str:
    scheme = draw(
        st.sampled_from(
            [
                "https://img.example/",
                "http://img.example:8080/p/",
                "HTTPS://IMG.example/",
                "javascript:",
                "data:image/png;base64,",
                "//img.example/",
                "/rel/",
                "",
            ]
        )
    )
    tail = draw(st.lists(st.sampled_from(ODD_URL_TAILS) | nasty_text(surrogates), max_size=3))
    return scheme + "".join(tail)


@st.composite
def hostile_article(draw, index: int) -> tuple[bytes, dict[str, Any]]:
    surrogates = draw(st.integers(0, 4)) == 0  # most examples keep them out, so something is rendered
    text = nasty_text(surrogates)
    title = draw(text)
    tail = "".join(draw(st.lists(st.sampled_from(WEB_URL_TAILS), max_size=2)))
    fields: dict[str, Any] = {"title": title, "webUrl": f"https://news.example.com/{index}/article{tail}"}
    for name in ("excerpt", "category", "type"):
        if draw(st.booleans()):
            fields[name] = draw(text)
    fields["provider"] = draw(st.one_of(st.fixed_dictionaries({"name": text, "domain": text}), text, st.none()))
    fields["topics"] = draw(
        st.lists(text | st.sampled_from(["AI", "ai", " Ai ", "C", "C++", "C#", ".", ".."]), max_size=4)
    )
    fields["images"] = draw(st.lists(st.fixed_dictionaries({"url": odd_url(surrogates)}), max_size=2))
    fields["related"] = [
        {
            "title": draw(text),
            "excerpt": draw(text),
            "provider": {"name": draw(text)},
            "webUrl": f"https://rel.example.org/{index}/{j}",
            "images": [{"url": draw(odd_url(surrogates))}],
        }
        for j in range(draw(st.integers(0, 2)))
    ]
    fields["publishedDateTime"] = f"2021-01-{1 + index:02d}T12:00:00Z"
    fields["published"] = draw(st.sampled_from([True, True, True, False]))
    # a body is not cut before 200,000 characters: keep it smaller, feedparser's checks are slow on markup
    body = draw(nasty_text(surrogates, huge=20_000)) if draw(st.booleans()) else ""
    if body and draw(st.booleans()):
        body = f"# {body}\n\n[link]({draw(odd_url(surrogates))}) ![img]({draw(odd_url(surrogates))})\n\n{body}"
    front = yaml.safe_dump(fields, allow_unicode=draw(st.booleans()), sort_keys=False)
    data = f"---\n{front}---\n{body}".encode("utf-8", "surrogatepass")
    return data, {"fields": fields, "body": body, "front": front}


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def expected_valid(data: bytes, spec: dict[str, Any]) -> bool:
    """What the README promises, computed without the parser: only these make a file invalid."""
    fields, body = spec["fields"], spec["body"]
    if _has_surrogate(fields) or _has_surrogate(body) or "\x00" in body:
        return False  # not UTF-8 (surrogatepass bytes), a YAML escape no YAML reader accepts, or binary
    if "\ufffe" in fields["webUrl"] or "\uffff" in fields["webUrl"]:
        return False  # a link XML cannot carry
    return bool(yaml.safe_load(spec["front"])["title"].strip())  # the title as YAML reads it back


TAG = re.compile(r"<[a-zA-Z!/?]")  # what an HTML parser takes for markup
HTTP_URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
HTML_URL = re.compile(r"^(https?://\S+$|mailto:)", re.IGNORECASE)


def assert_plain(text: str, where: str) -> None:
    assert not TAG.search(text), f"{where} holds markup: {text[:200]!r}"
    assert "<script" not in text.lower(), where


def assert_sanitised_json_feed(path: Path, max_title: int, links: set[str]) -> None:
    """JSON Feed text is plain text (nothing to unescape); its content_html as sanitised as Atom's."""
    for item in json.loads(path.read_bytes())["items"]:
        title = item["title"]
        assert title.strip()
        assert len(title) <= max_title + 1 or title in links, f"{path.name}: title of {len(title)} characters"
        for url in (item["url"], item.get("image", "https://x.example/")):
            assert HTTP_URL.match(url), url
        assert_sanitised_html(item.get("content_html", ""))


def assert_sanitised_html(content: str) -> None:
    if content.strip():
        assert "<script" not in content.lower()
        fragment = lxml.html.fragment_fromstring(content, create_parent="div")
        for element in fragment.iter():
            assert element.tag not in ("script", "style", "iframe", "object", "embed", "svg"), element.tag
            for attribute, value in element.attrib.items():
                assert not attribute.lower().startswith("on"), attribute
                if attribute in ("href", "src"):
                    assert HTML_URL.match(value), value


def assert_sanitised_feed(path: Path, max_title: int, links: set[str]) -> None:
    if path.suffix == ".json":
        assert_sanitised_json_feed(path, max_title, links)
        return
    root = strict_parse(path.read_bytes())
    if path.suffix == ".rss":
        entries = root.find("channel").findall("item")
        text_of = {"title": "title", "summary": "description"}
        content_tag = f"{CONTENT}encoded"
        hrefs = lambda e: [e.findtext("link")]
    else:
        entries = root.findall(f"{ATOM}entry")
        text_of = {"title": f"{ATOM}title", "summary": f"{ATOM}summary"}
        content_tag = f"{ATOM}content"
        hrefs = lambda e: [link.get("href") for link in e.findall(f"{ATOM}link")]
    for entry in entries:
        title = entry.findtext(text_of["title"])
        assert title and title.strip()
        assert_plain(title, f"{path.name} title")
        shown = html.unescape(title)  # titles are HTML-escaped text (RSS) or type="html" (Atom)
        assert len(shown) <= max_title + 1 or shown in links, f"{path.name}: title of {len(shown)} characters"
        assert_plain(entry.findtext(text_of["summary"]) or "", f"{path.name} summary")
        for href in hrefs(entry):
            assert HTTP_URL.match(href), href
        for media in entry.iter(f"{MEDIA}content"):
            assert HTTP_URL.match(media.get("url")), media.get("url")
        assert_sanitised_html(entry.findtext(content_tag) or "")


@HEAVY
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(*(hostile_article(i) for i in range(n)))))
def test_hostile_text_in_every_field_renders_valid_sanitised_feeds(articles):
    files = dict(zip(_names(len(articles)), (data for data, _ in articles)))
    parsed: dict[str, Article | None] = {}
    for (name, data), (_, spec) in zip(files.items(), articles):
        try:
            parsed[name] = parse_article(data, name, LIMITS)
        except ArticleError:
            parsed[name] = None
        assert (parsed[name] is not None) == expected_valid(data, spec), (name, data[:300])

    def check(outcome: Outcome) -> None:
        valid = {name for name, article in parsed.items() if article is not None}
        for name, (state, error, _) in outcome.rows.items():
            assert (state == "ok") == (name in valid), (name, error)
        assert outcome.report.articles.total == len(valid)  # distinct webUrls, one article each
        published = [article for article in parsed.values() if article is not None and article.is_published]
        assert outcome.report.articles.published == len(published)
        topic_keys = {topic_key(name) for article in published for name in article.topics}
        topics_dir = outcome.feeds / "topics"
        topic_files = sorted(topics_dir.iterdir()) if topics_dir.exists() else []
        assert len(topic_files) == 3 * len(topic_keys), (topic_keys, [p.name for p in topic_files])
        links = {article.web_url for article in published}
        for path in [outcome.feeds / "all.rss", outcome.feeds / "all.atom", outcome.feeds / "all.json", *topic_files]:
            assert_sanitised_feed(path, LIMITS.max_title_chars, links)
        for feed in ("all.rss", "all.atom"):
            root = strict_parse((outcome.feeds / feed).read_bytes())
            count = len(root.findall("channel/item")) + len(root.findall(f"{ATOM}entry"))
            assert count == len(published)

    run_in_process(files, check)


# --------------------------------------------------------------------------- what the properties found

FOUND = {  # name -> (file, ingested?)
    # U+FFFE in an image URL passed canonical_url and crashed every run (lxml refused the attribute)
    "image-url-fffe": (
        b'---\ntitle: t\nwebUrl: https://e.com/a\nimages: [{url: "https://i.example/\\uFFFE"}]\n---\n',
        True,
    ),
    "web-url-ffff": (b'---\ntitle: t\nwebUrl: "https://e.com/\\uFFFF"\n---\n', False),
    # a year before 1000 gave RSS dates with a three-digit year
    "year-472": (b"---\ntitle: t\nwebUrl: https://e.com/a\npublishedDateTime: 0472-08-06\n---\n", False),
    # unknown fields the store's JSON encoder refused crashed every run
    "huge-int": (b"---\ntitle: t\nwebUrl: https://e.com/a\nsecured: 18446744073709551616\n---\n", True),
    "huge-int-key": (b"---\ntitle: t\nwebUrl: https://e.com/a\nx: {18446744073709551616: 1}\n---\n", True),
    "deep": (b"---\ntitle: t\nwebUrl: https://e.com/a\nx: " + b"[" * 300 + b"]" * 300 + b"\n---\n", True),
    # entity-escaped markup came out as markup in summaries (and, escaped twice, in titles)
    "escaped-script": (
        b'---\ntitle: "&amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;T"\nwebUrl: https://e.com/a\n'
        + b'excerpt: "&lt;img src=x onerror=alert(1)&gt;"\n---\n',
        True,
    ),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_what_the_properties_found(name):
    data, ingested = FOUND[name]

    def check(outcome: Outcome) -> None:
        assert (outcome.rows["00.txt"][0] == "ok") == ingested, outcome.rows
        for feed in ("all.rss", "all.atom"):
            assert_sanitised_feed(outcome.feeds / feed, LIMITS.max_title_chars, {"https://e.com/a"})

    run_in_process({"00.txt": data}, check)


# --------------------------------------------------------------------------- the CLI path, once


def test_nasty_corpus_through_the_cli(tmp_path: Path):
    project = make_project(tmp_path)
    big = "Ω<b>x</b>\u202e" * 12_500  # 100 kB of title
    valid = {
        # (a body of 100 kB of plain text: feedparser, in the feed checks, is slow on many tags)
        "ok-huge.txt": article_text(
            title=big, web_url="https://n.example/1", excerpt=big, body="Ω word\u202e *x* " * 6_250, topics=["AI"]
        ),
        "ok-topics.txt": article_text(
            title="topics",
            web_url="https://n.example/0",
            topics=["..", ".", "/", "\\", "C++", "C#", "C", "\u202e", "😀", "AI", " ai "],
        ),
        "ok-controls.txt": article_text(
            title="a\x01b\x1bc\x7fd\ufffe\uffff\x0c",
            web_url="https://n.example/2",
            excerpt="&lt;script&gt;alert(1)&lt;/script&gt; <img src=x onerror=alert(1)>",
            provider={"name": "<script>x</script>\x00", "domain": "e\u202e.com"},
            images=[{"url": "https://img.example/a b<\"'>.png"}, {"url": "javascript:x"}],
            related=[
                {
                    "title": "<svg onload=alert(1)>R\x00",
                    "excerpt": "\x1f",
                    "webUrl": 'https://rel.example/1?a=<b>&c="d"',
                },
                {"title": "bad", "webUrl": "javascript:alert(1)"},
            ],
            body="<script>alert(1)</script>\n\n[x](javascript:alert(1)) "
            "![i](../rel.png) <a href=/p onclick=x>y</a>\n\x01\u2028",
        ),
        "ok-draft.txt": article_text(title="draft", web_url="https://n.example/3", published=False),
        "ok-crlf.txt": ("\ufeff" + article_text(title="crlf", web_url="https://n.example/4")).replace("\n", "\r\n"),
    }
    bad = {
        "binary.txt": bytes(range(256)),
        "nul.txt": article_text(title="a", web_url="https://n.example/5").encode() + b"\x00",
        "latin1.txt": article_text(title="caf\u00e9", web_url="https://n.example/6").encode("latin-1"),
        "surrogate.txt": article_text(title="\ud800", web_url="https://n.example/7").encode("utf-8", "surrogatepass"),
        "surrogate-body.txt": article_text(title="s", web_url="https://n.example/8", body="\udfff").encode(
            "utf-8", "surrogatepass"
        ),
        "no-fence.txt": b"title: x\nwebUrl: https://n.example/9\n",
        "unclosed.txt": b"---\ntitle: x\nwebUrl: https://n.example/10\n",
        "tag.txt": b"---\ntitle: !!python/object/apply:os.system ['true']\nwebUrl: https://n.example/11\n---\n",
        "bomb.txt": b"---\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\ntitle: t\nwebUrl: https://n.example/12\n---\n",
        "list.txt": b"---\n- a\n- b\n---\n",
        "empty.txt": b"",
        "blank-title.txt": article_text(title=" \u3000 ", web_url="https://n.example/13").encode(),
        "bad-url.txt": article_text(title="t", web_url="javascript:alert(1)").encode(),
        "bad-date.txt": article_text(title="t", web_url="https://n.example/14", publishedDateTime="yesterday").encode(),
        "mapping-title.txt": b"---\ntitle: {a: 1}\nwebUrl: https://n.example/15\n---\n",
    }
    for name, text in {**valid, **bad}.items():
        project.write(name, text)
    report = project.run()  # checks every feed with tests.feedcheck
    assert report["status"] == "ok"
    assert report["files"]["seen"] == len(valid) + len(bad)
    assert report["files"]["quarantined"] == len(bad)
    assert sorted(Path(e["path"]).name for e in report["errors"]) == sorted(bad)
    assert all(e["message"].strip() for e in report["errors"])
    assert report["articles"] == {"total": len(valid), "published": len(valid) - 1}
    outcome = Outcome(report, {}, project.feeds, project.base_url, project.root)
    assert_output_layout(outcome)
    topic_files = sorted((project.feeds / "topics").iterdir())
    links = {"https://n.example/0", "https://n.example/1", "https://n.example/2", "https://n.example/4"}
    for path in [project.feeds / "all.rss", project.feeds / "all.atom", project.feeds / "all.json", *topic_files]:
        assert_sanitised_feed(path, LIMITS.max_title_chars, links)
    # `..`, `.`, `/` and `\` are topics too: they get digest slugs, never a path
    names = {p.name.rsplit(".", 1)[0] for p in topic_files}
    assert {"c", "c-plus-plus", "c-sharp", "ai"} <= names
    assert len(names) == 9  # AI and " ai " are one topic; "\u202e" shows nothing, so it is dropped
    assert etree.fromstring((project.feeds / "index.opml").read_bytes()).tag == "opml"
    # a second run changes nothing
    again = project.run()
    assert again["feeds"]["written"] == 0 and again["files"]["unchanged"] == len(valid) + len(bad)
