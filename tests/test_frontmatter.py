"""The article file format: field rules, and a clear error (field, line) for every bad file."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.conftest import SAMPLE, article_text
from worker.ingest.frontmatter import ArticleError, ParseLimits, parse_article


def parse(text: str | bytes, path: str = "inbox/a.txt"):
    return parse_article(text.encode() if isinstance(text, str) else text, path)


def error_of(text: str | bytes) -> ArticleError:
    with pytest.raises(ArticleError) as info:
        parse(text)
    return info.value


def test_the_reference_sample_parses_with_every_field():
    article = parse_article(SAMPLE.read_bytes(), str(SAMPLE))
    assert article.title == "NY civil rights advocates back facial recognition ban"
    assert article.url.startswith("https://apnews.com/article/new-york-new-york-city-")
    assert article.published_at == datetime(2021, 1, 26, 22, 12, tzinfo=UTC)
    assert article.is_published is False
    assert article.topics == ("Computer Vision", "AI")
    assert article.provider_name == "Associated Press" and article.provider_domain == "apnews.com"
    assert article.images[0].width == 3000
    assert len(article.related) == 26
    assert article.related[0].title == "Amnesty International calls for ban on facial recognition"
    assert "secured" in article.extra  # opaque: stored, never published
    assert article.warnings == ()


def test_bom_and_crlf_are_tolerated():
    text = article_text(title="Windows").replace("\n", "\r\n")
    article = parse("\ufeff".encode() + text.encode())
    assert article.title == "Windows"


def test_body_after_the_front_matter_is_kept():
    article = parse(article_text(body="\nSome *Markdown* body.\n"))
    assert article.body == "Some *Markdown* body."


def test_a_single_string_topic_is_one_topic():
    assert parse(article_text(topics="Space")).topics == ("Space",)


def test_unknown_fields_are_kept_not_errors():
    article = parse(article_text(mood="sunny", nested={"a": [1, 2]}))
    assert article.extra == {"mood": "sunny", "nested": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-01-26T22:12:00Z", datetime(2021, 1, 26, 22, 12, tzinfo=UTC)),
        ("2021-01-26T23:12:00+01:00", datetime(2021, 1, 26, 22, 12, tzinfo=UTC)),
        ("2021-01-26T22:12:00", datetime(2021, 1, 26, 22, 12, tzinfo=UTC)),  # naive = UTC
        ("2021-01-26", datetime(2021, 1, 26, tzinfo=UTC)),
        ("Tue, 26 Jan 2021 22:12:00 +0000", datetime(2021, 1, 26, 22, 12, tzinfo=UTC)),
    ],
)
def test_dates_become_utc(value, expected):
    quoted = parse(article_text(publishedDateTime=value))
    assert quoted.published_at == expected
    unquoted = parse(f"---\ntitle: T\nwebUrl: https://e.com/x\npublishedDateTime: {value}\n---\n")
    assert unquoted.published_at == expected


def test_no_date_is_left_for_the_first_seen_time():
    text = "---\ntitle: T\nwebUrl: https://e.com/x\n---\n"
    assert parse(text).published_at is None


def test_malformed_related_and_image_items_are_dropped_with_a_warning():
    article = parse(
        article_text(
            related=[
                {"title": "ok", "webUrl": "https://other.example/x"},
                "just a string",
                {"title": "no url"},
                {"title": "bad url", "webUrl": "javascript:alert(1)"},
                {"title": "self", "webUrl": "https://news.example.com/a"},
                {"title": "dup", "webUrl": "https://other.example/x?utm_source=feed"},
            ],
            images=[{"url": "https://img.example/a.jpg", "width": 10}, {"width": 5}, 42],
        )
    )
    assert [item.title for item in article.related] == ["ok"]
    assert [image.url for image in article.images] == ["https://img.example/a.jpg"]
    assert len(article.warnings) == 5
    assert any("related[1]" in warning for warning in article.warnings)


@pytest.mark.parametrize(
    ("text", "field", "line", "words"),
    [
        ("---\nwebUrl: https://e.com/x\n---\n", "title", None, "missing"),
        ("---\ntitle: ''\nwebUrl: https://e.com/x\n---\n", "title", 2, "missing or empty"),
        ("---\ntitle: [1, 2]\nwebUrl: https://e.com/x\n---\n", "title", 2, "must be a string"),
        ("---\ntitle: T\n---\n", "webUrl", None, "missing"),
        ("---\ntitle: T\nwebUrl: /relative/path\n---\n", "webUrl", 3, "absolute http or https"),
        ("---\ntitle: T\nwebUrl: ftp://e.com/x\n---\n", "webUrl", 3, "absolute http or https"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\nquality: high\n---\n", "quality", 4, "integer"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\nheat: true\n---\n", "heat", 4, "integer"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\npublished: maybe\n---\n", "published", 4, "true or false"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\npublishedDateTime: soon\n---\n", "publishedDateTime", 4, "ISO 8601"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\ntopics: {a: 1}\n---\n", "topics", 4, "list of strings"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\ntopics: [AI, [x]]\n---\n", "topics[1]", 4, "string"),
        ("---\ntitle: T\nwebUrl: https://e.com/x\nprovider: [x]\n---\n", "provider", 4, "mapping"),
    ],
)
def test_bad_fields_name_the_field_and_line(text, field, line, words):
    error = error_of(text)
    assert error.field == field
    assert error.line == line
    assert words in error.message
    assert str(error).startswith("inbox/a.txt: ")


@pytest.mark.parametrize(
    ("data", "words", "line"),
    [
        (b"", "empty", None),
        (b"   \n\n", "empty", None),
        (b"title: T\nwebUrl: https://e.com\n", "must start with a '---' line", 1),
        (b"---\ntitle: T\nwebUrl: https://e.com\n", "no closing '---'", 1),
        (b"---\ntitle: [unclosed\nwebUrl: https://e.com\n---\n", "invalid YAML", 3),
        (b"---\ntitle: T\n  bad: indent\n---\n", "invalid YAML", 3),
        (b"---\n- a list\n- not a mapping\n---\n", "must be a mapping", 2),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file", None),
        ("---\ntitle: Café\nwebUrl: https://e.com/x\n---\n".encode("latin-1"), "not UTF-8", 2),
        (b"---\ntitle: !!python/object:os.system echo hi\nwebUrl: https://e.com\n---\n", "unsupported YAML tag", 2),
        (b"---\ntitle: !!python/object/apply:os.system ['echo pwned']\nwebUrl: https://e.com\n---\n", "tag", 2),
    ],
)
def test_hostile_files_are_refused_with_a_message(data, words, line):
    error = error_of(data)
    assert words in error.message
    assert error.line == line


def test_an_alias_bomb_is_refused_quickly():
    lines = ["---", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for n in range(1, 10):
        prev = chr(ord("a") + n - 1)
        cur = chr(ord("a") + n)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]")
    lines += ["title: T", "webUrl: https://e.com/x", "topics: *j", "---"]
    started = time.perf_counter()
    error = error_of("\n".join(lines) + "\n")
    assert "alias" in error.message
    assert time.perf_counter() - started < 2  # a generous bound: the walk stops at the budget


def test_a_recursive_alias_is_refused():
    error = error_of("---\ntitle: T\nwebUrl: https://e.com/x\nloop: &x [*x]\n---\n")
    assert "alias" in error.message


def test_modest_aliases_are_fine():
    article = parse("---\ntitle: T\nwebUrl: https://e.com/x\np: &p {name: AP}\nprovider: *p\n---\n")
    assert article.provider_name == "AP"


def test_limits_cut_long_fields_and_lists_with_warnings():
    limits = ParseLimits(max_topics=2, max_related=1, max_title_chars=20)
    text = article_text(
        title="x" * 50,
        topics=["a", "b", "c"],
        related=[{"webUrl": "https://o.example/1"}, {"webUrl": "https://o.example/2"}],
    )
    article = parse_article(text.encode(), "a.txt", limits)
    assert len(article.title) <= 21 and article.topics == ("a", "b") and len(article.related) == 1
    assert len(article.warnings) == 3


def test_control_characters_and_html_in_text_do_not_break_parsing():
    article = parse(article_text(title="<script>alert(1)</script> Bell\u0007 title", excerpt="a\u0000b"))
    assert "Bell" in article.title  # rendering strips markup and illegal characters
