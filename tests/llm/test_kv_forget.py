"""Deleting an agent deletes its saved prompt states (issue 13): the files under
`kv/agents` whose header names the agent's keys, its entries in a store, and the
state the embedded model holds for it, which `persist` would otherwise write at close.
Another agent's states stay, even one whose id shares the agent's as a prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.llm.kvstore import KVStore, forget_agent_files, persisted_path

IDENTITY = {"model": "m"}


def write_state(directory: Path, key: str, nbytes: int = 32) -> Path:
    """A persisted state file as `KVStore.persist` writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    header = {"format": 1, "key": key, "identity": IDENTITY, "tokens": [1, 2, 3], "nbytes": nbytes}
    path = persisted_path(directory, key)
    path.write_bytes(json.dumps(header).encode() + b"\n" + bytes(nbytes))
    return path


KEYS = {
    "agent:agent-a": True,  # the agent's prompt state
    "agent:agent-a:extract": True,  # its memory extraction's
    "agent:agent-ab": False,  # another agent whose id starts with this one's
    "agent:agent-b": False,
    "gen:7": False,
}


def test_forget_agent_files_deletes_only_that_agents_states(tmp_path: Path) -> None:
    paths = {key: write_state(tmp_path, key) for key in KEYS}
    (tmp_path / "notes.txt").write_text("not a state")
    assert forget_agent_files(tmp_path, "agent-a") == 2
    for key, gone in KEYS.items():
        assert paths[key].exists() != gone, key
    assert (tmp_path / "notes.txt").exists()
    assert forget_agent_files(tmp_path, "agent-a") == 0  # nothing left: no error
    assert forget_agent_files(tmp_path / "missing", "agent-a") == 0


def test_a_file_named_like_the_agents_but_of_another_key_stays(tmp_path: Path) -> None:
    # names are cut at 80 characters: two long ids can share a file-name prefix
    long_a, long_b = "x" * 90 + "a", "x" * 90 + "b"
    a, b = write_state(tmp_path, f"agent:{long_a}"), write_state(tmp_path, f"agent:{long_b}")
    forget_agent_files(tmp_path, long_a)
    assert not a.exists() and b.exists()


def test_store_forget_agent_drops_its_entries(tmp_path: Path) -> None:
    store = KVStore(1 << 20, 1 << 20)
    for key in KEYS:
        write_state(tmp_path, key)
        assert store.load_persisted(key, tmp_path, IDENTITY)
    assert store.forget_agent("agent-a") == 2
    assert sorted(store) == sorted(k for k, gone in KEYS.items() if not gone)


@pytest.mark.slow
async def test_the_embedded_model_does_not_persist_a_deleted_agents_state(
    tmp_path: Path,
) -> None:
    """Real Gemma 3 270M: the agent's state is in the model when it is deleted; closing
    the core (which persists agents' states) must not write it back."""
    pytest.importorskip("llama_cpp")
    from llmos.llm.core import ChatRequest, Message
    from llmos.llm.llamacpp import LlamaCppCore

    state = tmp_path / "agents"
    system = Message("system", "You are a helpful assistant. " * 20)  # > 64 tokens: kept

    def ask(key: str) -> ChatRequest:
        msgs = [system, Message("user", "Say hello.")]
        return ChatRequest(msgs, tool_choice="none", max_tokens=4, cache_key=key)

    core = LlamaCppCore(context_window=1024, persist_kv=state)
    try:
        await core.chat(ask("agent-keep"))
        await core.chat(ask("agent-gone"))  # saves agent-keep's state; its own stays in place
        core.forget_agent("agent-gone")
    finally:
        await core.aclose()
    keys = {json.loads(p.read_bytes().split(b"\n", 1)[0])["key"] for p in state.glob("*.kv")}
    assert keys == {"agent:agent-keep"}
