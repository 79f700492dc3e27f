"""The store's schema history: Alembic's env.py and revisions (versions/), run by worker.store.db.migrate.

Configured from Python (`worker.store.db.alembic_config`), with no alembic.ini. To write a new
revision: `python -c "from worker.store.db import alembic_config; from alembic import command;
command.revision(alembic_config(), 'what it does', rev_id='0004_short_name')"`, then fill in
its upgrade(), and bump SCHEMA_VERSION and SCHEMA_REVISION in worker/store/version.py.
"""
