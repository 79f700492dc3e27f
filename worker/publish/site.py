"""feeds/index.html from the store: each topic's count and newest headlines, rendered and written if changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.engine import Engine, Row

from worker.model import FeedSettings
from worker.publish.writer import write_if_changed
from worker.store import topics as topic_store
from worker.text import plain_text, topic_label

__all__ = ["NEWEST", "PAGE", "page_body", "write_page"]

log = structlog.get_logger("worker.publish")

PAGE = "index.html"  # beside index.opml (model.INDEX_FILES)
NEWEST = 3  # headlines per topic


def write_page(
    engine: Engine,
    settings: FeedSettings,
    visible: Sequence[Row[int, str, str]],
    *,
    put: Callable[[list[tuple[str, bytes]]], list[bool]] | None = None,
) -> bool:
    """Render the page of the topics `visible` (id, slug, name, as publish lists them) and write it
    unless the folder (or, with `put`, the store's documents) holds those bytes; whether it was written.
    A page, not a feed: it is logged (`page.written`), not counted in the report's feeds."""
    with engine.connect() as conn:
        summaries = topic_store.topic_summaries(conn, NEWEST)
    body = page_body(settings, visible, summaries)
    if put is not None:
        (written,) = put([(PAGE, body)])
    else:
        written = write_if_changed(settings.dir / PAGE, body)
    if written:
        log.info("page.written", page=PAGE)
    return written


def page_body(
    settings: FeedSettings,
    visible: Sequence[Row[int, str, str]],
    summaries: dict[int | None, topic_store.TopicSummary],
) -> bytes:
    from worker.publish.page import FeedUrls, Headline, PageFeed, render_page

    def feed(name: str, slug: str, stem: str, topic_id: int | None) -> PageFeed:
        summary = summaries.get(topic_id) or topic_store.TopicSummary(0, ())
        headlines = tuple(
            # As the feeds title an entry: its plain text, or its link when that shows nothing.
            Headline(plain_text(title) or web_url, web_url, published_at)
            for title, web_url, published_at in summary.newest
        )
        urls = FeedUrls(*(settings.base_url + f"{stem}.{kind}" for kind in ("atom", "rss", "json")))
        return PageFeed(name, slug, summary.count, headlines, urls)

    everything = feed("Every article", "all", "all", None)
    # Named as the feeds name them: the label, or the slug for a name with no visible text.
    topics = [feed(topic_label(row.name) or row.slug, row.slug, f"topics/{row.slug}", row.id) for row in visible]
    return render_page(settings.title, settings.base_url, everything, topics)
