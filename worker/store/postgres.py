"""Everything PostgreSQL-only: the advisory cycle lock on a connection of its own and its
fencing token, the plain psycopg connection the snapshot reads through (importable without
SQLAlchemy), bulk rows by COPY and fresh planner statistics, and the claims several replicas
share work by (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.store.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "ANALYZE_FROM_ROWS",
    "CLAIMANT_IDLE_IN_TRANSACTION_S",
    "CLAIM_LEASE_S",
    "FENCE_CHECK",
    "LOST_LOCK",
    "RAW_DIALECT",
    "Claim",
    "FetchOffer",
    "LostLockError",
    "analyze_grown",
    "check_fence",
    "claim_host",
    "claim_reads",
    "clear_claims",
    "clear_fetches",
    "copy_rows",
    "cycle_lock",
    "cycle_running",
    "end_idle_transactions",
    "fence_writes",
    "fetches_of",
    "free_hosts",
    "held_lock_descriptors",
    "is_postgres",
    "offer_fetches",
    "offer_reads",
    "open_claims",
    "open_fetches",
    "open_raw",
    "post_fetches",
    "post_results",
    "raise_fence",
    "reset_sequences",
    "results_of",
]

# The socket of each cycle-lock connection this process holds: a forked child must close its
# copy, or the session (and the lock) would outlive this process.
_HELD: set[int] = set()


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0] in ("postgresql", "postgresql+psycopg")


def held_lock_descriptors() -> frozenset[int]:
    return frozenset(_HELD)


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (without the `+psycopg` driver part)."""
    return "postgresql:" + url.split(":", 1)[1]


# Advisory locks are per database: one key names feedworker's cycle lock (a signed 64-bit
# number, as pg_advisory_lock takes it).
_LOCK_KEY = int.from_bytes(hashlib.blake2b(b"feedworker-cycle", digest_size=8).digest(), "big", signed=True)


def _connect(url: str, **options: Any) -> Any:
    import psycopg

    try:
        return psycopg.connect(_libpq_url(url), **options)
    except psycopg.Error as exc:
        raise StoreError(f"database {_shown(url)}: {_reason(exc)}") from None


@contextmanager
def cycle_lock(url: str, on_wait: Callable[[], None] | None = None, holder: str = "") -> Iterator[int | None]:
    """Hold the database's cycle lock: a session-level advisory lock on a connection kept for
    the cycle. PostgreSQL releases it when that session ends, also when this process dies.

    Yields the fencing token this holder raised (`cycle_lease.token`; None before the schema
    exists): a session lost while this process goes on lets another replica take the lock, and
    the writes of this one then fail (see fence_writes) instead of landing after the takeover.
    """
    conn = _connect(url, autocommit=True)
    fd = conn.fileno()
    try:
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
            if on_wait is not None:
                on_wait()
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        _HELD.add(fd)
        yield _raise_fence(conn, holder)
    finally:
        _HELD.discard(fd)
        conn.close()  # ends the session: the lock goes with it


_RAISE_FENCE = (
    "UPDATE cycle_lease SET token = token + 1, holder = %s, taken_at = now() AT TIME ZONE 'UTC'"
    " WHERE id = 1 RETURNING token"
)
# Taken FOR SHARE at the start of each write transaction of a holder: a new holder's raise
# waits for it to commit, and a raise committed first makes it see another token.
FENCE_CHECK = "SELECT token FROM cycle_lease WHERE id = 1 FOR SHARE"


def _raise_fence(conn: Any, holder: str) -> int | None:
    import psycopg

    try:
        row = conn.execute(_RAISE_FENCE, (holder,)).fetchone()
    except psycopg.errors.UndefinedTable:
        return None  # no schema yet: the cycle raises it once it has made it (raise_fence)
    return int(row[0]) if row is not None else None


def raise_fence(conn: Connection, holder: str) -> int:
    """The fencing token, raised on `conn` (the cycle holder's, in a transaction of its own)."""
    row = conn.exec_driver_sql(_RAISE_FENCE, (holder,)).first()
    if row is None:
        raise StoreError("the store has no cycle_lease row: run `feedworker migrate`")
    return int(row[0])


class LostLockError(StoreError):
    """Another process took the cycle lock over: this one's writes would land after its."""


LOST_LOCK = "this process lost the cycle lock (its database session ended) and another took over: nothing more written"


