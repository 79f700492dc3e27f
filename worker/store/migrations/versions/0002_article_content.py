"""Schema version 2: an article's large fields in article_content, its related items as one JSON list.

Revision ID: 0002_article_content
Revises: 0001_initial
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002_article_content"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_CHUNK = 500  # articles a statement


def upgrade() -> None:
    # Entry HTML is rendered when a feed is, for the few entries feeds show, not per file stored.
    op.drop_column("article", "body_html")
    # The large fields move to their own table (see schema.Article), with the related items
    # whole as JSON; related_item keeps what the graph queries need: one narrow row an item.
    op.create_table(
        "article_content",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.String(), nullable=True),
        sa.Column("extra_json", sa.String(), nullable=True),
        sa.Column("related_json", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("article_id"),
        sa.ForeignKeyConstraint(["article_id"], ["article.id"], ondelete="CASCADE"),
    )
    op.execute("INSERT INTO article_content (article_id, body, extra_json) SELECT id, body, extra_json FROM article")
    op.drop_column("article", "body")
    op.drop_column("article", "extra_json")
    _related_items_to_json(op.get_bind())
    op.drop_index("ix_related_item_url", table_name="related_item")  # made again below, covering
    op.add_column("related_item", sa.Column("wants_page", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("related_item", sa.Column("shows_page", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE related_item SET wants_page = (title IS NULL OR excerpt IS NULL OR image_url IS NULL),"
        " shows_page = (title IS NULL OR (provider_name IS NULL AND provider_domain IS NULL))"
    )
    for column in ("web_url", "title", "excerpt", "published_at", "provider_name", "provider_domain", "image_url"):
        op.drop_column("related_item", column)
    # Covering: the queue of pages to fetch is read from this index alone, in URL order.
    op.create_index("ix_related_item_url", "related_item", ["url", "wants_page", "article_id"])


def _related_items_to_json(conn: sa.Connection) -> None:
    """An article's related items as one JSON list, 500 articles at a time."""
    import orjson

    fields = ("url", "web_url", "title", "excerpt", "published_at", "provider_name", "provider_domain", "image_url")
    select = sa.text(
        f"SELECT article_id, {', '.join(fields)} FROM related_item WHERE article_id IN :ids ORDER BY article_id, position"
    ).bindparams(sa.bindparam("ids", expanding=True))
    update = sa.text("UPDATE article_content SET related_json = :json WHERE article_id = :id")
    article_ids = list(
        conn.execute(sa.text("SELECT DISTINCT article_id FROM related_item ORDER BY article_id")).scalars()
    )
    for start in range(0, len(article_ids), _CHUNK):
        items: dict[int, list[dict[str, Any]]] = {}
        for article_id, *values in conn.execute(select, {"ids": article_ids[start : start + _CHUNK]}):
            item = {name: value for name, value in zip(fields, values, strict=True) if value is not None}
            if "published_at" in item:  # naive UTC text, as UTCDateTime wrote it
                item["published_at"] = datetime.fromisoformat(str(item["published_at"])).replace(tzinfo=UTC).isoformat()
            items.setdefault(article_id, []).append(item)
        encoded = [
            {"id": key, "json": orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()}
            for key, value in items.items()
        ]
        conn.execute(update, encoded)


def downgrade() -> None:
    raise NotImplementedError("the store is only ever upgraded")
