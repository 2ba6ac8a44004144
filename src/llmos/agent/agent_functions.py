"""Agent functions: `send_message_to_agent` and `send_message_to_agent_and_wait_for_reply`.

Kernel-provided functions offered to an agent whose settings have
`agent_tools` set (like the file functions, so agents that never talk to
other agents do not pay for the schemas in every prompt). Each is one
`AgentSyscall` (`functions.message_agent`), which `kernel/messaging.py` serves:
the grant check (kind `agent`, same owner only), the hop limit, deadlock
detection, auditing and delivery are all there; a refusal comes back to the
model as a failed call it can read.

The message is an effect outside the agent's image (another agent's recall),
so it happens at once rather than with the step's commit.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from llmos.agent.functions import (
    HEARTBEAT_DOC,
    Function,
    FunctionContext,
    FunctionResult,
    message_agent,
)


class _Args(BaseModel):
    request_heartbeat: bool = Field(False, description=HEARTBEAT_DOC)


class AgentMessageArgs(_Args):
    agent_name: str = Field(description="The other agent's name")
    message: str = Field(description="What to tell or ask it")


async def send_message_to_agent(ctx: FunctionContext, args: AgentMessageArgs) -> FunctionResult:
    text = await message_agent(ctx.kernel, ctx.agent, args.agent_name, args.message, wait=False)
    return FunctionResult("send_message_to_agent", True, text)


async def send_message_to_agent_and_wait_for_reply(
    ctx: FunctionContext, args: AgentMessageArgs
) -> FunctionResult:
    text = await message_agent(ctx.kernel, ctx.agent, args.agent_name, args.message, wait=True)
    return FunctionResult("send_message_to_agent_and_wait_for_reply", True, text)


AGENT_FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function(
            "send_message_to_agent",
            "Send a message to another agent; it answers later, if at all. Does not wait.",
            AgentMessageArgs,
            send_message_to_agent,
        ),
        Function(
            "send_message_to_agent_and_wait_for_reply",
            "Ask another agent and wait: its reply is this call's result.",
            AgentMessageArgs,
            send_message_to_agent_and_wait_for_reply,
        ),
    ]
}
AGENT_SPECS = [f.spec() for f in AGENT_FUNCTIONS.values()]
