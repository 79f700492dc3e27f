"""Schema version 5: a topic's feed is read from one index; a cycle's changes and the quarantine by theirs.

`article_topic` gains copies of its article's `shown` (published and not removed),
`published_at` and `url`, with the index `(topic_id, shown, published_at, url)`: a topic
feed's newest entries, its count and its archive pages are ranges of it, where they were a
read and a sort of every article of the topic. The table is built anew from the old one
joined with `article` (SQLite cannot add a NOT NULL column without a default). `article`
gains an index on `updated_at`, which finds the articles a cycle changed, and `source_file`
one on `state`, which finds the quarantine (read by every cycle, incremental ones included).

Revision ID: 0005_topic_feed_index
Revises: 0004_replicas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_topic_feed_index"
down_revision = "0004_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "article_topic_new",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("shown", sa.Boolean(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["topic_id"], ["topic.id"]),
        sa.PrimaryKeyConstraint("article_id", "topic_id"),
    )
    op.execute(
        "INSERT INTO article_topic_new (article_id, topic_id, shown, published_at, url)"
        " SELECT t.article_id, t.topic_id, a.is_published AND NOT a.removed, a.published_at, a.url"
        " FROM article_topic AS t JOIN article AS a ON a.id = t.article_id"
    )
    op.drop_table("article_topic")  # and its index on topic_id, which the new one begins with
    op.rename_table("article_topic_new", "article_topic")
    op.create_index("ix_article_topic_feed", "article_topic", ["topic_id", "shown", "published_at", "url"])
    op.create_index("ix_article_updated_at", "article", ["updated_at"])
    op.create_index("ix_source_file_state", "source_file", ["state"])
