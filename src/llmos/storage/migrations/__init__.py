"""Alembic's migration scripts for llmos's schema (run by `storage/schema.py`)."""
