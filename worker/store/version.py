"""The store's schema version, importable without SQLAlchemy."""

__all__ = ["SCHEMA_VERSION"]

# Bump with a migration in db._MIGRATIONS.
SCHEMA_VERSION = 3
