"""Alembic revisions of the metadata DB, one file per schema change (Alembic skips this file)."""