def check_fence(cursor: Any, token: int) -> None:
    """Raise LostLockError unless `token` is still the newest (run at a write transaction's start)."""
    cursor.execute(FENCE_CHECK)
    row = cursor.fetchone()
    if row is None or int(row[0]) != token:
        raise LostLockError(LOST_LOCK)


def fence_writes(engine: Engine, token: int) -> None:
    """Every transaction `engine` begins checks the fencing token first."""
    from sqlalchemy import event

    def on_begin(conn: Connection) -> None:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            check_fence(cursor, token)
        finally:
            cursor.close()

    event.listen(engine, "begin", on_begin)


def cycle_running(url: str) -> bool | None:
    """Whether a cycle holds the database's lock now; None when the database cannot be asked."""
    try:
        conn = _connect(url, autocommit=True, connect_timeout=5)
    except StoreError:
        return None
    try:
        # Taken at once when no cycle holds it (and let go at once): a shared try would not do,
        # advisory locks of one session are re-entrant but another session's block.
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]
        if got:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
        return not got
    except Exception:  # noqa: BLE001  (a status line, not a failure)
        return None
    finally:
        conn.close()


class _RawDialect:
    """How store.snapshot's plain SQL writes on a psycopg connection."""

    begin_write = "BEGIN"
    mark = "%s"

    @staticmethod
    def check_fence(cursor: Any, token: int) -> None:
        check_fence(cursor, token)

    @staticmethod
    def time_param(moment: datetime) -> Any:
        from datetime import UTC

        return moment.astimezone(UTC).replace(tzinfo=None)  # as the store's UTCDateTime keeps it


RAW_DIALECT = _RawDialect()


def open_raw(url: str, busy_timeout_s: float) -> Any:
    """A plain psycopg connection (autocommit: transactions are explicit) for the snapshot a
    cycle plans from; None when the database cannot be reached (the cycle then says why)."""
    try:
        return _connect(url, autocommit=True, connect_timeout=max(1, int(busy_timeout_s)))
    except StoreError:
        return None


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def reset_sequences(conn: Connection, tables: Iterable[Table]) -> None:
    """Set the sequence of each table's integer autoincrement key past the largest key it
    holds, after rows were inserted with their keys given (`feedworker migrate --to`): the
    next row inserted without one then gets a new number, not one a copied row holds."""
    import sqlalchemy as sa

    preparer = conn.dialect.identifier_preparer
    for table in tables:
        column = table.autoincrement_column
        if column is None:
            continue
        name = preparer.format_table(table)
        found = sa.text("SELECT pg_get_serial_sequence(:table, :column)")
        sequence = conn.execute(found, {"table": name, "column": column.name}).scalar()
        if sequence is None:  # not a serial or identity column
            continue
        following = f"(SELECT COALESCE(MAX({preparer.quote(column.name)}), 0) + 1 FROM {name})"
        conn.execute(sa.text(f"SELECT setval(CAST(:sequence AS regclass), {following}, false)"), {"sequence": sequence})


# --------------------------------------------------------------------------- bulk rows and statistics


