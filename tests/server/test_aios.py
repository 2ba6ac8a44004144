"""AIOS's kernel API on llmos, driven by AIOS's real SDK (`aios-agent-sdk`, Cerebrum).

A real server on loopback: the main API and the keyless AIOS listener on two
sockets of one uvicorn server (`server/aios/listener.py`, as `llmos serve
--aios-user alice` runs them), over a kernel with scripted cores. The SDK's
client (`requests`) talks to the AIOS socket; the main API (with keys) is
used to check what landed where. One test runs `llmos serve --aios-user` as
a real process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import uvicorn

pytest.importorskip("cerebrum", reason="aios-agent-sdk (Python < 3.12) is not installed")
from cerebrum.client import Cerebrum
from cerebrum.llm.communication import LLMQuery
from cerebrum.llm.layer import LLMLayer
from cerebrum.memory.communication import MemoryQuery
from cerebrum.memory.layer import MemoryLayer
from cerebrum.storage.layer import StorageLayer
from cerebrum.tool.layer import ToolLayer

from llmos import Kernel
from llmos.access.policy import AccessManager
from llmos.llm.core import ChatRequest, ChatResponse
from llmos.llm.replay import ScriptedCore, call, raw_call, say
from llmos.server.aios import listener
from llmos.server.app import create_app
from llmos.server.deps import ServerConfig
from tests.conftest import HashEmbedder
from tests.server.conftest import last_user_text, unique

CONFIG = ServerConfig(
    models=("scripted/*",),
    embedders=("test/hash",),
    default_model="scripted/aios",
    default_embedder="test/hash",
    rate=1000.0,
    burst=10_000.0,
)


def policy(request: ChatRequest) -> ChatResponse:
    """Answers that show what the kernel sent: sampling, tools, the forced format."""
    text = last_user_text(request)
    names = [t.name for t in request.tools]
    if "send_message" in names:  # an llmos turn (POST /agents/submit)
        return call("send_message", message=f"done: {text}")
    if names == ["respond"]:
        if "bad json" in text:
            return raw_call("respond", "{not json")
        if "wrong shape" in text:
            return call("respond", keywords="not a list")
        return call("respond", keywords=["cats", "dogs"], context=text)
    if "write" in names and request.tool_choice == "required":  # operate_file
        return call("write", file_path="made.txt", content=f"by the model: {text}")
    if names:
        return call(names[0], city="Paris")
    return say(f"echo: {text} t={request.temperature} max={request.max_tokens}")


class AiosServer:
    """The main API on one loopback port and the AIOS listener (as alice) on another."""

    def __init__(self, home: Path) -> None:
        self.kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
        self.core = ScriptedCore(policy, name="scripted/aios", capacity=8)
        self.kernel.add_core(self.core, model="scripted/aios")
        self.kernel.add_core(ScriptedCore(policy, name="scripted/other"), model="scripted/other")
        access = AccessManager(self.kernel.db)
        self.keys = {name: access.create_user(name)[1] for name in ("alice", "bob")}
        main = create_app(self.kernel, CONFIG)
        app, aios_sock, self.aios_url = listener.front(main, "alice", "127.0.0.1", 0)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, ws="none", timeout_keep_alive=300
        )
        main_sock = config.bind_socket()
        self.url = f"http://127.0.0.1:{main_sock.getsockname()[1]}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [main_sock, aios_sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def api(self, user: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        asyncio.run(self.kernel.close())


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AiosServer]:
    server = AiosServer(tmp_path_factory.mktemp("aios"))
    yield server
    server.stop()


@pytest.fixture
def sdk(srv: AiosServer) -> Cerebrum:
    return Cerebrum(srv.aios_url)


def query(srv: AiosServer, agent: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A query as the current Cerebrum sends it (its apis.py `send_request`)."""
    r = requests.post(
        f"{srv.aios_url}/query",
        json={"agent_name": agent, "query_type": kind, "query_data": data},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["response"]


# --- llm -----------------------------------------------------------------------------


def test_llm_chat_with_the_sdk_creates_the_agent_and_runs_on_its_core(
    srv: AiosServer, sdk: Cerebrum
) -> None:
    agent = unique("demo") + "/writer"
    result = sdk._query_llm(agent, LLMQuery(messages=[{"role": "user", "content": "hi"}]))
    assert result["response"]["response_message"] == "echo: hi t=0.0 max=1024"
    assert result["response"]["finished"] is True and result["response"]["tool_calls"] is None
    assert len(result["waiting_times"]) == 1 and result["turnaround_times"][0] >= 0
    # the AIOS agent is an llmos agent of alice's ("/" becomes ":"), on the default model
    with srv.api() as api:
        r = api.get(f"/v1/agents/{agent.replace('/', ':')}")
        assert r.status_code == 200 and r.json()["model"] == "scripted/aios"
        # and its LLM syscall was scheduled and counted like any agent's
        assert r.json()["usage"]["completion_tokens"] > 0


def test_llm_honours_temperature_and_max_tokens_that_aios_drops(srv: AiosServer) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}]
    got = query(
        srv,
        "sampler",
        "llm",
        {
            "messages": messages,
            "llms": [{"name": "whatever", "temperature": 0.7, "max_tokens": 77}],
        },
    )
    assert got["response_message"] == "echo: x t=0.7 max=77"
    got = query(
        srv, "sampler", "llm", {"messages": messages, "temperature": 1.5, "max_new_tokens": 33}
    )
    assert got["response_message"] == "echo: x t=1.5 max=33"
    sent = srv.core.requests[-1]
    assert [m.role for m in sent.messages] == ["system", "user"]  # the agent's messages as sent
    r = requests.post(
        f"{srv.aios_url}/query",
        json={
            "agent_name": "sampler",
            "query_type": "llm",
            "query_data": {"messages": messages, "max_new_tokens": 10**6},
        },
        timeout=30,
    )
    assert r.status_code == 422 and "do not fit" in r.json()["error"]["message"]


