"""AIOS's kernel API on llmos: agents written with AIOS's SDK (Cerebrum) run on llmos.

An AIOS agent sends its LLM, memory, storage and tool requests to a kernel
at `POST /query` (`{agent_name, query_type, query_data}`); this package
serves that API on llmos's kernel, as one llmos user:

- `shapes.py`: the request shapes (SDK 0.0.3's and the current ones) and the
  response envelope AIOS's kernel answers with;
- `service.py`: the queries mapped onto llmos's kernel (an llm query is an
  LLM syscall on the agent's core; memory is the agent's archival memory;
  storage its versioned files; tools the llmos tools attached to it);
- `routes.py`: `/query`, `/core/*`, `/status`, `/agents/submit`;
- `listener.py`: the loopback-only, keyless listener of
  `llmos serve --aios-user NAME`, and the front that puts it beside the API.

The same routes are also on the main API under `/v1/aios` (with a key).
"""
