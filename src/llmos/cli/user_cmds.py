"""`llmos user`: the users of the HTTP API (`llmos serve`) and their API keys.

    llmos user create NAME               a user and their first key (printed once)
    llmos user key NAME [--revoke-old]   a new key for a user
    llmos user list [--json]             users and how many live keys each has

These commands open the database with the access manager alone, without
booting a kernel. A key is shown only when it is made: the database keeps its
hash.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape

from llmos.cli.common import dump, error_text, fail, group, home_dir, out

if TYPE_CHECKING:
    from llmos.access.policy import AccessManager

T = TypeVar("T")

user_app = group("Users of the HTTP API (llmos serve) and their API keys.")


def _access(ctx: typer.Context) -> AccessManager:
    from llmos.access.policy import AccessManager
    from llmos.kernel.kernel import default_home
    from llmos.storage.db import open_database

    return AccessManager(open_database(home_dir(ctx) or default_home()))


def _user_call(ctx: typer.Context, body: Callable[[AccessManager], T]) -> T:
    from llmos.access.policy import UserExists, UserNotFound

    access = None
    try:
        access = _access(ctx)
        return body(access)
    except (UserExists, UserNotFound, ValueError, OSError) as exc:
        if os.environ.get("LLMOS_DEBUG"):
            raise
        fail(error_text(exc))
    finally:
        if access is not None:
            access.db.close()


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user's name (owner of their agents).")],
) -> None:
    """Create a user and print their API key (shown once: store it now).

    Example: llmos user create alice
    """
    user, key = _user_call(ctx, lambda access: access.create_user(name))
    # The key alone on stdout, so `KEY=$(llmos user create alice)` works.
    print(key)
    print(
        f"Created user {user.name}. This key is shown only now; send it as "
        "'Authorization: Bearer <key>'.",
        file=sys.stderr,
    )


@user_app.command("key")
def user_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="An existing user.")],
    revoke: Annotated[
        bool, typer.Option("--revoke-old", help="Revoke the user's other keys first.")
    ] = False,
) -> None:
    """Issue a new API key for a user (e.g. one who lost theirs) and print it once."""

    def body(access: AccessManager) -> str:
        if revoke:
            access.revoke_keys(name)
        return access.create_key(name)

    print(_user_call(ctx, body))


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List users and how many live keys each has (keys themselves are never shown)."""
    rows = _user_call(ctx, lambda access: access.list_users())
    if as_json:
        dump(rows)
    elif not rows:
        out.print("No users yet. Create one with: llmos user create NAME")
    else:
        for r in rows:
            out.print(f"{escape(r['name'])}  keys: {r['keys']}  id: {r['id']}")