SCHEMA = {
    "type": "object",
    "properties": {
        "keywords": {"type": "array", "items": {"type": "string"}},
        "context": {"type": "string"},
    },
    "required": ["keywords", "context"],
}


def test_llm_response_format_json_schema_is_forced_and_checked(srv: AiosServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "kw", "schema": SCHEMA}}
    got = query(
        srv,
        "extractor",
        "llm",
        {
            "messages": [{"role": "user", "content": "pets"}],
            "response_format": fmt,
            "message_return_type": "json",
        },
    )
    assert json.loads(got["response_message"]) == {"keywords": ["cats", "dogs"], "context": "pets"}
    sent = srv.core.requests[-1]
    assert sent.tool_choice == "required" and sent.tools[0].parameters == SCHEMA

    for text in ("bad json", "wrong shape"):
        got = query(
            srv,
            "extractor",
            "llm",
            {"messages": [{"role": "user", "content": text}], "response_format": fmt},
        )
        assert got["finished"] is False and got["status_code"] == 502
        assert "does not match the response format" in got["error"]

    r = requests.post(
        f"{srv.aios_url}/query",
        json={
            "agent_name": "extractor",
            "query_type": "llm",
            "query_data": {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "nonsense"}},
                },
            },
        },
        timeout=30,
    )
    assert r.status_code == 422 and "schema is invalid" in r.json()["error"]["message"]


def test_llm_tools_come_back_as_tool_calls_with_aios_names(srv: AiosServer, sdk: Cerebrum) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "demo_author/weather",
            "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    result = sdk._query_llm(
        "tooler",
        LLMQuery(
            messages=[{"role": "user", "content": "weather?"}],
            tools=[weather],
            action_type="tool_use",
        ),
    )
    calls = result["response"]["tool_calls"]
    assert [(c["name"], c["parameters"]) for c in calls] == [
        ("demo_author/weather", {"city": "Paris"})
    ]
    assert srv.core.requests[-1].tools[0].name == "demo_author_weather"


def test_operate_file_lets_the_model_write_the_agents_files(srv: AiosServer) -> None:
    got = query(
        srv,
        "filer",
        "llm",
        {"messages": [{"role": "user", "content": "save it"}], "action_type": "operate_file"},
    )
    assert got["finished"] and "write made.txt" in got["response_message"]
    read = query(
        srv, "filer", "storage", {"operation_type": "read", "params": {"file_path": "made.txt"}}
    )
    assert json.loads(read["response_message"])["content"] == "by the model: save it"


# --- memory --------------------------------------------------------------------------


