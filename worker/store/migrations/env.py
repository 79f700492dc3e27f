"""Alembic's environment: runs the revisions on the connection `worker.store.db.migrate` hands over.

That connection is already inside the migration's one transaction (with SQLite, one that
covers DDL too): Alembic sees it as an external transaction and opens none of its own, so
the stamp, every revision and the version rows land together or not at all.
"""

from __future__ import annotations

from alembic import context

from worker.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the store's migrations run through worker.store.db.migrate (or `feedworker migrate`)")

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
