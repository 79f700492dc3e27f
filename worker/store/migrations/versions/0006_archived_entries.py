"""Schema version 6: archive pages change with their own entries, not with newer articles linking to them nor with articles published before them.

`article` gains `content_at`, when the article's entry as archive pages show it last
changed: `updated_at` moves too when a newer article starts or stops linking to it, which
its current feeds show among its related links and archive pages leave out (RFC 5005 asks
archive documents not to change). Filled from `updated_at`.

`article_topic` gains `cut`, a hash of the article's URL: a topic's archive pages end after
the articles whose `cut` the page size divides, so that an article published in the past
changes the one page it lands on, where pages cut by position all moved (publish.history).
It joins the feed index, whose range then also counts the pages.

The archive pages' stored windows are dropped and every topic marked dirty: the next cycle
renders every page again.

Revision ID: 0006_archived_entries
Revises: 0005_topic_feed_index
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006_archived_entries"
down_revision = "0005_topic_feed_index"
branch_labels = None
depends_on = None

_CHUNK = 1_000


def _page_cut(url: str) -> int:  # urls.page_cut as this revision defines it
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=4).digest(), "big") >> 1


def upgrade() -> None:
    bind = op.get_bind()
    # SQLite adds a NOT NULL column only with a default; every row is set just after. The
    # default stays on an upgraded SQLite store (dropping it would rebuild `article`, which
    # others reference), unlike a new one: every writer names both columns (store.articles).
    op.add_column(
        "article",
        sa.Column("content_at", sa.DateTime(), nullable=False, server_default=sa.text("'1970-01-01 00:00:00'")),
    )
    op.execute("UPDATE article SET content_at = updated_at")
    op.add_column("article_topic", sa.Column("cut", sa.Integer(), nullable=False, server_default=sa.text("0")))
    rows = bind.execute(sa.text("SELECT DISTINCT article_id, url FROM article_topic ORDER BY article_id")).all()
    update = sa.text("UPDATE article_topic SET cut = :cut WHERE article_id = :id")  # the key's first column
    for start in range(0, len(rows), _CHUNK):
        bind.execute(update, [{"id": id_, "cut": _page_cut(url)} for id_, url in rows[start : start + _CHUNK]])
    if bind.dialect.name == "postgresql":
        op.alter_column("article", "content_at", server_default=None)
        op.alter_column("article_topic", "cut", server_default=None)
    op.drop_index("ix_article_topic_feed", table_name="article_topic")
    op.create_index("ix_article_topic_feed", "article_topic", ["topic_id", "shown", "published_at", "url", "cut"])
    op.execute("DELETE FROM meta WHERE substr(key, 1, 20) = 'feed_window:archive/'")  # keys.FEED_WINDOW
    op.execute("UPDATE topic SET dirty = TRUE")