def test_memory_add_get_update_retrieve_remove(srv: AiosServer) -> None:
    agent = unique("rememberer")
    # SDK 0.0.3's shape: {messages, operation_type}
    old = MemoryQuery(
        messages=[{"role": "user", "content": "The cat is named Tom."}], operation_type="add_memory"
    ).model_dump()
    mid = query(srv, agent, "memory", old)["memory_id"]
    # the current shape: {params, operation_type}
    meta = {"tags": ["pets"], "category": "home"}
    other = query(
        srv,
        agent,
        "memory",
        {
            "operation_type": "add_memory",
            "params": {"content": "The Eiffel Tower is in Paris.", "metadata": meta},
        },
    )["memory_id"]
    got = query(
        srv, agent, "memory", {"operation_type": "get_memory", "params": {"memory_id": other}}
    )
    assert got["success"] and got["content"] == "The Eiffel Tower is in Paris."
    assert got["metadata"]["tags"] == ["pets"] and got["metadata"]["category"] == "home"

    upd = query(
        srv,
        agent,
        "memory",
        {
            "operation_type": "update_memory",
            "params": {"memory_id": mid, "content": "The cat is named Felix."},
        },
    )
    assert upd["success"] and upd["memory_id"] == mid  # same id, as AIOS keeps it
    found = query(
        srv,
        agent,
        "memory",
        {"operation_type": "retrieve_memory", "params": {"content": "cat named Felix", "k": 1}},
    )
    assert [r["content"] for r in found["search_results"]] == ["The cat is named Felix."]
    assert (
        len(
            query(
                srv,
                agent,
                "memory",
                {"operation_type": "retrieve_memory", "params": {"content": "cat", "k": 2}},
            )["search_results"]
        )
        == 2
    )

    assert query(
        srv, agent, "memory", {"operation_type": "remove_memory", "params": {"memory_id": mid}}
    )["success"]
    gone = query(
        srv, agent, "memory", {"operation_type": "get_memory", "params": {"memory_id": mid}}
    )
    assert gone["success"] is False and gone["error"] == "Memory not found"
    # it is the agent's archival memory, as the main API shows it
    with srv.api() as api:
        texts = [p["text"] for p in api.get(f"/v1/agents/{agent}/archival").json()["passages"]]
    assert texts == ["The Eiffel Tower is in Paris."]


# --- storage -------------------------------------------------------------------------


def test_storage_write_read_rollback_retrieve_share(srv: AiosServer) -> None:
    agent = unique("keeper")

    def op(kind: str, **params: Any) -> dict[str, Any]:
        return query(srv, agent, "storage", {"operation_type": kind, "params": params})

    assert op("create_file", file_path="notes/a.txt")["error"] is None
    assert op("create_file", file_path="notes/a.txt")["status_code"] == 409
    op("write", file_path="notes/a.txt", content="first draft about llamas")
    op("write", file_path="notes/a.txt", content="second draft")
    back = json.loads(op("rollback", file_path="notes/a.txt", n=1)["response_message"])
    assert back["from_version"] == 2 and back["version"] == 4
    assert json.loads(op("read", file_path="notes/a.txt")["response_message"])["content"] == (
        "first draft about llamas"
    )
    hits = json.loads(op("retrieve", query_text="llamas", n=3)["response_message"])
    assert [h["file_path"] for h in hits] == ["notes/a.txt"]
    assert json.loads(op("list_dir", dir_path="notes")["response_message"]) == ["notes/a.txt"]
    assert op("read", file_path="nope.txt")["status_code"] == 404

    shared = json.loads(op("share", file_path="notes/a.txt")["response_message"])
    assert shared["shared_area"] == "aios"
    with srv.api() as api:  # in alice's shared area "aios", as the main API shows it
        assert api.get("/v1/shared/aios/files/notes/a.txt").json()["content"] == (
            "first draft about llamas"
        )
    with srv.api("bob") as api:  # not bob's
        assert api.get("/v1/shared/aios/files/notes/a.txt").status_code == 404

    # a path that climbs stays inside the agent's area
    op("write", file_path="../../../etc/passwd", content="x")
    with srv.api() as api:
        assert api.get(f"/v1/agents/{agent}/files/etc/passwd").json()["content"] == "x"


# --- tools ---------------------------------------------------------------------------

