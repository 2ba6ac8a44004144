"""The cache of an agent's attached tools: a lookup that an invalidation overtook (the
kernel may look one up in a reader thread while a tool is attached on the loop) keeps
nothing, so the next turn sees the new tool."""

from __future__ import annotations

from sqlalchemy import event

from llmos import Kernel
from llmos.llm.replay import ScriptedCore, call
from llmos.tools.registry import ToolManager


async def test_a_lookup_overtaken_by_an_invalidation_is_not_kept(kernel: Kernel) -> None:
    async def instant(_request):
        return call("send_message", message="ok")

    kernel.add_core(ScriptedCore(instant, name="scripted/instant"))
    await kernel.create_agent("helper", model="scripted/instant", embedder="test/hash")
    agent_id = kernel.image("helper").id
    tools = ToolManager(kernel.db)
    queries: list[bool] = []

    # After the lookup's second (last) query, before it keeps the answer, a tool
    # is attached.
    @event.listens_for(kernel.db.engine, "after_cursor_execute")
    def _attach_meanwhile(*_args: object) -> None:
        queries.append(True)
        if len(queries) == 2:
            tools.attach(agent_id, "local", "calculate")

    assert tools.attached(agent_id, "local") == []  # what it read before the attach
    event.remove(kernel.db.engine, "after_cursor_execute", _attach_meanwhile)
    assert [t.name for t in tools.attached(agent_id, "local")] == ["calculate"]


async def test_a_tool_attached_through_another_node_is_seen_within_the_lifetime(
    kernel: Kernel,
) -> None:
    """Nodes share the database but not their caches: node A must not keep an agent's
    attached set forever when node B attaches a tool (A's turns would never offer it)."""
    from llmos.tools import registry

    async def instant(_request):
        return call("send_message", message="ok")

    kernel.add_core(ScriptedCore(instant, name="scripted/instant"))
    await kernel.create_agent("helper", model="scripted/instant", embedder="test/hash")
    agent_id = kernel.image("helper").id
    node_a, node_b = ToolManager(kernel.db), ToolManager(kernel.db)
    clock = [1000.0]
    node_a.attached_cache.clock = lambda: clock[0]
    assert node_a.attached(agent_id, "local") == []
    node_b.attach(agent_id, "local", "calculate")
    assert node_a.attached(agent_id, "local") == []  # cached: no read per step
    clock[0] += registry.ATTACHED_TTL + 0.01
    assert [t.name for t in node_a.attached(agent_id, "local")] == ["calculate"]
