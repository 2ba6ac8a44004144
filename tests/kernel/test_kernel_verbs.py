"""The kernel's verbs that faces used to go around it for: settings, archival listing and
deletion, and the process states an agent's syscalls put it in."""

from __future__ import annotations

import asyncio

import pytest

from llmos import ChatRequest, ChatResponse, Kernel, LLMOSError
from llmos.errors import InvalidRequest, NotFound
from llmos.llm.replay import ScriptedCore, call
from tests.conftest import both_engines

engine = both_engines()


def _reply(req: ChatRequest) -> ChatResponse:
    return call("send_message", message="ok")


@pytest.fixture
async def agent(kernel: Kernel) -> str:
    kernel.add_core(ScriptedCore(_reply), model="scripted/verbs")
    await kernel.create_agent("ann", model="scripted/verbs", embedder="test/hash")
    return "ann"


async def test_settings_rules_hold_on_the_python_api(kernel: Kernel, agent: str) -> None:
    with pytest.raises(InvalidRequest, match="flush_target must be below flush_fraction"):
        await kernel.update_agent(agent, settings={"flush_target": 0.95})
    with pytest.raises(InvalidRequest, match="max_steps"):
        await kernel.update_agent(agent, settings={"max_steps": 0})
    with pytest.raises(InvalidRequest, match="at most half the context window"):
        await kernel.update_agent(agent, settings={"max_tokens": 1 << 19})
    assert kernel.get_agent(agent)["settings"]["max_steps"] == 10  # nothing changed


async def test_create_refuses_bad_settings_and_stores_nothing(kernel: Kernel) -> None:
    kernel.add_core(ScriptedCore(_reply), model="scripted/verbs")
    with pytest.raises(InvalidRequest, match="warning_fraction must not exceed flush_fraction"):
        await kernel.create_agent(
            "bad", model="scripted/verbs", embedder="test/hash", settings={"warning_fraction": 1.0}
        )
    assert kernel.list_agents() == []


async def test_update_is_all_or_nothing_and_persists(kernel: Kernel, agent: str, home) -> None:
    with pytest.raises(InvalidRequest, match="no block labelled 'nope'"):
        await kernel.update_agent(agent, blocks={"human": "Ann", "nope": "x"}, settings={})
    assert kernel.get_agent(agent)["blocks"][1]["value"] != "Ann"

    out = await kernel.update_agent(
        agent, blocks={"human": "Ann, a pilot"}, settings={"max_steps": 3, "temperature": 0.5}
    )
    assert out["settings"]["max_steps"] == 3
    reset = await kernel.update_agent(agent, settings={"temperature": None})
    assert reset["settings"]["temperature"] == 0.0  # None resets to the default
    # stored, not only in the image: a second kernel on the same database sees it
    other = Kernel.open(home)
    try:
        shown = other.get_agent(agent)
        assert shown["settings"]["max_steps"] == 3
        assert [b["value"] for b in shown["blocks"] if b["label"] == "human"] == ["Ann, a pilot"]
    finally:
        await other.close()


async def test_archival_listing_and_deletion_stay_within_the_agent(
    kernel: Kernel, agent: str
) -> None:
    await kernel.create_agent("bob", model="scripted/verbs", embedder="test/hash")
    (bobs,) = await kernel.insert_archival("bob", ["bob's secret"])
    mine = await kernel.insert_archival(agent, ["first", "second", "third"])

    page, total = kernel.list_archival(agent, offset=1, limit=1)
    assert total == 3 and [p.text for p in page] == ["second"]

    with pytest.raises(NotFound, match=f"no passage {bobs}"):
        kernel.delete_archival(agent, bobs)  # another agent's passage, through mine
    assert [p.text for p in kernel.list_archival("bob")[0]] == ["bob's secret"]

    kernel.delete_archival(agent, mine[0])
    assert [p.text for p in kernel.list_archival(agent)[0]] == ["second", "third"]
    assert kernel.get_agent(agent)["archival_count"] == 2


async def test_a_turn_blocked_in_a_tool_shows_waiting_tool(kernel: Kernel) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def policy(req: ChatRequest) -> ChatResponse:
        if req.messages[-1].role == "tool":
            return call("send_message", message="done")
        return call("archival_memory_search", query="anything", request_heartbeat=True)

    class SlowEmbedder:
        name, dim = "test/slow", 8

        def embed(self, texts: list[str]):  # runs in a worker thread
            import numpy as np

            loop.call_soon_threadsafe(started.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(5)
            return np.ones((len(texts), 8), dtype=np.float32)

    loop = asyncio.get_running_loop()
    kernel.cores.embedders["test/slow"] = SlowEmbedder()
    kernel.add_core(ScriptedCore(policy), model="scripted/tool")
    await kernel.create_agent("t", model="scripted/tool", embedder="test/slow")
    turn = asyncio.create_task(kernel.send("t", "look it up"))
    await asyncio.wait_for(started.wait(), 5)
    (proc,) = kernel.kernel_stats()["processes"]
    assert proc["state"] == "waiting_tool"
    release.set()
    assert (await turn).reply == "done"
    (proc,) = kernel.kernel_stats()["processes"]
    assert proc["state"] == "ready"


def test_every_llmos_exception_has_the_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    import llmos

    strays = []
    for info in pkgutil.walk_packages(llmos.__path__, "llmos."):
        if info.name.startswith("llmos.server.web"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and not name.startswith("_")  # private control flow, never raised to a caller
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not issubclass(obj, LLMOSError)
            ):
                strays.append(f"{module.__name__}.{name}")
    assert strays == []


class _ForgettingCore(ScriptedCore):
    """A scripted core that keeps prompt states, as the embedded model does."""

    def __init__(self) -> None:
        super().__init__(_reply)
        self.forgotten: list[str] = []

    def forget_agent(self, agent_id: str) -> None:
        self.forgotten.append(agent_id)


async def test_deleting_an_agent_deletes_its_saved_prompt_states(kernel: Kernel, home) -> None:
    from llmos.llm.kvstore import default_kv_dir
    from tests.llm.test_kv_forget import write_state

    core = _ForgettingCore()
    kernel.add_core(core, model="scripted/kv")
    ids = {}
    for name in ("gone", "kept"):
        ids[name] = (await kernel.create_agent(name, model="scripted/kv", embedder="test/hash"))[
            "id"
        ]
    states = default_kv_dir() / "agents"
    assert states.is_relative_to(home)
    files = {
        key: write_state(states, key)
        for key in (f"agent:{ids['gone']}", f"agent:{ids['gone']}:extract", f"agent:{ids['kept']}")
    }
    await kernel.delete_agent("gone")
    assert [p.exists() for p in files.values()] == [False, False, True]
    assert core.forgotten == [ids["gone"]]  # and the core dropped what it held in memory