ADD = '''
def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''


def test_tool_calls_run_the_agents_attached_tools_only(srv: AiosServer) -> None:
    agent = unique("calc")
    tool = unique("add").replace("-", "_")
    with srv.api() as api:
        r = api.post("/v1/tools", json={"source": ADD.replace("def add", f"def {tool}")})
        if r.status_code == 403:
            pytest.skip("no OS sandbox here: " + r.json()["error"]["message"])
        assert r.status_code == 201, r.text
        query(
            srv, agent, "memory", {"operation_type": "retrieve_memory", "params": {"content": "x"}}
        )  # creates the agent
        calls = [{"name": tool, "parameters": {"a": 2, "b": 3}}]
        denied = query(srv, agent, "tool", {"tool_calls": calls})
        assert denied["status_code"] == 403 and "not granted" in denied["error"]
        assert api.put(f"/v1/agents/{agent}/tools/{tool}").status_code in (200, 201)
    done = query(srv, agent, "tool", {"tool_calls": calls})
    assert done["error"] is None and done["response_message"] == "5"
    own = query(srv, agent, "tool", {"tool_calls": [{"name": "send_message", "parameters": {}}]})
    assert "agent loop's own functions" in own["error"]

    # an irreversible tool waits for alice's approval; nothing runs meanwhile
    launch = unique("launch").replace("-", "_")
    source = "__irreversible__ = True\n" + ADD.replace("def add", f"def {launch}")
    with srv.api() as api:
        assert api.post("/v1/tools", json={"source": source}).status_code == 201
        assert api.put(f"/v1/agents/{agent}/tools/{launch}").status_code in (200, 201)
        held = query(
            srv, agent, "tool", {"tool_calls": [{"name": launch, "parameters": {"a": 1, "b": 1}}]}
        )
        assert held["status_code"] == 202 and "waiting for approval" in held["error"]
        pending = api.get("/v1/approvals").json()["approvals"]
        assert [p["tool"] for p in pending if p["tool"] == launch] == [launch]


# --- setup, status, submit -----------------------------------------------------------


def test_setup_status_and_submit_with_the_sdk(srv: AiosServer, sdk: Cerebrum) -> None:
    sdk.add_llm_layer(LLMLayer(llm_name="scripted/other", max_new_tokens=64))
    sdk.add_storage_layer(StorageLayer()).add_memory_layer(MemoryLayer())
    sdk.add_tool_layer(ToolLayer())
    sdk.connect()  # scheduler and factory setup
    assert set(sdk.get_status().values()) == {"active"}
    agent = unique("late")
    got = sdk._query_llm(agent, LLMQuery(messages=[{"role": "user", "content": "y"}]))
    assert got["response"]["response_message"] == "echo: y t=0.0 max=64"
    with srv.api() as api:
        assert api.get(f"/v1/agents/{agent}").json()["model"] == "scripted/other"

    submitted = sdk.execute(agent, {"task": "tidy up"})
    assert sdk.poll_agent(submitted["execution_id"], polling_interval=0.05, timeout=20) == (
        "done: tidy up"
    )
    with pytest.raises(requests.HTTPError):  # a model llmos cannot reach: a clear 422
        sdk.add_llm_layer(LLMLayer(llm_name="gpt2", llm_backend="huggingface"))
    with pytest.raises(requests.HTTPError):
        sdk.get_agent_status("999999")
    sdk.cleanup()
    got = sdk._query_llm(unique("after"), LLMQuery(messages=[{"role": "user", "content": "z"}]))
    assert got["response"]["response_message"] == "echo: z t=0.0 max=1024"


# --- who may reach what --------------------------------------------------------------


def test_another_users_agent_and_memory_are_out_of_reach(srv: AiosServer) -> None:
    with srv.api("bob") as bob:
        r = bob.post("/v1/agents", json={"name": "twin", "model": "scripted/aios"})
        assert r.status_code == 201, r.text
        bob_id = r.json()["id"]
        assert bob.post(
            "/v1/agents/twin/archival", json={"texts": ["bob's secret plan"]}
        ).status_code in (200, 201)
        bob_pid = bob.get("/v1/agents/twin/archival").json()["passages"][0]["id"]
    # the listener is alice's: "twin" is alice's own (new) agent, never bob's
    found = query(
        srv,
        "twin",
        "memory",
        {"operation_type": "retrieve_memory", "params": {"content": "secret plan", "k": 5}},
    )
    assert found["search_results"] == []
    gone = query(
        srv, "twin", "memory", {"operation_type": "get_memory", "params": {"memory_id": bob_pid}}
    )
    assert gone["error"] == "Memory not found"
    assert (
        query(
            srv,
            "twin",
            "memory",
            {"operation_type": "remove_memory", "params": {"memory_id": bob_pid}},
        )["success"]
        is False
    )
    # bob's agent by id: refused, not resolved
    r = requests.post(
        f"{srv.aios_url}/query",
        json={
            "agent_name": bob_id,
            "query_type": "memory",
            "query_data": {"operation_type": "get_memory", "params": {"memory_id": 1}},
        },
    )
    assert r.status_code == 422
    with srv.api("bob") as bob:  # bob's memory untouched
        assert [p["text"] for p in bob.get("/v1/agents/twin/archival").json()["passages"]] == [
            "bob's secret plan"
        ]


def test_the_listener_refuses_browsers_and_other_hosts(srv: AiosServer) -> None:
    body = {
        "agent_name": "x",
        "query_type": "llm",
        "query_data": {"messages": [{"role": "user", "content": "hi"}]},
    }
    url = f"{srv.aios_url}/query"
    assert (
        requests.post(url, json=body, headers={"Origin": "https://evil.example"}).status_code == 403
    )
    assert requests.post(url, json=body, headers={"Host": "evil.example"}).status_code == 403
    assert (
        requests.post(
            url, data=json.dumps(body), headers={"Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    assert requests.get(f"{srv.aios_url}/v1/agents").status_code == 404  # only AIOS's routes


def test_the_main_api_needs_a_key_for_everything_including_aios(srv: AiosServer) -> None:
    with srv.api(None) as anon:
        assert anon.get("/v1/agents").status_code == 401
        assert anon.post("/v1/aios/query", json={}).status_code == 401
        assert anon.post("/query", json={}).status_code in (404, 405)  # no keyless /query here
    with srv.api("bob") as bob:  # with a key: the same API, as bob
        r = bob.post(
            "/v1/aios/query",
            json={
                "agent_name": "viakey",
                "query_type": "llm",
                "query_data": {"messages": [{"role": "user", "content": "k"}]},
            },
        )
        assert r.status_code == 200 and r.json()["response"]["response_message"].startswith(
            "echo: k"
        )
        assert bob.get("/v1/agents/viakey").status_code == 200
    with srv.api("alice") as alice:
        assert alice.get("/v1/agents/viakey").status_code == 404


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_the_listener_binds_loopback_only(host: str) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        listener.loopback_socket(host, 0)


def test_llmos_serve_aios_user(tmp_path: Path) -> None:
    from tests.server.test_cli import LLMOS, _free_port, invoke

    assert invoke(tmp_path, "user", "create", "alice").exit_code == 0
    nobody = invoke(tmp_path, "serve", "--aios-user", "nobody")
    assert nobody.exit_code == 1 and "no llmos user named 'nobody'" in nobody.stderr
    workers = invoke(tmp_path, "serve", "--aios-user", "alice", "--workers", "2")
    assert workers.exit_code == 1 and "one server process" in workers.stderr

    port, aios_port = _free_port(), _free_port()
    env = {**os.environ, "LLMOS_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [
            *LLMOS,
            "serve",
            "--port",
            str(port),
            "--aios-user",
            "alice",
            "--aios-port",
            str(aios_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = Cerebrum(f"http://localhost:{aios_port}").get_status()
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert set(status.values()) == {"active"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/agents").status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"AIOS kernel API as user alice on http://127.0.0.1:{aios_port}" in out


@pytest.mark.parametrize(
    ("kind", "data", "status", "says"),
    [
        ("files", {}, 422, "query_type"),
        ("memory", {"operation_type": "explode", "params": {}}, 422, "not one of"),
        ("storage", {"operation_type": "format_disk", "params": {}}, 422, "not one of"),
        ("llm", {"messages": []}, 422, "messages"),
        ("llm", {"messages": [{"role": "wizard", "content": "x"}]}, 422, "role"),
        (
            "llm",
            {"messages": [{"role": "user", "content": "x"}], "action_type": "dance"},
            422,
            "action_type",
        ),
        ("tool", {"tool_calls": []}, 422, "tool_calls"),
        ("llm", {"messages": [{"role": "user", "content": "q"}], "llms": ["x"]}, 422, "llms.0"),
    ],
)
def test_malformed_queries_are_clear_errors(
    srv: AiosServer, kind: str, data: dict[str, Any], status: int, says: str
) -> None:
    r = requests.post(
        f"{srv.aios_url}/query",
        json={"agent_name": "strict", "query_type": kind, "query_data": data},
        timeout=30,
    )
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_bad_operation_input_is_answered_in_band(srv: AiosServer) -> None:
    bad = query(
        srv,
        "strict",
        "memory",
        {"operation_type": "add_memory", "params": {"content": "x", "metadata": 7}},
    )
    assert bad["success"] is False and "metadata must be an object" in bad["error"]
    bad = query(
        srv,
        "strict",
        "memory",
        {"operation_type": "retrieve_memory", "params": {"content": "x", "k": 0}},
    )
    assert bad["success"] is False and "k must be" in bad["error"]
    bad = query(
        srv, "strict", "storage", {"operation_type": "write", "params": {"file_path": "a.txt"}}
    )
    assert bad["error"] == "write needs content (text)"
