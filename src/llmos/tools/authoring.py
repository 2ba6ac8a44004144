"""Agent-written tools: check, test, file for approval, install once approved.

An agent with the setting `self_tools` calls `create_tool(name, source,
description, examples)`. `propose` then:

1. parses the source with `ast` (nothing runs): one top-level function named
   `name`, every argument annotated, a docstring; beside it only imports and a
   module docstring (no flags such as `__irreversible__`, no other code);
2. describes it in the sandbox (its schema, as at registration) and calls it
   once per example (argument objects), or once with no arguments when it
   needs none; a function with required arguments needs an example;
3. a failure at any step comes back to the model as a failed call it can
   correct; a tool that passes is stored as a pending approval (tool
   `create_tool`, arguments: name, description, source and the test results)
   and audited as written by the agent.

The owner sees the source (`llmos approvals show`, the console) and decides
(`Kernel.decide` calls `decided`): approved, the source is registered as a
new version of that tool (author the agent, approved by the owner, both in
the version record and the audit log) and attached to the agent; denied,
nothing of it ever runs again. Either way the agent gets the outcome as an
event and a turn, so it can call its new tool in its next step.

A new version of an existing tool keeps that tool's flags (exclusive,
irreversible); a new tool has neither. Left out: more than one function per
tool.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llmos.tools.executor import ToolHost, clip
from llmos.tools.mcp import mcp_server_of
from llmos.tools.registry import ToolError
from llmos.tools.sandbox import SandboxUnavailable
from llmos.tools.schema import TOOL_NAME

if TYPE_CHECKING:
    from llmos.tools.executor import CallingAgent

#: the approvals' `tool` for a self-written tool waiting for its owner
CREATE_TOOL = "create_tool"
MAX_TESTS = 3


def check_source(name: str, source: str, reserved: Iterable[str] = ()) -> ast.FunctionDef:
    """The one tool function of `source`, read without running it. Raises ToolError."""
    if not TOOL_NAME.match(name):
        raise ToolError(f"{name!r} is not a valid tool name (letters, digits, _; max 64)")
    if name in set(reserved):
        raise ToolError(f"{name!r} is the name of a built-in function; choose another")
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ToolError(f"syntax error in the source, line {e.lineno}: {e.msg}") from None
    funcs: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            funcs.append(node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            continue
        elif i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module's docstring
        else:
            raise ToolError(
                f"line {node.lineno}: only imports and one function may be at the top level "
                f"(found {type(node).__name__}); put helpers inside the function"
            )
    if len(funcs) != 1:
        raise ToolError(f"the source must define exactly one function, not {len(funcs)}")
    func = funcs[0]
    if func.name != name:
        raise ToolError(f"the function is named {func.name!r}; name it {name!r}")
    if func.decorator_list:
        raise ToolError("the function may not have decorators")
    if not ast.get_docstring(func):
        raise ToolError(f"{name} needs a docstring saying what it does (and its Args:)")
    a = func.args
    if a.vararg or a.kwarg:
        raise ToolError(f"{name}: *args and **kwargs cannot be tool arguments")
    untyped = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs) if p.annotation is None]
    if untyped:
        raise ToolError(f"{name}: give every argument a type, e.g. x: int (missing: {untyped})")
    return func  # type: ignore[return-value]


def _required(func: ast.FunctionDef) -> list[str]:
    a = func.args
    positional = [*a.posonlyargs, *a.args]
    required = [p.arg for p in positional[: len(positional) - len(a.defaults)]]
    return required + [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]


async def propose(
    host: ToolHost,
    agent: CallingAgent,
    name: str,
    source: str,
    description: str,
    examples: list[dict[str, Any]],
    reserved: Iterable[str] = (),
) -> tuple[bool, str, str | None]:
    """(ok, message for the model, approval id): the steps in the module's doc."""
    audit = {"agent_id": agent.id, "agent_name": agent.name, "target": name}
    try:
        func = check_source(name, source, reserved)
        existing = host.tools.get(agent.owner, name)
        if existing is not None and mcp_server_of(existing.source) is not None:
            raise ToolError(f"{name!r} is a tool of an MCP server; choose another name")
        found = await host.tools.describe_source(source)
    except (ToolError, SandboxUnavailable) as e:
        return False, f"create_tool: {e}", None
    if not found.ok or not found.tools:
        return False, f"create_tool: the source does not load: {found.error}", None
    required = _required(func)
    if required and not examples:
        return (
            False,
            (
                f"create_tool: give examples to test {name} with, e.g. "
                f"[{json.dumps(dict.fromkeys(required, '...'))}]"
            ),
            None,
        )
    tests = []
    for args in (examples or [{}])[:MAX_TESTS]:
        ran = await host.tools.test_call(source, name, args)
        shown = f"{name}({json.dumps(args, ensure_ascii=False)})"
        if not ran.ok:
            host.audit_log.record(
                agent.owner, "tool", "test_failed", detail=f"{shown}: {ran.error}", **audit
            )
            return (
                False,
                clip(
                    f"create_tool: the test call {shown} failed: {ran.message()}. "
                    "Fix the source and call create_tool again.",
                    2000,
                ),
                None,
            )
        tests.append({"args": args, "result": clip(ran.message(), 500)})
    arguments = {"name": name, "description": description, "source": source, "tests": tests}
    approval_id = host.approval_store.create(
        agent.owner, agent.id, CREATE_TOOL, json.dumps(arguments, ensure_ascii=False), name
    )
    version = "a new version of" if existing is not None else "the new tool"
    host.audit_log.record(
        agent.owner, "tool", "written", detail=f"{approval_id}: {version} {name}", **audit
    )
    host.note_pending_approval(agent.id, +1)
    results = "; ".join(f"{name}({json.dumps(t['args'])}) -> {t['result']}" for t in tests)
    return (
        True,
        clip(
            f"Tested: {results}. Your owner must approve {name} (approval {approval_id}) before "
            "you can call it; you will get the decision as an event. Do not call it until then.",
            2000,
        ),
        approval_id,
    )


