"""The relational schema of llmos, as SQLAlchemy Core tables.

One schema serves SQLite (the embedded default) and, later, Postgres. Search
indexes that are engine-specific — SQLite's FTS5 tables (`search.py`) and the
vector tables, one per dimension (`vectors.py`) — are not declared here.

Tables: `agents` (one row per agent process image: settings, summary, the
window's start), `blocks` (core memory), `messages` (recall storage: every
message ever), `passages` (archival storage text; vectors live in the vector
index), `users` and `api_keys` (the access manager's principals and their
hashed keys; see `access/policy.py`), `agent_usage` (each agent's LLM token
totals, for its prompt-cache hit rate), `tools`, `tool_versions` and
`agent_tools` (user tools, every version of each, and which agents have
them), `grants`, `approvals` and `audit_log` (the access manager), `files`
and `file_versions` (versioned files), `load_sources` (documents loaded into
archival memory), `pending_messages` (agent messages accepted and not yet
answered; kernel/messaging.py), `nodes` (the kernels running on the database;
kernel/nodes.py).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

agents = Table(
    "agents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(64), nullable=False, default="local"),
    Column("name", String(128), nullable=False),
    Column("model", String(256), nullable=False),
    Column("base_url", String(512)),
    Column("context_window", Integer, nullable=False),
    Column("layout", String(16), nullable=False, default="stable"),
    Column("embedder", String(256), nullable=False),
    Column("system_prompt", Text, nullable=False),
    Column("settings", JSON, nullable=False, default=dict),
    # The recursive summary of everything evicted from the window so far.
    Column("summary", Text, nullable=False, default=""),
    # Messages with id >= window_start are in the context window (the FIFO);
    # older ones live only in recall storage.
    Column("window_start", Integer, nullable=False, default=0),
    # Core memory as rendered at the last compaction ("stable" layout): the
    # system message keeps this text until the next compaction, so the prompt
    # prefix stays cacheable while edits arrive as appended events.
    Column("core_snapshot", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("owner", "name", name="uq_agents_owner_name"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(64), nullable=False),
    Column("value", Text, nullable=False, default=""),
    Column("char_limit", Integer, nullable=False),
    Column("position", Integer, nullable=False, default=0),
    UniqueConstraint("agent_id", "label", name="uq_blocks_agent_label"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text),
    Column("tool_calls", JSON),
    Column("tool_call_id", String(64)),
    Column("name", String(128)),
    # What recall search matches: the content, plus what send_message said
    # (a reply lives in a tool call's arguments, not in `content`).
    Column("text", Text, nullable=False, default=""),
    Column("tokens", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Index("ix_messages_agent_id_id", "agent_id", "id"),
    Index("ix_messages_agent_created", "agent_id", "created_at"),
)

passages = Table(
    "passages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("text", Text, nullable=False),
    Column("source", String(512)),
    Column("created_at", Float, nullable=False),
    Index("ix_passages_agent_id", "agent_id", "id"),
)

# --- access: users and their API keys (access/policy.py) ---------------------

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    # The kernel's `owner` of this user's agents: a user sees only agents whose
    # owner is their name ("local" is the CLI's owner).
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # sha256 of the whole key, hex: the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    # The key's first characters, to tell keys apart in listings.
    Column("prefix", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Index("ix_api_keys_user_id", "user_id"),
)

# Cumulative LLM usage per agent (every request: steps and summaries), so
# `llmos agent show` can report the prompt-cache hit rate across sessions.
agent_usage = Table(
    "agent_usage",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("requests", Integer, nullable=False, default=0),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("cached_prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
)

# Which kernel process may run an agent now, when several share this database
# (kernel/leases.py). No foreign key: a lease may outlive a deleted agent's row
# by a few seconds, harmlessly.
agent_leases = Table(
    "agent_leases",
    metadata,
    Column("agent_id", String(40), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires", Float, nullable=False),  # 0 once released
    # bumped whenever a different kernel takes the lease: a kernel that sees
    # another epoch than its last one reloads the agent
    Column("epoch", Integer, nullable=False, default=1),
)

# Agent-to-agent messages a kernel accepted and whose target's turn has not yet
# run to its end (kernel/messaging.py). `message_id` is set, in the transaction
# that stores the message in the target's recall, once it is there; the row is
# deleted when the turn ends. Whichever kernel runs next finishes what is left.
pending_messages = Table(
    "pending_messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("agent_id", String(40), nullable=False, index=True),
    Column("owner", String(40), nullable=False),
    Column("content", Text, nullable=False),
    Column("hops", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("message_id", Integer, nullable=True),
    # an owner's decision on a call (access/approvals.py) delivered as this event:
    # the approval is marked delivered in the write that ends the row
    Column("approval_id", String(40), nullable=True),
    # a kernel that handed the event to the agent's node and waits for the turn:
    # the turn (JSON) is left in `result` for it instead of the row being deleted
    Column("waiter", String(64), nullable=True),
    Column("result", Text, nullable=True),
    Column("done_at", Float, nullable=True),
    # the agent whose turn waits for this message's reply (a waiting agent call):
    # the edges of the wait-for graph that spans the nodes (kernel/messaging.py)
    Column("caller_id", String(40), nullable=True),
)

# The kernels running on this database (kernel/nodes.py): each writes its row
# every few seconds while it runs and deletes it when it closes; a row not
# written for a while is a kernel that stopped without closing.
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),  # the kernel's lease holder name
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("agents", JSON, nullable=False),  # ids of the agents it holds now
    Column("images", Integer, nullable=False, default=0),  # agent images in its memory
)

# --- tools (tools/registry.py) ------------------------------------------------

# User tools: Python source registered by an owner; its schema was computed in
# the sandbox when it was added. Re-adding a name bumps `version`.
tools = Table(
    "tools",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("source", Text, nullable=False),
    Column("function", String(64), nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("schema", JSON, nullable=False),
    Column("exclusive", Integer, nullable=False, default=0),
    Column("irreversible", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("owner", "name", name="uq_tools_owner_name"),
)

# Every version of a user tool (the `tools` row is the one in use): who wrote it
# ("user:NAME" or "agent:NAME"), who approved it (agent-written ones), so a
# rollback can restore any of them.
tool_versions = Table(
    "tool_versions",
    metadata,
    Column("owner", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("source", Text, nullable=False),
    Column("function", String(64), nullable=False),
    Column("schema", JSON, nullable=False),
    Column("exclusive", Integer, nullable=False, default=0),
    Column("irreversible", Integer, nullable=False, default=0),
    Column("author", String(160)),
    Column("approved_by", String(64)),
    Column("created_at", Float, nullable=False),
)

# Which user tools an agent has (by name, so a new version applies at once).
agent_tools = Table(
    "agent_tools",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("tool_name", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
)

# --- access: grants, approvals, audit (access/grants.py, approvals.py, audit.py)

# What an agent may do beyond its own memory: kind "agent" (message that
# agent, target a name or "*"), "files" (a shared area, mode "r" or "rw").
grants = Table(
    "grants",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("target", String(256), primary_key=True),
    Column("mode", String(8), nullable=False, default="rw"),
    Column("created_at", Float, nullable=False),
)

# A call of an irreversible tool waiting for its owner's decision; kept after
# the decision (status approved/denied, then delivered_at) as a record.
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
    Column("tool_name", String(64), nullable=False),
    Column("arguments", Text, nullable=False),
    Column("call_id", String(64), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("reason", Text),
    Column("result", Text),
    Column("created_at", Float, nullable=False),
    Column("decided_at", Float),
    Column("delivered_at", Float),
    Index("ix_approvals_owner_status", "owner", "status"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("agent_id", String(40)),  # no foreign key: the record outlives the agent
    Column("agent_name", String(128)),
    Column("syscall", String(32), nullable=False),
    Column("target", String(256)),
    Column("decision", String(24), nullable=False),
    Column("detail", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_audit_owner_id", "owner", "id"),
)

# --- files (storage/files.py) -----------------------------------------------------

# A file of an area ("agent:<id>" for an agent's own files, "shared:<name>"
# for a shared area of one owner); every write adds a row to file_versions.
files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(64), nullable=False),
    Column("area", String(128), nullable=False),
    Column("path", String(512), nullable=False),
    Column("version", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("deleted", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("owner", "area", "path", name="uq_files_area_path"),
)

file_versions = Table(
    "file_versions",
    metadata,
    Column("file_id", Integer, ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("deleted", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)

# Documents loaded into an agent's archival memory (`llmos load`): one row per
# source and content hash, with how many chunks are in, so a load resumes
# where it stopped and the same content is never loaded twice.
load_sources = Table(
    "load_sources",
    metadata,
    Column("agent_id", String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True),
    Column("content_hash", String(64), primary_key=True),
    Column("source", String(512), nullable=False),
    Column("chunks_total", Integer, nullable=False),
    Column("chunks_done", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
)


# MCP servers an owner registered (`llmos mcp add`, see tools/mcp.py): their
# tools are rows of `tools` whose source names the server.
mcp_servers = Table(
    "mcp_servers",
    metadata,
    Column("owner", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("transport", String(16), nullable=False),  # stdio | http
    Column("command", Text),
    Column("args", JSON),
    Column("url", Text),
    Column("created_at", Float, nullable=False),
)
