"""`llmos db`: the database's schema revision, upgrades, and moving to another database.

    llmos db status [--database-url URL]      engine, revision, rows per table
    llmos db upgrade [--database-url URL]     run the schema migrations to the newest
    llmos db copy --to URL [--from URL]       copy the installation (e.g. SQLite -> Postgres)

These run in-process on the database (not through a server): a schema change
or a copy is an administrator's act on the database itself. The database is
--database-url, else $LLMOS_DATABASE_URL, else the SQLite file in --home.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from llmos.cli.common import err, fail, group, home_dir, out, user_errors

if TYPE_CHECKING:
    from llmos.storage.db import Database

db_app = group("The database: schema revision, upgrades, copying to PostgreSQL.")

URL_HELP = (
    "Database URL (sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB). "
    "\\[default: $LLMOS_DATABASE_URL, else llmos.db in --home]"
)
UrlOption = Annotated[
    str | None,
    typer.Option("--database-url", envvar="LLMOS_DATABASE_URL", help=URL_HELP, show_default=False),
]


def _open(ctx: typer.Context, url: str | None, *, migrate: bool = True) -> Database:
    from llmos.kernel.kernel import default_home
    from llmos.storage.db import open_database

    return open_database(home_dir(ctx) or default_home(), url, migrate=migrate)


def _where(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=True)


@db_app.command("status")
def status(ctx: typer.Context, url: UrlOption = None) -> None:
    """Show the database, its schema revision and how many rows each table has."""
    from sqlalchemy import func, select

    from llmos.storage import schema
    from llmos.storage.models import metadata

    with user_errors():
        db = _open(ctx, url, migrate=False)
        try:
            with db.connect() as conn:
                revision = schema.current_revision(conn)
                out.print(f"database  {_where(db)}")
                out.print(f"revision  {revision} (this llmos: {schema.HEAD})")
                for table in metadata.sorted_tables:
                    n = conn.execute(select(func.count()).select_from(table)).scalar_one()
                    out.print(f"  {table.name:<16} {n}")
        finally:
            db.close()


@db_app.command("upgrade")
def upgrade(ctx: typer.Context, url: UrlOption = None) -> None:
    """Bring the database's schema to this llmos's newest revision (safe to repeat).

    Every llmos start does this too unless LLMOS_AUTO_MIGRATE=0; several
    processes starting at once migrate once (a lock is held meanwhile).
    """
    from llmos.storage import schema

    with user_errors():
        db = _open(ctx, url, migrate=True)
        try:
            with db.connect() as conn:
                revision = schema.current_revision(conn)
        finally:
            db.close()
    err.print(f"{_where(db)} is at schema revision {revision}")


@db_app.command("copy")
def copy(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The empty database to copy into (its URL).")],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            envvar="LLMOS_DATABASE_URL",
            help="The database to copy. \\[default: $LLMOS_DATABASE_URL, else llmos.db in --home]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Copy every agent, message, passage, vector, user, key and file into another database.

    Stop kernels and servers on the source first. The target must be empty;
    the copy is one transaction, so a failure leaves it empty. Counts of every
    table and a sample of vectors are compared afterwards. Then point llmos at
    the target: LLMOS_DATABASE_URL=URL (or --database-url on llmos serve).

    Example: llmos db copy --to postgresql+psycopg://llmos:PASSWORD@db.internal/llmos
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from llmos.storage.copy import copy_database
    from llmos.storage.db import Database

    with user_errors():
        src = _open(ctx, source)
        try:
            dst = Database.from_url(to)
        except BaseException:
            src.close()
            raise
        if _where(src) == _where(dst):
            src.close()
            dst.close()
            fail("--to names the database being copied")
        bars: dict[str, int] = {}
        try:
            with Progress(
                TextColumn("{task.description:<22}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=err,
            ) as progress:

                def tell(label: str, done: int, total: int) -> None:
                    if label not in bars:
                        bars[label] = progress.add_task(label, total=total or 1)
                    progress.update(bars[label], completed=done if total else 1)

                report = copy_database(src, dst, tell)
        finally:
            src.close()
            dst.close()
    rows = sum(report.rows.values())
    vectors = sum(report.vectors.values())
    # plain lines (rich would wrap a long URL): scripts read them
    print(
        f"copied {rows} rows and {vectors} vectors to {_where(dst)}; counts match, "
        f"{report.sampled} sampled vectors match.\n"
        f"Use it with: LLMOS_DATABASE_URL='{_where(dst)}' (with its password)",
        file=sys.stderr,
    )
