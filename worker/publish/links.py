"""Pure: an article's related items, reverse links, stored articles and fetched pages -> its entry's links."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from worker.model import LinkedArticle, PageMetadata, RelatedItem, RelatedLink

__all__ = ["MAX_REVERSE_LINKS", "related_links"]

# An article everyone links to would otherwise carry thousands of links in every feed.
MAX_REVERSE_LINKS = 50


def related_links(
    url: str,
    given: Sequence[RelatedItem],
    linking: Sequence[LinkedArticle],
    stored: Mapping[str, LinkedArticle],
    pages: Mapping[str, PageMetadata],
    *,
    clean: Callable[[str], str] = str.strip,
    max_reverse: int = MAX_REVERSE_LINKS,
) -> tuple[RelatedLink, ...]:
    """The related links of the article at canonical `url`, de-duplicated by canonical URL.

    `given` are its own items in file order; `linking` the stored articles whose items point
    at it (shown after the given ones, newest first); `stored` the stored articles by URL and
    `pages` the fetched pages by URL. `clean` turns untrusted text into what a feed may show
    (empty when nothing is left, so the next fallback is used).
    """
    seen = {url}
    links: list[RelatedLink] = []
    for item in given:
        if item.url in seen:
            continue
        seen.add(item.url)
        links.append(_given_link(item, stored.get(item.url), pages.get(item.url), clean))
    # Newest first; the URL only breaks ties, so the order never depends on the query's.
    by_url = sorted(linking, key=lambda article: article.url)
    newest_first = sorted(by_url, key=lambda article: article.published_at, reverse=True)
    shown = 0
    for article in newest_first:
        if shown >= max_reverse:
            break
        if article.url in seen:
            continue
        seen.add(article.url)
        links.append(_article_link(article, None, clean))
        shown += 1
    return tuple(links)


def _given_link(
    item: RelatedItem, article: LinkedArticle | None, page: PageMetadata | None, clean: Callable[[str], str]
) -> RelatedLink:
    if article is not None:
        return _article_link(article, item, clean)
    title = _first(clean, item.title, page.title if page else None) or _host(item.url)
    provider = _first(clean, item.provider, page.site_name if page else None)
    return RelatedLink(item.url, title, provider)


def _article_link(article: LinkedArticle, item: RelatedItem | None, clean: Callable[[str], str]) -> RelatedLink:
    # The stored article is the authority on its own title; the item's is a fallback only.
    title = _first(clean, article.title, item.title if item else None) or _host(article.url)
    provider = _first(clean, article.provider, item.provider if item else None)
    return RelatedLink(article.url, title, provider)


def _first(clean: Callable[[str], str], *candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate:
            text = clean(candidate)
            if text:
                return text
    return None


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or url
    except ValueError:
        return url
