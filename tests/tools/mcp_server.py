"""A tiny MCP server for tests/tools/test_mcp*.py: tools `add`, `fail`, `sleep`, `whoami`.

Serves stdio by default; `--http PORT` serves streamable HTTP instead, at
http://127.0.0.1:PORT/mcp (the SDK's own app, run by uvicorn), so a test can
kill the process and start it again on the same port. `whoami` answers the
server's process id, so a test can kill this very process and see that a
later call was served by a new one; `fail` always raises, for tool errors;
`sleep` keeps a call pending while a test kills the server.
Left out: resources, prompts, authentication — the tests need none.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.fastmcp import FastMCP

server = FastMCP("arith", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def fail(why: str) -> str:
    """Always raise, with `why` as the message."""
    raise RuntimeError(why)


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait `seconds`, then answer "slept"."""
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
def whoami() -> str:
    """The process id of this server."""
    return str(os.getpid())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    port: int | None = parser.parse_args().http
    if port is None:
        server.run("stdio")
        return
    server.settings.port = port
    server.run("streamable-http")


if __name__ == "__main__":
    main()
