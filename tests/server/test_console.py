"""The web console in a real browser: headless Debian Chromium driven by Playwright,
against the real server on loopback (`live`, with scripted cores, so replies are
instant and exact).

Playwright's own browser download is not used: the test launches
/usr/bin/chromium (Debian's `chromium` package; `.ci/run` installs it) and is
skipped when that is missing. Set LLMOS_CONSOLE_SCREENSHOT=PATH to keep a
screenshot of the console after the chat (and PATH with `-approvals` before
its suffix, of the Approvals tab).

The approvals test makes a pending call over the API (an agent on a scripted
model that calls the irreversible tool its message names), then decides it in
the console and checks the decision over the API.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmos.llm.replay import ScriptedCore
from tests.server.conftest import LiveServer, unique
from tests.server.test_tools_api import LAUNCH, tooluser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium); "
        "install it with: apt-get install -y chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
expect = sync_api.expect

# As the machine notes say: no sandbox as root, no GPU, and nothing that phones
# home (the network is closed). Playwright gives each launch a fresh profile.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
#: the scripted model of the approvals test: calls the tool its message names
TOOLS_MODEL = "scripted/console-tooluser"


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: sync_api.Browser, live: LiveServer) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(live.url + "/")
    yield pg
    context.close()
    assert not errors, f"JavaScript errors in the console: {errors}"


def sign_in(page: sync_api.Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_console_is_served_offline(live: LiveServer) -> None:
    r = httpx.get(live.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for asset in ("/web/app.js", "/web/style.css"):
        assert httpx.get(live.url + asset).status_code == 200
    # Everything is local: no CDN, no external script or style sheet.
    assert "http://" not in r.text and "https://" not in r.text
    assert "/" not in httpx.get(f"{live.url}/openapi.json").json()["paths"]


def test_wrong_key_shows_a_clear_error(page: sync_api.Page) -> None:
    sign_in(page, "not-a-real-key")
    alert = page.locator("#signin-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("not accepted")
    expect(page.locator("#app")).to_be_hidden()


def test_sign_in_create_chat_and_inspect(page: sync_api.Page, live: LiveServer) -> None:
    sign_in(page, live.users["alice"])
    expect(page.locator("#whoami")).to_have_text("signed in as alice")

    # Create an agent: scripted/think saves the message to archival, then replies.
    name = unique("console")
    new_agent = page.locator("#new-agent")
    if not new_agent.evaluate("el => el.open"):
        page.get_by_text("New agent", exact=True).click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Model").fill("scripted/think")
    page.get_by_label("Persona").fill("I am the console's test agent.")
    page.get_by_label("Human").fill("Alice, who tests consoles.")
    page.get_by_role("button", name="Create agent").click()
    expect(page.locator(f'.agent-item[data-agent="{name}"]')).to_have_attribute(
        "aria-current", "true"
    )
    expect(page.locator("#chat-title")).to_have_text(name)

    # Chat: Enter sends; the stream shows the thought and the call dimmed, then the reply.
    box = page.get_by_role("textbox", name="Message")
    box.fill("the console works")
    box.press("Enter")
    reply = page.locator(".msg.agent .reply").last
    expect(reply).to_have_text("saved: the console works")
    turn = page.locator(".msg.agent").last
    expect(turn.locator(".trace-item.reasoning")).to_contain_text("Worth keeping.")
    expect(turn.locator(".trace-item.call")).to_contain_text("archival_memory_insert")
    expect(turn.locator(".trace-item.result")).to_contain_text("Stored in archival memory.")
    expect(turn.locator(".turn-meta")).to_contain_text("end_turn")
    expect(page.locator("#chat-status")).to_have_text(f"{name} replied.")

    # The context bar: every section with its token count, matching the API.
    with live.client("alice") as api:
        ctx = api.get(f"/v1/agents/{name}/context").json()
    legend = page.locator("#context-legend")
    expected = {**ctx["sections"], "free": ctx["free"]}
    for section in ("system", "tools", "core_memory", "summary", "messages", "free"):
        item = legend.locator(f'li[data-section="{section}"]')
        expect(item.locator(".tokens")).to_have_text(f"{expected[section]:,}")
    assert expected["system"] > 0 and expected["messages"] > 0
    segments = page.locator("#context-bar .seg")
    assert segments.count() >= 4  # system, tools, core memory, messages, free
    expect(page.locator("#context-bar")).to_have_attribute("aria-label", re.compile("Messages"))

    if path := os.environ.get("LLMOS_CONSOLE_SCREENSHOT"):
        page.locator("#tab-kernel").click()
        expect(page.locator(f'#proc-table tr[data-agent="{name}"]')).to_be_visible()
        page.screenshot(path=path)
        page.locator("#tab-memory").click()

    # Memory: edit the human block and save it.
    human = page.locator("#block-human")
    expect(human).to_have_value("Alice, who tests consoles.")
    human.fill("Alice, who tests consoles and likes tea.")
    page.locator('.block[data-label="human"]').get_by_role("button", name="Save").click()
    expect(page.locator('.block[data-label="human"] [role="status"]')).to_have_text("Saved")
    with live.client("alice") as api:
        block = api.get(f"/v1/agents/{name}/blocks/human").json()
    assert block["value"] == "Alice, who tests consoles and likes tea."

    # Search: archival finds what the agent saved; recall finds the user's message.
    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Query").fill("console works")
    page.get_by_label("Query").press("Enter")
    expect(page.locator("#search-results li").first).to_contain_text("the console works")
    page.get_by_label("Recall").check()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-summary")).to_contain_text("message")
    expect(page.locator("#search-results")).to_contain_text("the console works")

    # The kernel tab (reached by keyboard): the process table, refreshed every 2 s.
    page.get_by_role("tab", name="Search").press("ArrowRight")
    expect(page.get_by_role("tab", name="Kernel")).to_be_focused()
    row = page.locator(f'#proc-table tr[data-agent="{name}"]')
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("scripted/think")
    expect(page.locator('#core-table tr[data-core="scripted/think"]')).to_be_visible()
    polls = int(page.locator("#kernel-updated").get_attribute("data-polls") or 0)
    page.wait_for_function(
        f"Number(document.getElementById('kernel-updated').dataset.polls) > {polls}",
        timeout=5000,
    )

    # A reload keeps the session (sessionStorage) and shows the history.
    page.reload()
    expect(page.locator("#chat-title")).to_have_text(name)
    expect(page.locator(".msg.agent .reply").last).to_have_text("saved: the console works")

    # Signing out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('llmos.key')") is None


def test_approvals_panel_denies_and_approves(page: sync_api.Page, live: LiveServer) -> None:
    live.kernel.add_core(ScriptedCore(tooluser, name=TOOLS_MODEL), model=TOOLS_MODEL)
    agent, tool = unique("launcher"), unique("launch").replace("-", "_")
    target = "the <b>moon</b> & back"  # markup in the arguments must show as text
    with live.client("alice") as api:
        assert api.post("/v1/agents", json={"name": agent, "model": TOOLS_MODEL}).is_success
        source = LAUNCH.replace("def launch", f"def {tool}")
        assert api.post("/v1/tools", json={"source": source}).status_code == 201
        assert api.put(f"/v1/agents/{agent}/tools/{tool}").is_success
        for where in (target, "mars"):
            text = f'call {tool} {{"target": "{where}"}}'
            turn = api.post(f"/v1/agents/{agent}/messages", json={"text": text}).json()
            assert turn["stop_reason"] == "waiting_approval", turn
        pending = api.get("/v1/approvals").json()["approvals"]
    approval, second = [a for a in pending if a["tool"] == tool]

    sign_in(page, live.users["alice"])
    badge = page.locator("#approvals-badge")
    expect(badge).to_have_text(f"{len(pending)} pending")
    page.get_by_role("tab", name="Approvals").click()
    item = page.locator(f'#approval-list li[data-approval="{approval["id"]}"]')
    expect(item.locator(".approval-tool")).to_have_text(tool)
    expect(item).to_contain_text(agent)
    expect(item).to_contain_text("requested ")
    expect(item.locator(".approval-args")).to_have_text(f'{{\n  "target": "{target}"\n}}')
    assert item.locator(".approval-args b").count() == 0

    if path := os.environ.get("LLMOS_CONSOLE_SCREENSHOT"):
        shot = Path(path)
        page.screenshot(path=str(shot.with_stem(shot.stem + "-approvals")))

    item.get_by_label("Reason").fill("not today")
    item.get_by_role("button", name="Deny").click()
    outcome = page.locator("#approval-outcome")
    expect(outcome).to_have_attribute("data-status", "denied")
    expect(outcome).to_contain_text("Reason: not today")
    expect(outcome).to_contain_text(f"{agent} replied: got: [system event] Your owner denied")
    expect(item).to_have_count(0)
    expect(badge).to_have_text(f"{len(pending) - 1} pending")

    with live.client("alice") as api:
        decided = api.get(f"/v1/approvals/{approval['id']}").json()
    assert decided["status"] == "denied" and decided["reason"] == "not today"
    assert decided["decided_at"] is not None and decided["delivered_at"] is not None

    # Approve the other, with no reason: the tool runs and its result shows.
    other = page.locator(f'#approval-list li[data-approval="{second["id"]}"]')
    other.get_by_role("button", name="Approve").click()
    expect(outcome).to_have_attribute("data-status", "approved")
    expect(outcome.locator(".approval-result")).to_have_text("Result: launched at mars")
    expect(other).to_have_count(0)
    with live.client("alice") as api:
        approved = api.get(f"/v1/approvals/{second['id']}").json()
    assert approved["status"] == "approved" and approved["reason"] is None
    assert approved["result"] == "Result: launched at mars"

    # The decided call, with its reason, when asked for.
    page.get_by_label("Show decided").check()
    done = page.locator(f'#decided-list li[data-approval="{approval["id"]}"]')
    expect(done).to_have_attribute("data-status", "denied")
    expect(done).to_contain_text("Reason: not today")
    expect(done.locator(".approval-args")).to_contain_text(target)
