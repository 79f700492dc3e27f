"""Schema version 3: the orphan_candidate table (schema.OrphanCandidate).

Filled with the articles a run killed by an earlier version left published with no file
carrying them: the next cycle removes them.

Revision ID: 0003_orphan_candidate
Revises: 0002_article_content
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_orphan_candidate"
down_revision = "0002_article_content"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orphan_candidate",
        sa.Column("url", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("url"),
    )
    op.execute(
        "INSERT INTO orphan_candidate (url) SELECT url FROM article WHERE removed = false AND url NOT IN"
        " (SELECT article_url FROM source_file WHERE article_url IS NOT NULL)"
    )


def downgrade() -> None:
    raise NotImplementedError("the store is only ever upgraded")
