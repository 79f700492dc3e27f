"""Ingest: find article files on disk and turn their bytes into validated articles."""
