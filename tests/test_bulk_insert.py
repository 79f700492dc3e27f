"""The store's one hand-made fast path, `db.bulk_insert`, stores exactly what SQLAlchemy's insert stores.

Kept because it pays (docs/benchmarks.md, "Fast paths on record": 1.3-1.5x on 100,000 rows);
this is its agreement test, over generated rows of every column type the tables use.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.store.db import bulk_insert, connect, migrate
from worker.store.schema import Article, Page

texts = st.text(max_size=40)
maybe_texts = st.none() | texts
moments = st.datetimes(
    min_value=datetime(1000, 1, 1),
    max_value=datetime(9999, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
integers = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def article_rows(count: int) -> st.SearchStrategy[list[dict[str, object]]]:
    row = st.fixed_dictionaries(
        {
            "web_url": texts,
            "title": texts,
            "excerpt": maybe_texts,
            "published_at": moments,
            "date_given": st.booleans(),
            "first_seen": moments,
            "updated_at": moments,
            "category": maybe_texts,
            "type": maybe_texts,
            "original_url": maybe_texts,
            "quality": st.none() | integers,
            "heat": st.none() | integers,
            "is_published": st.booleans(),
            "removed": st.booleans(),
            "provider_name": maybe_texts,
            "provider_domain": maybe_texts,
            "content_hash": texts,
        }
    )
    return st.lists(row, min_size=1, max_size=count)


def stored(database: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    conn.close()
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=article_rows(20))
def test_bulk_insert_stores_what_sqlalchemy_stores(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("bulk")
    results = []
    for name, insert in (
        ("fast", bulk_insert),
        ("reference", lambda conn, table, rows: conn.execute(sa.insert(table), rows)),
    ):
        database = folder / f"{name}.db"
        engine = connect(f"sqlite:///{database}")
        try:
            migrate(engine)
            numbered = [{**row, "url": f"https://a.example/{index}"} for index, row in enumerate(rows)]
            with engine.begin() as conn:
                insert(conn, Article.__table__, numbered)
                insert(
                    conn,
                    Page.__table__,
                    [
                        {
                            "url": row["url"],
                            "status": "ok",
                            "next_fetch_at": row["published_at"],
                            "fetched_at": None,
                            "failures": 0,
                        }
                        for row in numbered
                    ],
                )
        finally:
            engine.dispose()
        results.append((stored(database, "article"), stored(database, "page")))
    assert results[0] == results[1]
