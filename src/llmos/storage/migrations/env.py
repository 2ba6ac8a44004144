"""Alembic's environment: runs on the connection `storage/schema.py` hands over.

Engine-specific objects outside models.py (FTS5 tables and triggers, the
tsvector columns and their GIN indexes, the vector tables) are left out of
autogenerate's comparison: migrations create them with explicit DDL.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from llmos.storage.models import metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, _other: Any) -> bool:
    name = name or ""
    if type_ == "table":
        return not ("_fts" in name or name.startswith("passages_vec_"))
    if type_ == "column":
        return name != "tsv"
    if type_ == "index":
        return not (name.endswith("_tsv") or name.startswith("ix_passages_vec_"))
    return True


def run() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        # SQLite alters a table by copying it: alembic's batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# alembic runs this file; anything else importing it (a walk over llmos's
# modules) has no migration context and runs nothing.
if hasattr(context, "config"):
    run()
