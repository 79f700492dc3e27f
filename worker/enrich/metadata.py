"""Title, description, image and canonical link of an HTML page, for related items."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from worker.model import PageMetadata
from worker.text import XML_ILLEGAL

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_TITLE_CHARS",
    "detect_encoding",
    "extract_metadata",
]

MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 1000
_MAX_SITE_NAME_CHARS = 300
_MAX_URL_CHARS = 2048
# Browsers look for <meta charset> in the first 1024 bytes; pages with big inline
# scripts before it are common enough to look a little further.
_SNIFF_BYTES = 4096

_META_CHARSET_RE = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.IGNORECASE)
_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*>", re.IGNORECASE)
# Characters XML 1.0 forbids: a feed containing one fails to build, so they never leave here.
# WHATWG Encoding: these labels mean windows-1252 on the web, whatever their name says.
_WINDOWS_1252_ALIASES = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "ascii", "us-ascii"})

_TITLE_KEYS = ("og:title", "twitter:title")
_DESCRIPTION_KEYS = ("og:description", "twitter:description", "description")
_IMAGE_KEYS = ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")
_SITE_NAME_KEYS = ("og:site_name",)


def extract_metadata(html: bytes | str, base_url: str, *, encoding: str | None = None) -> PageMetadata:
    """Metadata of a page: Open Graph, then Twitter card, then plain HTML. Never raises."""
    try:
        return _extract(html, base_url, encoding)
    except Exception:  # noqa: BLE001 - garbage from the web must never stop a run
        return PageMetadata()


def detect_encoding(data: bytes, declared: str | None = None) -> str:
    """Python codec for a page: BOM, then the HTTP charset, then <meta>, else utf-8."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return name
    if declared:
        codec = _codec_for(declared)
        if codec is not None:
            return codec
    match = _META_CHARSET_RE.search(data[:_SNIFF_BYTES])
    if match:
        codec = _codec_for(match.group(1).decode("ascii", "replace"))
        # A <meta> saying utf-16 was read as ASCII, so it cannot be true (WHATWG).
        if codec is not None and not codec.startswith("utf-16"):
            return codec
    return "utf-8"


def _codec_for(label: str) -> str | None:
    label = label.strip().strip("\"'").lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # rot13, base64, zlib... are codecs too, but not text encodings.
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _extract(html: bytes | str, base_url: str, encoding: str | None) -> PageMetadata:
    if isinstance(html, bytes):
        text = html.decode(detect_encoding(html, encoding), errors="replace")
    else:
        text = html
    # lxml refuses str input that carries an XML encoding declaration (XHTML pages).
    text = _XML_DECL_RE.sub("", text, count=1)
    text = XML_ILLEGAL.sub("", text)
    if not text.strip():
        return PageMetadata()
    try:
        root = lxml.html.document_fromstring(text, parser=_parser())
    except (etree.ParserError, ValueError):
        return PageMetadata()

    metas = _meta_values(root)
    base = _document_base(root, base_url)

    title = _first_text(metas, _TITLE_KEYS, MAX_TITLE_CHARS) or _clean_text(_title_text(root), MAX_TITLE_CHARS)
    description = _first_text(metas, _DESCRIPTION_KEYS, MAX_DESCRIPTION_CHARS)
    image = _first_url(base, (metas.get(key) for key in _IMAGE_KEYS))
    # rel=canonical is what search engines honour; og:url is often left at the home page.
    canonical = _first_url(base, [*_link_hrefs(root, "canonical"), metas.get("og:url"), metas.get("twitter:url")])
    site_name = _first_text(metas, _SITE_NAME_KEYS, _MAX_SITE_NAME_CHARS)
    return PageMetadata(title=title, description=description, image=image, canonical=canonical, site_name=site_name)


def _parser() -> lxml.html.HTMLParser:
    # No network, no entity expansion beyond HTML's own; comments and scripts are noise here.
    return lxml.html.HTMLParser(no_network=True, remove_comments=True, recover=True, huge_tree=False)


def _meta_values(root: lxml.html.HtmlElement) -> dict[str, str]:
    values: dict[str, str] = {}
    for meta in root.iter("meta"):
        content = meta.get("content")
        if content is None or not content.strip():
            continue
        # Twitter documents `name=`, Open Graph `property=`; sites mix both up.
        for attr in ("property", "name"):
            key = meta.get(attr)
            if key:
                values.setdefault(key.strip().lower(), content)
    return values


def _title_text(root: lxml.html.HtmlElement) -> str | None:
    # An <svg><title> in the body is not the page title.
    for path in ("head/title", ".//title"):
        element = root.find(path)
        if element is not None:
            return element.text_content()
    return None


def _link_hrefs(root: lxml.html.HtmlElement, rel: str) -> list[str]:
    hrefs = []
    for link in root.iter("link"):
        rels = (link.get("rel") or "").lower().split()
        href = link.get("href")
        if rel in rels and href:
            hrefs.append(href)
    return hrefs


def _document_base(root: lxml.html.HtmlElement, base_url: str) -> str:
    for element in root.iter("base"):
        href = element.get("href")
        if href:
            resolved = _http_url(base_url, href)
            if resolved is not None:
                return resolved
        break
    return base_url


def _first_text(metas: dict[str, str], keys: tuple[str, ...], cap: int) -> str | None:
    for key in keys:
        text = _clean_text(metas.get(key), cap)
        if text:
            return text
    return None


def _clean_text(text: str | None, cap: int) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    if not text:
        return None
    if len(text) > cap:
        text = text[: cap - 1].rstrip() + "\u2026"
    return text


def _first_url(base: str, candidates: Iterable[str | None]) -> str | None:
    for candidate in candidates:
        if candidate:
            resolved = _http_url(base, candidate)
            if resolved is not None:
                return resolved
    return None


def _http_url(base: str, href: str) -> str | None:
    href = href.strip()
    if not href or XML_ILLEGAL.search(href) or any(c in href for c in "\r\n\t"):
        return None
    try:
        resolved = urljoin(base, href.replace(" ", "%20"))
        parts = urlsplit(resolved)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or len(resolved) > _MAX_URL_CHARS:
        return None
    return resolved
