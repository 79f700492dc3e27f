"""Store: the database of articles, topics, source files and runs (SQLModel over SQLAlchemy)."""
