"""The console's Approvals tab shows a tool an agent wrote: its name, description,
source (as text, never markup) and test calls; approving it installs the tool,
which the agent then calls. Real Chromium (Debian's) against the real server on
loopback, as in `tests/server/test_console.py`, whose browser fixtures it uses."""

from __future__ import annotations

import json

from llmos.llm.core import ChatRequest, ChatResponse
from llmos.llm.replay import ScriptedCore, call, raw_call
from tests.server.conftest import LiveServer, live, unique
from tests.server.test_console import browser, expect, page, sign_in, sync_api

__all__ = ["browser", "live", "page"]  # fixtures, used by name

MODEL = "scripted/console-author"
SOURCE = '''def shout(text: str) -> str:
    """Shout a text, <b>loudly</b>.

    Args:
        text: What to shout.
    """
    return text.upper() + "!"
'''


def author(req: ChatRequest) -> ChatResponse:
    m = req.messages[-1]
    text = m.content or ""
    if m.role == "tool":
        return call("send_message", message=f"{m.name}: {json.loads(text)['message']}")
    if "approved your tool" in text:
        return call("shout", request_heartbeat=True, text="hello")
    args = {"name": "shout", "source": SOURCE, "description": "Shouts", "examples": [{"text": "a"}]}
    return raw_call("create_tool", json.dumps({**args, "request_heartbeat": True}))


def test_console_shows_a_written_tool_and_approves_it(
    page: sync_api.Page, live: LiveServer
) -> None:
    live.kernel.add_core(ScriptedCore(author, name=MODEL), model=MODEL)
    agent = unique("author")
    with live.client("alice") as api:
        assert api.post("/v1/agents", json={"name": agent, "model": MODEL}).is_success
        r = api.patch(f"/v1/agents/{agent}", json={"settings": {"self_tools": True}})
        assert r.is_success, r.text
        turn = api.post(f"/v1/agents/{agent}/messages", json={"text": "write"}).json()
        assert turn["stop_reason"] == "waiting_approval", turn
        pending = [a for a in api.get("/v1/approvals").json()["approvals"] if a["agent"] == agent]
    (approval,) = pending

    sign_in(page, live.users["alice"])
    page.get_by_role("tab", name="Approvals").click()
    item = page.locator(f'#approval-list li[data-approval="{approval["id"]}"]')
    expect(item.locator(".approval-new-tool")).to_have_text("shout")
    expect(item).to_contain_text(f"{agent} wrote a tool shout: Shouts")
    source = item.get_by_label("Source of shout")
    expect(source).to_have_text(SOURCE)
    assert source.locator("b").count() == 0  # the docstring's markup is text
    expect(item.locator(".approval-tests")).to_have_text('shout({"text":"a"}) → A!')

    item.get_by_role("button", name="Approve").click()
    outcome = page.locator("#approval-outcome")
    expect(outcome).to_have_attribute("data-status", "approved")
    expect(outcome).to_contain_text(f"{agent} replied: shout: HELLO!")
    with live.client("alice") as api:
        versions = api.get("/v1/tools/shout/versions").json()["versions"]
    assert [(v["author"], v["approved_by"]) for v in versions] == [(f"agent:{agent}", "alice")]
