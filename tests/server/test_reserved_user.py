"""A user named `local` would own the CLI's agents (the CLI acts as owner "local"):
the name is refused when a user is made, and a key of such a user from an
older database opens nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmos.access.policy import RESERVED_NAMES, AccessManager
from llmos.cli.main import app
from llmos.storage.db import Database
from llmos.storage.models import users
from tests.server.conftest import LiveServer


@pytest.mark.parametrize("name", ["local", "LOCAL", " local "])
def test_a_user_named_local_cannot_be_created(tmp_path: Path, name: str) -> None:
    db = Database.open(tmp_path / "llmos.db")
    with pytest.raises(ValueError, match="reserved"):
        AccessManager(db).create_user(name)


def test_llmos_user_create_local_fails_with_a_clear_error(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["--home", str(tmp_path), "user", "create", "local"])
    assert done.exit_code == 1
    assert "reserved" in done.output
    listed = CliRunner().invoke(app, ["--home", str(tmp_path), "user", "list", "--json"])
    assert '"local"' not in listed.stdout


def test_a_key_of_a_user_named_local_from_an_older_database_opens_nothing(
    tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path)
    try:
        access = server.access
        with server.kernel.db.begin() as conn:  # as an older llmos could have made it
            conn.execute(users.insert().values(id="user-old-local", name="local", created_at=0))
            key = "llmos-" + "a" * 43
            access._insert_key(conn, "user-old-local", key)
        assert "local" in RESERVED_NAMES
        assert access.authenticate(key) is None
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.url}/v1/agents", headers=auth).status_code == 401
    finally:
        server.stop()
