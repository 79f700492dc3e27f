"""Tests of page metadata extraction: precedence, URL resolution, decoding, garbage."""

from __future__ import annotations

import pytest

from worker.enrich.metadata import (
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    detect_encoding,
    extract_metadata,
)
from worker.model import PageMetadata

BASE = "https://news.example.com/section/story.html"

FULL_PAGE = """<!doctype html>
<html><head>
<title>Plain title | Site</title>
<meta name="description" content="Plain description">
<meta property="og:title" content="OG  title
  spread over lines">
<meta property="og:description" content="OG description">
<meta property="og:image" content="/img/lead.jpg">
<meta property="og:url" content="https://news.example.com/og-url">
<meta property="og:site_name" content="Example News">
<meta name="twitter:title" content="Twitter title">
<meta name="twitter:description" content="Twitter description">
<meta name="twitter:image" content="https://cdn.example.com/tw.jpg">
<link rel="canonical" href="/section/story">
</head><body><p>text</p></body></html>"""


def test_open_graph_comes_first() -> None:
    meta = extract_metadata(FULL_PAGE, BASE)
    assert meta == PageMetadata(
        title="OG title spread over lines",
        description="OG description",
        image="https://news.example.com/img/lead.jpg",
        canonical="https://news.example.com/section/story",
        site_name="Example News",
    )


def test_twitter_card_when_no_open_graph() -> None:
    page = """<html><head><title>Plain</title>
    <meta name="description" content="Plain description">
    <meta name="twitter:title" content="Tw title">
    <meta property="twitter:description" content="Tw description">
    <meta name="twitter:image:src" content="//img.example.net/a.png">
    </head></html>"""
    meta = extract_metadata(page, BASE)
    assert meta.title == "Tw title"
    assert meta.description == "Tw description"
    assert meta.image == "https://img.example.net/a.png"
    assert meta.canonical is None
    assert meta.site_name is None


def test_plain_html_fallback() -> None:
    page = """<html><head><TITLE> Only
      a   title </TITLE><meta name="Description" content=" d "></head>
    <body><svg><title>not this</title></svg></body></html>"""
    meta = extract_metadata(page, BASE)
    assert meta.title == "Only a title"
    assert meta.description == "d"
    assert meta.image is None


def test_og_tags_written_with_name_attribute_and_empty_ones_skipped() -> None:
    page = """<head><meta name="og:title" content="By name"><meta property="og:description" content="  ">
    <meta name="description" content="fallback"></head>"""
    meta = extract_metadata(page, BASE)
    assert meta.title == "By name"
    assert meta.description == "fallback"


def test_canonical_prefers_link_then_og_url() -> None:
    page = '<head><meta property="og:url" content="https://news.example.com/og"></head>'
    assert extract_metadata(page, BASE).canonical == "https://news.example.com/og"
    page = '<head><link rel="alternate canonical" href="c2"><meta property="og:url" content="/og"></head>'
    assert extract_metadata(page, BASE).canonical == "https://news.example.com/section/c2"


def test_base_href_is_honoured() -> None:
    page = '<head><base href="https://static.example.org/assets/"><meta property="og:image" content="a.jpg"></head>'
    assert extract_metadata(page, BASE).image == "https://static.example.org/assets/a.jpg"


@pytest.mark.parametrize(
    "image",
    ["javascript:alert(1)", "data:image/png;base64,AAAA", "ftp://example.com/a.png", "file:///etc/passwd", "   "],
)
def test_only_http_urls_are_kept(image: str) -> None:
    page = f'<head><meta property="og:image" content="{image}"><link rel=canonical href="{image}"></head>'
    meta = extract_metadata(page, BASE)
    assert meta.image is None
    assert meta.canonical is None


def test_bad_first_image_falls_back_to_next() -> None:
    page = '<head><meta property="og:image" content="data:x"><meta name="twitter:image" content="/t.png"></head>'
    assert extract_metadata(page, BASE).image == "https://news.example.com/t.png"


