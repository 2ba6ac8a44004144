"""User tools: Python functions and MCP servers' tools that agents call.

`registry.py` stores them and attaches them to agents, `executor.py` runs a
call with its grant, approval and audit, `sandbox/` (with `_child.py`) runs
Python tools behind an OS boundary (bubblewrap), `mcp.py` and `mcp_client.py` register
and call MCP servers, and `schema.py` builds a function's JSON schema.
"""
