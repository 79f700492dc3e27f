"""The store's one hand-made fast path, `db.bulk_insert`, stores exactly what SQLAlchemy's insert stores.

Kept because it pays (docs/benchmarks.md, "Fast paths on record": 1.3-1.5x on 100,000 rows);
this is its agreement test, over generated rows of every column type the tables use, on both
dialects (one store a dialect; each example's rows are inserted both ways, read back in the
same transaction, then rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Connection, Engine

from tests.conftest import both_dialects
from worker.store.db import bulk_insert, connect, migrate
from worker.store.schema import Article, Page

moments = st.datetimes(
    min_value=datetime(1000, 1, 1),
    max_value=datetime(9999, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)
integers = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def article_rows(count: int, dialect: str) -> st.SearchStrategy[list[dict[str, object]]]:
    """Rows of `article`, with the values the dialect's columns hold: PostgreSQL's text holds no
    NUL (both ways of inserting refuse it alike: no disagreement between them; the parser
    replaces it, tests/test_run.py)."""
    if dialect == "postgresql":
        texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
    else:
        texts = st.text(max_size=40)
    maybe_texts = st.none() | texts
    row = st.fixed_dictionaries(
        {
            "web_url": texts,
            "title": texts,
            "excerpt": maybe_texts,
            "published_at": moments,
            "date_given": st.booleans(),
            "first_seen": moments,
            "updated_at": moments,
            "content_at": moments,
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


@pytest.fixture
def store(tmp_path: Path, new_database: Callable[[], str | None]) -> Iterator[Engine]:
    """An empty store of the test's dialect at this feedworker's schema, for every example."""
    engine = connect(new_database() or f"sqlite:///{tmp_path / 'store.db'}")
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def stored(conn: Connection, table: str) -> list[tuple[object, ...]]:
    """The rows as the driver reads them back, in the order inserted; without the ids, which
    the database numbers (PostgreSQL's sequences go on after a rollback)."""
    result = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")
    numbered = list(result.keys()).index("id")
    return [tuple(value for position, value in enumerate(row) if position != numbered) for row in result]


@both_dialects()
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bulk_insert_stores_what_sqlalchemy_stores(store: Engine, data: st.DataObject):
    rows = data.draw(article_rows(20, store.dialect.name))
    numbered = [{**row, "url": f"https://a.example/{index}"} for index, row in enumerate(rows)]
    pages = [
        {"url": row["url"], "status": "ok", "next_fetch_at": row["published_at"], "fetched_at": None, "failures": 0}
        for row in numbered
    ]
    results = []
    for insert in (bulk_insert, lambda conn, table, rows: conn.execute(sa.insert(table), rows)):
        with store.connect() as conn:
            insert(conn, Article.__table__, numbered)
            insert(conn, Page.__table__, pages)
            results.append((stored(conn, "article"), stored(conn, "page")))
            conn.rollback()  # the next insert, and the next example, on the same empty tables
    assert results[0] == results[1]
