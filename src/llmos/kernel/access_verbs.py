"""The kernel's verbs on tools, grants, approvals and the audit log.

A mixin of `Kernel` (kernel/kernel.py), kept apart so the facade stays short.
Tools are registered per owner (schemas computed in the sandbox) and attached
to agents, which is their grant; grants also let an agent message another or
use a shared file area. A call of an irreversible tool waits for its owner:
`decide` approves (the tool runs now) or denies it, and either way the agent
gets the outcome as an event and a turn, through the kernel's one wake path.
An agent-written tool (`create_tool`, `tools/authoring.py`) waits the same
way; approved, it becomes a new version of that tool, attached to the agent.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llmos.agent.agent_functions import AGENT_FUNCTIONS
from llmos.agent.file_functions import FILE_FUNCTIONS
from llmos.agent.functions import BUILTINS, SELF_TOOL_FUNCTIONS
from llmos.storage.files import agent_area, shared_area
from llmos.tools import authoring
from llmos.tools.executor import clip
from llmos.tools.registry import ToolNotFound

#: names no user tool may take: the kernel's functions
RESERVED = frozenset({*BUILTINS, *FILE_FUNCTIONS, *AGENT_FUNCTIONS, *SELF_TOOL_FUNCTIONS})

if TYPE_CHECKING:
    from llmos.access.approvals import Approvals
    from llmos.access.audit import AuditLog
    from llmos.access.grants import Grants
    from llmos.agent.loop import EventSink, Turn
    from llmos.kernel.messaging import AgentMessenger
    from llmos.kernel.wake import Waker
    from llmos.memory.image import AgentImage
    from llmos.tools.registry import ToolManager


class AccessVerbs:
    """Tool, grant, approval and audit verbs of `Kernel`; the attributes below are the kernel's."""

    tools: ToolManager
    grants: Grants
    audit_log: AuditLog
    approval_store: Approvals
    waker: Waker
    messenger: AgentMessenger

    if TYPE_CHECKING:

        def image(self, name_or_id: str, owner: str = "local") -> AgentImage: ...

    # --- tools --------------------------------------------------------------------

    async def add_tool(
        self,
        source: str,
        owner: str = "local",
        *,
        exclusive: bool | None = None,
        irreversible: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Register the public functions of Python `source` as tools of `owner`.

        Schemas come from the signatures and docstrings, computed in the sandbox.
        Raises ToolError (bad file, a built-in's name).
        """
        return await self.tools.add(
            source, owner, exclusive=exclusive, irreversible=irreversible, reserved=RESERVED
        )

    async def propose_tool(
        self,
        image: AgentImage,
        name: str,
        source: str,
        description: str,
        examples: list[dict[str, Any]],
    ) -> tuple[bool, str, str | None]:
        """An agent's `create_tool`: test it in the sandbox, file it for approval."""
        return await authoring.propose(self, image, name, source, description, examples, RESERVED)

    def tool_versions(self, name: str, owner: str = "local") -> list[dict[str, Any]]:
        """Every version of a tool (source, author, approver), oldest first."""
        return self.tools.versions(owner, name)

    def rollback_tool(self, name: str, version: int, owner: str = "local") -> dict[str, Any]:
        """Put an earlier version of a tool back in use. Raises ToolNotFound."""
        restored = self.tools.rollback(owner, name, version)
        self.audit_log.record(owner, "tool", "rolled_back", target=name, detail=f"to v{version}")
        return restored

    def builtin_tools(self) -> list[dict[str, Any]]:
        """The built-in tools (calculate, current_time, fetch_url, run_python)."""
        return self.tools.list_builtin()

    def attach_tool(self, agent: str, tool_name: str, owner: str = "local") -> None:
        """Give the agent a tool (and the grant to call it). Raises ToolNotFound."""
        self.tools.attach(self.image(agent, owner).id, owner, tool_name)

    def detach_tool(self, agent: str, tool_name: str, owner: str = "local") -> bool:
        return self.tools.detach(self.image(agent, owner).id, tool_name)

    def list_tools(self, owner: str = "local", agent: str | None = None) -> list[dict[str, Any]]:
        """The owner's tools, or the tools attached to one agent."""
        if agent is None:
            return self.tools.list(owner)
        image = self.image(agent, owner)
        return [t.describe() for t in self.tools.attached(image.id, owner)]

    def get_tool(self, name: str, owner: str = "local") -> dict[str, Any]:
        """One tool with its source and function name. Raises ToolNotFound."""
        tool = self.tools.get(owner, name)
        if tool is None:
            raise ToolNotFound(f"no tool named {name!r}")
        return tool.describe() | {"source": tool.source, "function": tool.function}

    def remove_tool(self, name: str, owner: str = "local") -> None:
        self.tools.remove(owner, name)

    # --- grants and audit -----------------------------------------------------------

    def grant(
        self, agent: str, kind: str, target: str, mode: str = "rw", owner: str = "local"
    ) -> None:
        """Let the agent message another agent (kind "agent") or use a shared file area."""
        self.grants.grant(self.image(agent, owner).id, kind, target, mode)

    def list_grants(self, agent: str, owner: str = "local") -> list[dict[str, Any]]:
        """The agent's grants (other agents it may message, shared file areas)."""
        return self.grants.list(self.image(agent, owner).id)

    def revoke(self, agent: str, kind: str, target: str, owner: str = "local") -> bool:
        return self.grants.revoke(self.image(agent, owner).id, kind, target)

    def audit(
        self,
        owner: str = "local",
        agent: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """The owner's audit log, newest first (entries with an id below `before`)."""
        return self.audit_log.query(owner, agent=agent, limit=limit, before=before)

    # --- approvals ------------------------------------------------------------------

    def note_pending_approval(self, agent_id: str, delta: int) -> None:
        self.waker.note_pending_approval(agent_id, delta)

    def approval(self, approval_id: str, owner: str = "local") -> dict[str, Any]:
        """One approval of `owner`'s. Raises ApprovalNotFound."""
        return self.approval_store.get(approval_id, owner)

    def approvals(self, owner: str = "local", status: str | None = "pending") -> list[dict]:
        """Calls of irreversible tools waiting for `owner` (status None: all, decided too)."""
        return self.approval_store.list(owner, status)

    async def decide(
        self,
        approval_id: str,
        approve: bool,
        reason: str | None = None,
        owner: str = "local",
        on_event: EventSink | None = None,
    ) -> Turn:
        """Approve or deny a pending call; the agent gets the outcome as an event and a turn.

        Approved: the tool runs now (in the sandbox) and its result is in the
        event. Denied: the event says so, with `reason`. Works after a restart:
        the pending call is read from the database. Raises ApprovalNotFound,
        AlreadyDecided.
        """
        record = self.approval_store.decide(approval_id, owner, approve, reason)
        image = self.image(record["agent_id"], owner)
        self.audit_log.record(
            owner,
            "approval",
            "approved" if approve else "denied",
            agent_id=image.id,
            agent_name=image.name,
            target=record["tool"],
            detail=f"{approval_id}" + (f": {reason}" if reason else ""),
        )
        call_text = f"{record['tool']}({record['arguments']})"
        if record["tool"] == authoring.CREATE_TOOL:
            outcome, text = await authoring.decided(self, record, approve, owner, reason, RESERVED)
        elif approve:
            tool = self.tools.get(owner, record["tool"])
            if tool is None:
                outcome = "The tool no longer exists; nothing was run."
            else:
                ran = await self.tools.run(tool, json.loads(record["arguments"]), image.id)
                outcome = (
                    f"Result: {ran.message()}" if ran.ok else f"The tool failed: {ran.message()}"
                )
            text = f"Your owner approved your call {call_text} (approval {approval_id}). {outcome}"
        else:
            outcome = "Denied" + (f": {reason}" if reason else ".")
            text = (
                f"Your owner denied your call {call_text} (approval {approval_id}); it was not "
                f"run. Reason: {reason or 'none given'}."
            )
        self.approval_store.finish(approval_id, outcome, delivered=False)
        self.note_pending_approval(image.id, -1)
        # A pending event, delivered by the node that runs the agent (maybe this
        # one), which marks the approval delivered (kernel/messaging.py).
        return await self.messenger.deliver_decision(
            image, clip(f"[system event] {text}"), approval_id, on_event
        )

    # --- file areas --------------------------------------------------------------------

    def file_area(
        self, agent: str | None = None, shared: str | None = None, owner: str = "local"
    ) -> str:
        """The file area of an agent (its own files) or of a shared area, for `self.files`."""
        if shared:
            return shared_area(shared)
        if agent is None:
            raise ValueError("name an agent or a shared area")
        return agent_area(self.image(agent, owner).id)