async def decided(
    host: ToolHost,
    record: dict[str, Any],
    approve: bool,
    owner: str,
    reason: str | None,
    reserved: Iterable[str] = (),
) -> tuple[str, str]:
    """Install an approved proposal (register a version, attach it): (outcome, agent's text)."""
    proposal = json.loads(record["arguments"])
    name = proposal["name"]
    if not approve:
        text = (
            f"Your owner denied your tool {name} (approval {record['id']}); it was not "
            f"installed. Reason: {reason or 'none given'}."
        )
        return "Denied" + (f": {reason}" if reason else "."), text
    # A new version keeps the flags the owner gave the tool: an agent cannot
    # write the approval step off an irreversible tool.
    existing = host.tools.get(owner, name)
    try:
        added = await host.tools.add(
            proposal["source"],
            owner,
            exclusive=bool(existing and existing.exclusive),
            irreversible=bool(existing and existing.irreversible),
            reserved=set(reserved),
            description=proposal.get("description"),
            author=f"agent:{record.get('agent') or record['agent_id']}",
            approved_by=owner,
        )
        host.tools.attach(record["agent_id"], owner, name)
    except (ToolError, SandboxUnavailable) as e:
        return f"Not installed: {e}", f"Your owner approved your tool {name}, but it failed: {e}"
    version = added[0]["version"]
    host.audit_log.record(
        owner,
        "tool",
        "installed",
        agent_id=record["agent_id"],
        agent_name=record.get("agent"),
        target=name,
        detail=f"v{version} written by agent {record.get('agent')}, approved by {owner}",
    )
    text = (
        f"Your owner approved your tool {name} (approval {record['id']}): version {version} "
        "is installed and attached to you. You can call it now."
    )
    return f"Installed {name} v{version}", text