def copy_rows(conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Rows into `table` by COPY, in the connection's transaction: one stream, not a
    statement per row. Values are as the columns' bind processors made them (naive UTC times)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.exc import DBAPIError

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:  # as SQLAlchemy raises a refused INSERT, for the callers' handling
        raise DBAPIError.instance(f"COPY {table}", None, exc, psycopg.Error) from exc


# A table is analyzed again once this many rows changed since it last was, and at least as
# many as it held then.
ANALYZE_FROM_ROWS = 1_000


def analyze_grown(conn: Connection, tables: Iterable[str]) -> list[str]:
    """ANALYZE those of `tables` that changed by as many rows as they held when last analyzed;
    their names. A first run fills tables from nothing, and with no statistics the planner
    takes a lookup of a few hundred keys for a whole-table scan, each batch, in every batch
    (autovacuum, when it is on at all, comes a minute later). A doubling rule keeps it to
    a few ANALYZEs a table, whatever the corpus."""
    rows = conn.exec_driver_sql(
        "SELECT s.relname FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid"
        " WHERE s.relname = ANY(%(tables)s) AND s.n_mod_since_analyze >= %(least)s"
        " AND s.n_mod_since_analyze >= c.reltuples",
        {"tables": sorted(tables), "least": ANALYZE_FROM_ROWS},
    )
    grown = sorted(row[0] for row in rows)
    for name in grown:
        conn.exec_driver_sql(f'ANALYZE "{name}"')
    return grown


# --------------------------------------------------------------------------- parse claims
# The cycle holder offers the files it has to read; every replica (the holder too) claims
# batches with FOR UPDATE SKIP LOCKED, reads them in its parser pool and posts the results; the
# holder stores them in its order. A claim is free again when its lease ran out or the session
# that took it is gone (its replica died): another replica reads that batch again.

CLAIM_LEASE_S = 60

# A ReadTask (worker.ingest.parsers) with the file version it was offered for.
Claim = tuple[str, int, "str | None", str, str]  # path, max_bytes, known_hash, root, version

_CLAIM = """
WITH picked AS (
    SELECT path FROM parse_claim
    WHERE result IS NULL AND (
        claimed_by IS NULL
        OR lease_until < (now() AT TIME ZONE 'UTC')
        OR claimed_pid NOT IN (SELECT pid FROM pg_stat_activity))
    ORDER BY seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
UPDATE parse_claim AS c
SET claimed_by = %(claimant)s, claimed_pid = pg_backend_pid(),
    lease_until = (now() AT TIME ZONE 'UTC') + make_interval(secs => %(lease_s)s)
FROM picked WHERE c.path = picked.path
RETURNING c.path, c.max_bytes, c.known_hash, c.root, c.version, c.seq
"""


def offer_reads(conn: Connection, offers: list[tuple[str, int, str | None, str, str]]) -> None:
    """The claims of this cycle, in the order the holder stores them: (path, max_bytes,
    known_hash, root, version) each. Results posted for a file at the same version (a holder
    killed after they were read) are kept; every other claim goes."""
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import insert

    from worker.store.schema import PARSE_CLAIM

    conn.exec_driver_sql("CREATE TEMPORARY TABLE offered (path TEXT PRIMARY KEY, version TEXT) ON COMMIT DROP")
    rows = [{"path": path, "version": version} for path, _, _, _, version in offers]
    if rows:
        conn.execute(sa.text("INSERT INTO offered (path, version) VALUES (:path, :version)"), rows)
    conn.exec_driver_sql(
        "DELETE FROM parse_claim AS c WHERE NOT EXISTS"
        " (SELECT 1 FROM offered AS o WHERE o.path = c.path AND o.version = c.version)"
    )
    if not offers:
        return
    statement = insert(PARSE_CLAIM)
    statement = statement.on_conflict_do_update(index_elements=["path"], set_={"seq": statement.excluded.seq})
    conn.execute(
        statement,
        [
            {"path": path, "seq": seq, "version": version, "max_bytes": max_bytes, "known_hash": known, "root": root}
            for seq, (path, max_bytes, known, root, version) in enumerate(offers)
        ],
    )


def claim_reads(conn: Connection, claimant: str, limit: int, lease_s: float = CLAIM_LEASE_S) -> list[Claim]:
    """Up to `limit` unread files nobody holds, in the holder's order, now this claimant's."""
    params = {"limit": limit, "claimant": claimant, "lease_s": lease_s}
    rows = sorted(conn.exec_driver_sql(_CLAIM, params), key=lambda row: int(row[5]))
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def post_results(conn: Connection, results: list[tuple[str, str, str]]) -> None:
    """(path, version, encoded read) of claimed files: kept only where the claim is still
    for that version (the holder may have offered another since)."""
    if results:
        paths, versions, encoded = map(list, zip(*results, strict=True))
        conn.exec_driver_sql(  # one statement for the batch, not one per file
            "UPDATE parse_claim AS c SET result = r.result"
            " FROM unnest(%(paths)s::text[], %(versions)s::text[], %(results)s::text[]) AS r(path, version, result)"
            " WHERE c.path = r.path AND c.version = r.version",
            {"paths": paths, "versions": versions, "results": encoded},
        )


def results_of(conn: Connection, paths: list[str]) -> dict[str, str]:
    """The posted results among `paths` (absent: not read yet)."""
    rows = conn.exec_driver_sql(
        "SELECT path, result FROM parse_claim WHERE path = ANY(%(paths)s) AND result IS NOT NULL", {"paths": paths}
    )
    return {path: result for path, result in rows}


def open_claims(conn: Connection) -> bool:
    """Whether some offered file is still unread (a reason for a replica to help)."""
    return conn.exec_driver_sql("SELECT EXISTS (SELECT 1 FROM parse_claim WHERE result IS NULL)").scalar() is True


def clear_claims(conn: Connection) -> None:
    conn.exec_driver_sql("DELETE FROM parse_claim")


# --------------------------------------------------------------------------- fetch claims
# The related pages a cycle fetches, shared out the same way, but a whole host at a time: the
# replica holding a host's pages is the only one fetching from it, so its per-host limit is
# the group's. A host is taken under a transaction-level advisory lock of its own (tried, never
# waited for): two replicas never take pages of one host at once.

FetchOffer = tuple[str, str, "str | None", "str | None"]  # url, host, etag, last_modified

_FREE = (
    "result IS NULL AND (claimed_by IS NULL OR lease_until < (now() AT TIME ZONE 'UTC')"
    " OR claimed_pid NOT IN (SELECT pid FROM pg_stat_activity))"
)


def offer_fetches(conn: Connection, offers: list[FetchOffer]) -> None:
    """This cycle's pages to fetch, in the holder's order; whatever an earlier cycle left goes."""
    from worker.store.db import bulk_insert
    from worker.store.schema import FETCH_CLAIM

    conn.exec_driver_sql("DELETE FROM fetch_claim")
    rows = [
        {"url": url, "host": host, "seq": seq, "etag": etag, "last_modified": modified}
        for seq, (url, host, etag, modified) in enumerate(offers)
    ]
    bulk_insert(conn, FETCH_CLAIM, rows)


def free_hosts(conn: Connection) -> list[str]:
    """Hosts with pages nobody holds, the host of the first page first."""
    rows = conn.exec_driver_sql(f"SELECT host FROM fetch_claim WHERE {_FREE} GROUP BY host ORDER BY min(seq)")
    return [host for (host,) in rows]


def claim_host(conn: Connection, host: str, claimant: str, lease_s: float) -> list[tuple[str, str | None, str | None]]:
    """(url, etag, last_modified) of the free pages of `host`, now this claimant's; none when
    another replica is taking that host at this moment. Call in a transaction of its own."""
    key = int.from_bytes(
        hashlib.blake2b(b"feedworker-fetch:" + host.encode(), digest_size=8).digest(), "big", signed=True
    )
    if not conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%(key)s)", {"key": key}).scalar():
        return []
    rows = conn.exec_driver_sql(
        "UPDATE fetch_claim SET claimed_by = %(claimant)s, claimed_pid = pg_backend_pid(),"
        " lease_until = (now() AT TIME ZONE 'UTC') + make_interval(secs => %(lease_s)s)"
        f" WHERE host = %(host)s AND {_FREE} RETURNING url, etag, last_modified, seq",
        {"claimant": claimant, "lease_s": lease_s, "host": host},
    )
    return [(url, etag, modified) for url, etag, modified, _ in sorted(rows, key=lambda row: int(row[3]))]


