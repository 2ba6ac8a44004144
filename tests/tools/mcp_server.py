"""A tiny stdio MCP server for tests/tools/test_mcp.py: two tools, `add` and `whoami`.

`whoami` answers the server's process id, so a test can kill this very
process and see that a later call was served by a new one.
"""

from __future__ import annotations

import os

from mcp.server.fastmcp import FastMCP

server = FastMCP("arith")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def whoami() -> str:
    """The process id of this server."""
    return str(os.getpid())


if __name__ == "__main__":
    server.run("stdio")
