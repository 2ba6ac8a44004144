"""The kernel service stays right about what other commands change (issue 13's gaps).

Against a real running service (`tests/cli/test_service.py`'s `Home`: each
command a `python -m llmos` subprocess): the commands that used to open
a kernel of their own beside it (`agent set-embedder`, `load`, `mcp add|remove`,
`files search`) now run in it, so what the service holds in memory (the agent's
embedder and passage count, agents' tool lists) changes with them; a command
whose provider settings differ from the service's says so once, and the
service's files never show a secret; deleting an agent deletes its saved
prompt states.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from llmos.client.unix import UnixClient
from llmos.llm.kvstore import persisted_path
from tests.cli import test_service
from tests.cli.test_service import Home
from tests.llm.test_kv_forget import write_state
from tests.tools.test_mcp import SERVER as MCP_SERVER

# the service fixtures: a fake OpenAI server, and a home whose service is stopped after
server, home = test_service.server, test_service.home

SECRET = "sk-proj-SERVICESECRET0123456789abcdefXYZ"


def _client(home: Home) -> UnixClient:
    return UnixClient(str(home.paths.socket))


def _embedding_models(home: Home) -> list[str]:
    return [r["model"] for r in home.server.requests if "input" in r]


def test_set_embedder_changes_the_embedder_the_service_uses(home: Home) -> None:
    home.create("bob")
    with _client(home) as c:
        c.post("/agents/bob/archival", {"texts": ["bob likes sailing"]})
    assert _embedding_models(home)[-1] == "text-embedding-3-small"
    out = json.loads(
        home.ok("agent", "set-embedder", "bob", "openai/text-embedding-3-large", "--json")
    )
    assert out["embedder"] == "openai/text-embedding-3-large" and out["passages"] == 1
    # the service embeds bob's next passage and query with the new embedder, not the
    # one its image of bob had in memory
    with _client(home) as c:
        c.post("/agents/bob/archival", {"texts": ["bob also likes tea"]})
        assert _embedding_models(home)[-1] == "text-embedding-3-large"
        found = c.get("/agents/bob/archival/search", query="sailing")["results"]
    assert found and found[0]["text"] == "bob likes sailing"
    assert json.loads(home.ok("agent", "show", "bob", "--json"))["embedder"].endswith("large")
    bad = home.run("agent", "set-embedder", "bob", "nope/x")
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1


def test_load_runs_in_the_service_and_its_count_follows(home: Home, tmp_path: Path) -> None:
    home.create("ann")
    before = json.loads(home.ok("agent", "show", "ann", "--json"))["archival_count"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Otters\n\nOtters hold hands while they sleep.\n")
    (docs / "b.txt").write_text("Beavers build dams.\n")
    # a relative path works: the command sends it absolute (the service runs in /)
    done = home.finish(home.start("load", "ann", "docs", "--json", cwd=tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 2
    shown = json.loads(home.ok("agent", "show", "ann", "--json"))
    assert shown["archival_count"] == before + 2  # the service's image counted them
    again = json.loads(home.ok("load", "ann", str(docs), "--json"))
    assert again["added"] == 0  # idempotent, as before
    missing = home.run("load", "ann", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_mcp_add_and_remove_reach_the_services_tool_lists(home: Home) -> None:
    home.create("cat")
    home.ok("mcp", "add", "arith", "--", sys.executable, *MCP_SERVER)
    home.ok("tool", "attach", "cat", "arith__add")
    home.ok("send", "cat", "hello")  # the service caches cat's tool list for the turn
    with _client(home) as c:
        assert "arith__add" in [t["name"] for t in c.get("/agents/cat/tools")["tools"]]
    listed = json.loads(home.ok("mcp", "list", "--json"))
    assert listed[0]["name"] == "arith" and listed[0]["transport"] == "stdio"
    home.ok("mcp", "remove", "arith")
    with _client(home) as c:
        assert c.get("/agents/cat/tools")["tools"] == []  # not the cached list
    gone = home.run("mcp", "remove", "arith")
    assert gone.returncode == 1 and "no MCP server named 'arith'" in gone.stderr


def test_files_search_goes_through_the_service(home: Home) -> None:
    home.create("dan")
    home.ok("files", "write", "--agent", "dan", "notes/otters.txt", "-", stdin="Otters float.")
    assert "notes/otters.txt" in home.ok("files", "search", "--agent", "dan", "float")
    assert "no matches" in home.ok("files", "search", "--agent", "dan", "beavers")


def test_a_command_with_other_settings_gets_one_note(home: Home) -> None:
    home.env["OPENAI_API_KEY"] = SECRET
    home.create("eve")
    pid = home.pid()
    assert "note:" not in home.run("agent", "list").stderr  # the same settings: quiet
    home.env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
    home.env["OPENAI_API_KEY"] = SECRET + "-other"
    done = home.run("agent", "list")
    assert done.returncode == 0
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, done.stderr
    assert "OPENAI_API_KEY, OPENAI_BASE_URL differ" in notes[0]
    assert "llmos kernel restart" in notes[0] and str(pid) in notes[0]
    assert SECRET not in done.stderr and "127.0.0.1:9" not in done.stderr
    # a client setting (the idle limit, the home) is not the service's
    home.env["LLMOS_IDLE"] = "77"
    assert len([x for x in home.run("agent", "list").stderr.splitlines() if "note:" in x]) == 1
    # restart picks up this command's settings: no note afterwards
    restarted = home.ok("kernel", "restart")
    assert f"was pid {pid}" in restarted
    assert home.pid() != pid
    assert "note:" not in home.run("agent", "list").stderr
    # the service's state file, /health and log never hold a provider setting's value
    state = home.paths.state.read_text()
    assert SECRET not in state and "127.0.0.1:9" not in state
    assert set(json.loads(state)["environment"]["hmac"]) >= {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
    with _client(home) as c:
        assert SECRET not in json.dumps(c.health())
    assert SECRET not in home.paths.log.read_text()


def test_deleting_an_agent_deletes_its_saved_prompt_states(home: Home) -> None:
    home.create("fay")
    home.create("gus")
    ids = {n: json.loads(home.ok("agent", "show", n, "--json"))["id"] for n in ("fay", "gus")}
    states = home.path / "kv" / "agents"
    files = [write_state(states, f"agent:{ids['fay']}"), write_state(states, f"agent:{ids['gus']}")]
    assert files[0] == persisted_path(states, f"agent:{ids['fay']}")
    home.ok("agent", "delete", "fay", "--yes")
    assert [f.exists() for f in files] == [False, True]


def test_a_bad_idle_limit_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmos.client.local import DEFAULT_IDLE_SECONDS, ServiceError, idle_from_env

    monkeypatch.delenv("LLMOS_IDLE", raising=False)
    assert idle_from_env() == DEFAULT_IDLE_SECONDS
    monkeypatch.setenv("LLMOS_IDLE", "90")
    assert idle_from_env() == 90.0
    for bad, why in (("soon", "a number of seconds"), ("0", "between"), ("-5", "between")):
        monkeypatch.setenv("LLMOS_IDLE", bad)
        with pytest.raises(ServiceError, match=f"LLMOS_IDLE must be .*{why}"):
            idle_from_env()