def post_fetches(conn: Connection, results: list[tuple[str, str]]) -> None:
    """(url, encoded outcome) of claimed pages."""
    if results:
        conn.exec_driver_sql(
            "UPDATE fetch_claim SET result = %(result)s WHERE url = %(url)s",
            [{"url": url, "result": result} for url, result in results],
        )


def fetches_of(conn: Connection) -> dict[str, str]:
    """The posted outcomes, by URL."""
    rows = conn.exec_driver_sql("SELECT url, result FROM fetch_claim WHERE result IS NOT NULL")
    return {url: result for url, result in rows}


def open_fetches(conn: Connection) -> bool:
    """Whether some offered page nobody holds is waiting (a reason for a replica to help)."""
    return conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM fetch_claim WHERE {_FREE})").scalar() is True


def clear_fetches(conn: Connection) -> None:
    conn.exec_driver_sql("DELETE FROM fetch_claim")


# A claimant frozen inside a claim or post transaction (a paused container, a half-open
# connection) would keep its rows locked, and SKIP LOCKED would skip them even once their lease
# ran out: its session ends after this long idle in a transaction, and the locks with it.
CLAIMANT_IDLE_IN_TRANSACTION_S = 30


def end_idle_transactions(engine: Engine, seconds: float = CLAIMANT_IDLE_IN_TRANSACTION_S) -> None:
    """Every session of `engine` ends when idle in a transaction for `seconds` (claimants' engines)."""
    from sqlalchemy import event

    def on_connect(dbapi_conn: Any, record: Any) -> None:
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {int(seconds * 1000)}")
        dbapi_conn.commit()

    event.listen(engine, "connect", on_connect)
