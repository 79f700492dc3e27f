"""Pure: untrusted text and HTML -> safe HTML and XML-legal plain text."""

from __future__ import annotations

import html
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

import nh3
from markdown_it import MarkdownIt

from worker.text import plain_text, xml_safe

__all__ = ["article_html", "markdown_html", "plain_text", "sanitize_html", "xml_safe"]

_ALLOWED_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "dd",
    "del",
    "details",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "mark",
    "ol",
    "p",
    "pre",
    "q",
    "s",
    "small",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "time",
    "tr",
    "u",
    "ul",
}
_ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "time": {"datetime"},
    "ol": {"start"},
}
_URL_ATTRIBUTES = {"href", "src", "cite"}
_SAFE_SCHEMES = {"http", "https", "mailto"}


def sanitize_html(fragment: str, base_url: str) -> str:
    """Safe HTML: no script, no event handlers, no `javascript:`; relative URLs made absolute."""

    def absolute(element: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES:
            return value
        resolved = urljoin(base_url, value.strip())
        return resolved if urlsplit(resolved).scheme in _SAFE_SCHEMES else None

    return nh3.clean(
        xml_safe(fragment),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes=_SAFE_SCHEMES,
        attribute_filter=absolute,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def markdown_html(markdown: str) -> str:
    """CommonMark -> HTML (unsanitised: pass the result through sanitize_html)."""
    rendered: str = _markdown().render(markdown)  # markdown-it declares Any: its renderer is pluggable
    return rendered


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


def article_html(
    *, excerpt: str | None, body_markdown: str | None, image_url: str | None, provider: str | None, web_url: str
) -> tuple[str, bool]:
    """An article's entry content, sanitised: excerpt, rendered body, lead image and provider;
    and whether it has a body (Markdown that leaves something once sanitised)."""
    body = sanitize_html(markdown_html(body_markdown), web_url).strip() if body_markdown else ""
    before, after = [], []
    text = plain_text(excerpt or "")
    if text:
        before.append(f"<p>{html.escape(text)}</p>")
    if image_url:
        after.append(f'<figure><img src="{html.escape(image_url)}" alt=""></figure>')
    name = plain_text(provider or "")
    if name:
        after.append(f'<p>Source: <a href="{html.escape(web_url)}">{html.escape(name)}</a></p>')
    # Each part sanitised on its own: markup a body leaves open cannot take in what follows it.
    parts = (sanitize_html("\n".join(before), web_url), body, sanitize_html("\n".join(after), web_url))
    return "\n".join(part for part in parts if part), bool(body)
