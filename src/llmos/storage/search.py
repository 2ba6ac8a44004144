"""Full-text search over recall (`messages`) and archival (`passages`) text, per engine.

- SQLite: external-content FTS5 tables (`messages_fts`, `passages_fts`, porter
  stemming) kept in step by triggers, ranked by BM25.
- PostgreSQL: a stored generated `tsv tsvector` column (English stemming)
  with a GIN index on each table, ranked by `ts_rank` normalised by length.

A query is a list of words, any of which may match (each quoted: no operator
of either engine's query language gets through). Callers get ids best first,
filtered by agent (and role); the rows themselves they read through the model.
This module also holds the hot INSERT of a message, written per engine.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import Connection, text

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_WORDS = 32

# What `schema.py` adds beyond the tables of models.py on a fresh database;
# migrations/versions/0001 holds the same statements, frozen.
SQLITE_DDL = [
    stmt.format(t=t)
    for t in ("messages", "passages")
    for stmt in (
        "CREATE VIRTUAL TABLE IF NOT EXISTS {t}_fts USING fts5("
        "text, content='{t}', content_rowid='id', tokenize='porter unicode61')",
        "CREATE TRIGGER IF NOT EXISTS {t}_fts_ins AFTER INSERT ON {t} BEGIN "
        "INSERT INTO {t}_fts(rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER IF NOT EXISTS {t}_fts_del AFTER DELETE ON {t} BEGIN "
        "INSERT INTO {t}_fts({t}_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
        "CREATE TRIGGER IF NOT EXISTS {t}_fts_upd AFTER UPDATE OF text ON {t} BEGIN "
        "INSERT INTO {t}_fts({t}_fts, rowid, text) VALUES ('delete', old.id, old.text); "
        "INSERT INTO {t}_fts(rowid, text) VALUES (new.id, new.text); END",
    )
]
POSTGRES_DDL = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    *(
        stmt.format(t=t)
        for t in ("messages", "passages")
        for stmt in (
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english'::regconfig, coalesce(text, ''))) STORED",
            "CREATE INDEX IF NOT EXISTS ix_{t}_tsv ON {t} USING gin (tsv)",
        )
    ),
]


def extra_ddl(dialect: str) -> list[str]:
    return POSTGRES_DDL if dialect == "postgresql" else SQLITE_DDL


#: Words too common to say what a text is about: a query's keyword side ignores
#: them (Postgres' english configuration drops the same kind), so a passage does
#: not rank high for sharing only "and" or "the" with the query.
_STOPWORD_TEXT = """
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if
in into is it its itself just me more most my myself no nor not now of off on once
only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def words(query: str) -> list[str]:
    """The query's words that say what it is about (all of them if none does)."""
    found = _WORD.findall(query)
    meaningful = [w for w in found if w.lower() not in STOPWORDS]
    return (meaningful or found)[:MAX_WORDS]


def fts_query(query: str) -> str | None:
    """A safe FTS5 query: each word quoted (no operator injection), any may match."""
    found = words(query)
    return " OR ".join(f'"{w}"' for w in found) if found else None


def _ts_query(query: str) -> str | None:
    """The same for `to_tsquery`: each word a quoted lexeme, OR-ed."""
    found = words(query)
    return " | ".join(f"'{w}'" for w in found) if found else None


def _where(
    conn: Connection,
    table: str,
    roles: tuple[str, ...] | None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[str, dict]:
    params: dict[str, Any] = {}
    extra = ""
    if roles:
        names = [f"r{i}" for i in range(len(roles))]
        extra = f" AND t.role IN ({', '.join(':' + n for n in names)})"
        params.update(zip(names, roles, strict=True))
    if since is not None:  # created_at is epoch seconds on both engines
        extra += " AND t.created_at >= :t0"
        params["t0"] = since
    if until is not None:
        extra += " AND t.created_at <= :t1"
        params["t1"] = until
    if conn.dialect.name == "postgresql":
        return f"t.tsv @@ to_tsquery('english', :q) AND t.agent_id = :a{extra}", params
    return f"{table}_fts MATCH :q AND t.agent_id = :a{extra}", params


def _from(conn: Connection, table: str) -> str:
    if conn.dialect.name == "postgresql":
        return f"{table} t"
    return f"{table}_fts JOIN {table} t ON t.id = {table}_fts.rowid"


def _q(conn: Connection, query: str) -> str | None:
    return _ts_query(query) if conn.dialect.name == "postgresql" else fts_query(query)


def keyword_ids(
    conn: Connection,
    table: str,
    agent_id: str,
    query: str,
    *,
    roles: tuple[str, ...] | None = None,
    limit: int = 50,
    offset: int = 0,
    since: float | None = None,
    until: float | None = None,
) -> list[int]:
    """Ids of `table` rows (messages or passages) of the agent matching any word
    of `query` (created from `since` to `until`, epoch seconds, when given),
    best first (ties: newest first)."""
    q = _q(conn, query)
    if q is None:
        return []
    where, params = _where(conn, table, roles, since, until)
    if conn.dialect.name == "postgresql":
        # Normalisation 1: rank / (1 + log(length)), so a short text that is
        # all match beats a long one that mentions the words once, as BM25 does.
        order = "ts_rank(t.tsv, to_tsquery('english', :q), 1) DESC, t.id DESC"
    else:
        order = f"bm25({table}_fts), t.id DESC"
    rows = conn.execute(
        text(
            f"SELECT t.id FROM {_from(conn, table)} WHERE {where} ORDER BY {order} "
            "LIMIT :n OFFSET :o"
        ),
        {"q": q, "a": agent_id, "n": limit, "o": offset, **params},
    ).fetchall()
    return [r[0] for r in rows]


def keyword_count(
    conn: Connection,
    table: str,
    agent_id: str,
    query: str,
    roles: tuple[str, ...] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> int:
    q = _q(conn, query)
    if q is None:
        return 0
    where, params = _where(conn, table, roles, since, until)
    return int(
        conn.execute(
            text(f"SELECT count(*) FROM {_from(conn, table)} WHERE {where}"),
            {"q": q, "a": agent_id, **params},
        ).scalar_one()
    )


# The hottest statement of a step, as plain SQL: SQLAlchemy's per-execute
# compilation and caching cost several times SQLite's own work here.
_COLUMNS = "agent_id, role, content, tool_calls, tool_call_id, name, text, tokens, created_at"
_INSERT_SQLITE = f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_PG = (
    f"INSERT INTO messages ({_COLUMNS}) VALUES "
    "(%s, %s, %s, %s::json, %s, %s, %s, %s, %s) RETURNING id"
)


def insert_message(conn: Connection, row: tuple[Any, ...]) -> int:
    """Insert one message (the columns of `_COLUMNS`, tool_calls a list or None); its id."""
    row = (*row[:3], json.dumps(row[3]) if row[3] else None, *row[4:])
    if conn.dialect.name == "postgresql":
        return int(conn.exec_driver_sql(_INSERT_PG, row).scalar_one())
    return int(conn.exec_driver_sql(_INSERT_SQLITE, row).lastrowid)
