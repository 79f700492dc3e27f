"""Schema version 6: archive pages change with their own entries, not with newer articles linking to them.

`article` gains `content_at`, when the article's entry as archive pages show it last
changed: `updated_at` moves too when a newer article starts or stops linking to it, which
its current feeds show among its related links and archive pages leave out (RFC 5005 asks
archive documents not to change). Filled from `updated_at`; the archive pages' stored
windows are dropped and every topic marked dirty, so that the next cycle renders every page
again, without reverse links.

Revision ID: 0006_archived_entries
Revises: 0005_topic_feed_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_archived_entries"
down_revision = "0005_topic_feed_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite adds a NOT NULL column only with a default; every row is set just after.
    op.add_column(
        "article",
        sa.Column("content_at", sa.DateTime(), nullable=False, server_default=sa.text("'1970-01-01 00:00:00'")),
    )
    op.execute("UPDATE article SET content_at = updated_at")
    op.execute("DELETE FROM meta WHERE substr(key, 1, 20) = 'feed_window:archive/'")  # keys.FEED_WINDOW
    op.execute("UPDATE topic SET dirty = TRUE")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("article", "content_at", server_default=None)
