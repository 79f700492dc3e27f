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
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "details", "dl",
    "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins",
    "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "summary",
    "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul",
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
    return _markdown().render(markdown)


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")


def article_html(
    *, excerpt: str | None, body_markdown: str | None, image_url: str | None, provider: str | None, web_url: str
) -> str:
    """An article's entry content: excerpt, rendered body, lead image and provider, sanitised."""
    parts = []
    if excerpt:
        parts.append(f"<p>{html.escape(plain_text(excerpt))}</p>")
    if body_markdown:
        parts.append(markdown_html(body_markdown))
    if image_url:
        parts.append(f'<figure><img src="{html.escape(image_url)}" alt=""></figure>')
    if provider:
        parts.append(f'<p>Source: <a href="{html.escape(web_url)}">{html.escape(plain_text(provider))}</a></p>')
    return sanitize_html("\n".join(parts), web_url)
