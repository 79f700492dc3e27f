"""The store's schema version, importable without SQLAlchemy or Alembic.

The schema's history is the Alembic revisions in `worker/store/migrations/versions/`; the
revision whose id starts with `000N_` is schema version N. `db.migrate` brings a store to
SCHEMA_REVISION and records both: Alembic's `alembic_version.version_num` and, for readers
that only use sqlite3, `meta.schema_version` (the text of SCHEMA_VERSION).
"""

__all__ = ["SCHEMA_REVISION", "SCHEMA_VERSION", "version_of"]

# Bump both with a new revision in migrations/versions/ (tests/test_store_schema.py checks them).
SCHEMA_VERSION = 6
SCHEMA_REVISION = "0006_archived_entries"


def version_of(revision: str) -> int | None:
    """The schema version an Alembic revision id stands for (`0003_orphan_candidate` -> 3)."""
    number = revision.split("_", 1)[0]
    return int(number) if number.isascii() and number.isdigit() else None
