"""Schema version 4: what several `serve` replicas on one PostgreSQL database share.

`run.replica` (who ran a run), `article.entry_id` (entry ids minted once), the feeds' order index `(published_at, url)`, `run_request`
(runs asked for on any replica), `cycle_lease` (the cycle lock's fencing token, one row),
`parse_claim` (files every replica helps read), `fetch_claim` (related pages they help
fetch) and `feed_document` (the rendered feeds every replica serves); on PostgreSQL,
`article.quality`, `article.heat` and `source_file.size` become BIGINT. On SQLite the new
tables stay empty but for the lease row.

Revision ID: 0004_replicas
Revises: 0003_orphan_candidate
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0004_replicas"
down_revision = "0003_orphan_candidate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("run", sa.Column("replica", sa.String(), nullable=True))
    # Entry ids minted once (NULL for the articles before: their URL's, as it was).
    op.add_column("article", sa.Column("entry_id", sa.String(), nullable=True))
    op.create_index("ix_article_entry_id", "article", ["entry_id"])
    if op.get_bind().dialect.name == "postgresql":  # SQLite's INTEGER is 64-bit already
        for table, column in (("article", "quality"), ("article", "heat"), ("source_file", "size")):
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    # Feeds order articles of one time by URL, not by id (publish.settings.RENDER_VERSION 5).
    op.drop_index("ix_article_published_at", table_name="article")
    op.create_index("ix_article_published_at_url", "article", ["published_at", "url"])
    op.create_table(
        "run_request",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("replica", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_run_request_run_id", "run_request", ["run_id"])
    lease = op.create_table(
        "cycle_lease",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(lease, [{"id": 1, "token": 0, "holder": "", "taken_at": _EPOCH}])
    op.create_table(
        "parse_claim",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("max_bytes", sa.BigInteger(), nullable=False),
        sa.Column("known_hash", sa.String(), nullable=True),
        sa.Column("root", sa.String(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_pid", sa.Integer(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("result", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("path"),
    )
    op.create_index(
        "ix_parse_claim_unread",
        "parse_claim",
        ["seq"],
        postgresql_where=sa.text("result IS NULL"),
        sqlite_where=sa.text("result IS NULL"),
    )
    op.create_table(
        "fetch_claim",
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column("last_modified", sa.String(), nullable=True),
        sa.Column("claimed_by", sa.String(), nullable=True),
        sa.Column("claimed_pid", sa.Integer(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("result", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("url"),
    )
    op.create_index("ix_fetch_claim_host", "fetch_claim", ["host"])
    op.create_table(
        "feed_document",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("modified_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )


def downgrade() -> None:
    raise NotImplementedError("the store is only ever upgraded")


_EPOCH = datetime(1970, 1, 1)
