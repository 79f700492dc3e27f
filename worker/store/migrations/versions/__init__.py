"""Alembic revisions; `000N_...` is schema version N (see worker/store/version.py)."""