def test_text_is_capped() -> None:
    page = f'<head><meta property="og:title" content="{"word " * 200}"><meta name="description" content="{"x" * 5000}"></head>'
    meta = extract_metadata(page, BASE)
    assert meta.title is not None and meta.description is not None
    assert len(meta.title) <= MAX_TITLE_CHARS
    assert meta.title.endswith("\u2026")
    assert len(meta.description) == MAX_DESCRIPTION_CHARS


def test_entities_decoded_and_xml_illegal_characters_removed() -> None:
    page = "<head><title>A &amp; B &#8211; C\x01\x0b</title></head>"
    assert extract_metadata(page, BASE).title == "A & B \u2013 C"


@pytest.mark.parametrize(
    ("data", "encoding", "title"),
    [
        ("<title>Caf\u00e9</title>".encode("latin-1"), "ISO-8859-1", "Caf\u00e9"),
        # windows-1252 is what latin-1 labels mean on the web: 0x93/0x94 are quotes.
        (b"<title>\x93Hi\x94</title>", "latin-1", "\u201cHi\u201d"),
        (
            '<meta charset="windows-1251"><title>\u041f\u0440\u0438\u0432\u0435\u0442</title>'.encode("cp1251"),
            None,
            "\u041f\u0440\u0438\u0432\u0435\u0442",
        ),
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=shift_jis"><title>\u65e5\u672c</title>'.encode(
                "shift_jis"
            ),
            None,
            "\u65e5\u672c",
        ),
        # The HTTP header wins over <meta>.
        ('<meta charset="utf-8"><title>Caf\u00e9</title>'.encode("latin-1"), "iso-8859-1", "Caf\u00e9"),
        # A BOM wins over both.
        (b"\xef\xbb\xbf<title>Caf\xc3\xa9</title>", "iso-8859-1", "Caf\u00e9"),
        ("<title>Caf\u00e9</title>".encode("utf-16"), None, "Caf\u00e9"),
        # Unknown or non-text codecs are ignored; utf-8 is the default.
        ("<title>Caf\u00e9</title>".encode(), "no-such-charset", "Caf\u00e9"),
        ("<title>Caf\u00e9</title>".encode(), "rot13", "Caf\u00e9"),
        ("<title>Caf\u00e9</title>".encode(), "base64", "Caf\u00e9"),
        ('<meta charset="utf-16"><title>Caf\u00e9</title>'.encode(), None, "Caf\u00e9"),
        # Invalid utf-8 is replaced, not fatal.
        (b"<title>Caf\xe9 ok</title>", None, "Caf\ufffd ok"),
        (b'<?xml version="1.0" encoding="utf-8"?><html><head><title>XHTML</title></head></html>', None, "XHTML"),
    ],
)
def test_decoding(data: bytes, encoding: str | None, title: str) -> None:
    assert extract_metadata(data, BASE, encoding=encoding).title == title


def test_xml_declaration_in_str_input() -> None:
    page = "<?xml version='1.0' encoding='utf-8'?><html><head><title>Caf\u00e9</title></head></html>"
    assert extract_metadata(page, BASE).title == "Caf\u00e9"


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"   ",
        b"\x00\x00\x00",
        bytes(range(256)) * 4,
        b"<html",
        b"<<<>>>",
        "",
        "<!-- only a comment -->",
        b"\xff\xfe\x00\x00",
    ],
)
def test_garbage_never_raises(garbage: bytes | str) -> None:
    meta = extract_metadata(garbage, BASE)
    assert isinstance(meta, PageMetadata)


def test_bad_base_url_does_not_raise() -> None:
    page = '<head><meta property="og:image" content="a.png"><title>t</title></head>'
    meta = extract_metadata(page, "not a url")
    assert meta.title == "t"
    assert meta.image is None


def test_detect_encoding() -> None:
    assert detect_encoding(b"<p>x</p>") == "utf-8"
    assert detect_encoding(b"<p>x</p>", "UTF-8") == "utf-8"
    assert detect_encoding(b'<meta charset="latin1">') == "cp1252"
    assert detect_encoding(b"\xef\xbb\xbf<p>", "cp1251") == "utf-8-sig"
