// llmos console: a plain client of the /v1 API (no build step, no dependencies).
//
// State lives in a few variables below; the DOM is built with `h()` and
// textContent only (never innerHTML with data). The API key is kept in this
// tab's sessionStorage. Streaming replies come from POST .../messages with
// stream=true, read with fetch + ReadableStream (EventSource cannot send an
// Authorization header), parsed as Server-Sent Events. The Approvals tab lists
// the calls of irreversible tools waiting for the user's decision, and the tools
// agents wrote (with their source and test calls), polled with the kernel for
// the badge, and decides them with POST /v1/approvals/{id}.
"use strict";

const KEY_STORE = "llmos.key";
const AGENT_STORE = "llmos.agent";
const POLL_MS = 2000;
const SECTIONS = [
  ["system", "System"],
  ["tools", "Tools"],
  ["core_memory", "Core memory"],
  ["summary", "Summary"],
  ["messages", "Messages"],
  ["alerts", "Alerts"],
  ["free", "Free"],
];

let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let agents = [];
let current = null;   // the selected agent's name
let busy = false;     // a turn is streaming
let pollTimer = null;
let showDecided = false;      // the Approvals tab also lists decided calls
const pendingItems = new Map(); // approval id -> its <li>, kept so a typed reason survives a poll
const deciding = new Set();     // approval ids whose decision is on its way (their <li> stays)
let decidedShown = "";        // what the decided list shows now (ids and statuses)

const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n || 0).toLocaleString("en-US");

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") el.setAttribute("style", v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function showError(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

// --- the API ---------------------------------------------------------------------

class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorFrom(res) {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON */ }
  return new APIError(res.status, message);
}

async function api(path, { method = "GET", body, query, key = apiKey, raw = false } = {}) {
  let url = path;
  if (query) url += "?" + new URLSearchParams(query).toString();
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new APIError(0, "Cannot reach the llmos server: " + err.message);
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && key === apiKey && apiKey) signOut("Your API key was rejected; sign in again.");
    throw err;
  }
  if (raw) return res;
  if (res.status === 204) return null;
  return res.json();
}

const enc = encodeURIComponent;
const agentPath = (name, rest = "") => `/v1/agents/${enc(name)}${rest}`;

// --- sign in ---------------------------------------------------------------------

async function signIn(key) {
  const me = await api("/v1/me", { key });
  apiKey = key;
  sessionStorage.setItem(KEY_STORE, key);
  $("whoami").textContent = `signed in as ${me.name}`;
  $("signin").hidden = true;
  $("app").hidden = false;
  await loadAgents();
  const remembered = sessionStorage.getItem(AGENT_STORE);
  if (remembered && agents.some((a) => a.name === remembered)) await selectAgent(remembered);
  else if (!agents.length) $("new-agent").open = true;
  startPolling();
}

function signOut(message) {
  apiKey = "";
  current = null;
  sessionStorage.removeItem(KEY_STORE);
  sessionStorage.removeItem(AGENT_STORE);
  stopPolling();
  clearApprovals();
  $("app").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  showError($("signin-error"), message || "");
  $("api-key").focus();
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = $("api-key").value.trim();
  const errEl = $("signin-error");
  if (!key) {
    showError(errEl, "Enter an API key.");
    return;
  }
  showError(errEl, "");
  const button = ev.submitter || $("signin-form").querySelector("button");
  button.disabled = true;
  try {
    await signIn(key);
  } catch (err) {
    showError(errEl, err.status === 401
      ? "That API key was not accepted. Check it, or make a new one with: llmos user create NAME"
      : err.message);
    $("api-key").select();
  } finally {
    button.disabled = false;
  }
});

$("signout").addEventListener("click", () => signOut(""));

// --- agents ----------------------------------------------------------------------

async function loadAgents() {
  const body = await api("/v1/agents");
  agents = body.agents.slice().sort((a, b) => a.name.localeCompare(b.name));
  renderAgents();
}

function renderAgents() {
  const list = $("agent-list");
  list.replaceChildren(...agents.map((a) => h("li", {},
    h("button", {
      type: "button",
      class: "agent-item",
      "aria-current": a.name === current ? "true" : null,
      "data-agent": a.name,
      onclick: () => selectAgent(a.name),
    }, h("span", { class: "agent-name", text: a.name }), h("span", { class: "agent-model", text: a.model })),
  )));
  $("agents-empty").hidden = agents.length > 0;
}

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const errEl = $("create-error");
  const body = { name: form.name.value.trim() };
  for (const field of ["model", "persona", "human"]) {
    const v = form[field].value.trim();
    if (v) body[field] = v;
  }
  if (!body.name) {
    showError(errEl, "Give the agent a name.");
    form.name.focus();
    return;
  }
  showError(errEl, "");
  try {
    const agent = await api("/v1/agents", { method: "POST", body });
    form.reset();
    $("new-agent").open = false;
    await loadAgents();
    await selectAgent(agent.name);
    $("composer-text").focus();
  } catch (err) {
    showError(errEl, err.message);
  }
});

async function selectAgent(name) {
  current = name;
  sessionStorage.setItem(AGENT_STORE, name);
  renderAgents();
  $("composer-text").disabled = false;
  $("send").disabled = false;
  $("chat-title").textContent = name;
  setStatus("");
  await Promise.all([loadAgentMeta(), loadHistory(), loadContext(), loadBlocks()]);
  $("search-results").replaceChildren();
  $("search-summary").textContent = "";
}

async function loadAgentMeta() {
  const name = current;
  try {
    const a = await api(agentPath(name));
    if (name !== current) return;
    $("agent-meta").textContent =
      `${a.model} · ${a.layout} layout · ${fmt(a.recall_count)} message${a.recall_count === 1 ? "" : "s"} in recall · ${fmt(a.archival_count)} passage${a.archival_count === 1 ? "" : "s"}`;
  } catch (err) {
    $("agent-meta").textContent = err.message;
  }
}

// --- chat ------------------------------------------------------------------------

function setStatus(text) {
  $("chat-status").textContent = text;
}

function scrollDown() {
  const t = $("transcript");
  t.scrollTop = t.scrollHeight;
}

function userBubble(text) {
  return h("div", { class: "msg user" }, h("div", { class: "who", text: "You" }), h("div", { class: "bubble", text }));
}

function turnBlock() {
  const trace = h("div", { class: "trace" });
  const replies = h("div", { class: "replies" });
  const el = h("div", { class: "msg agent" }, h("div", { class: "who", text: current || "agent" }), trace, replies);
  return { el, trace, replies };
}

function shortJSON(text) {
  try {
    const obj = JSON.parse(text);
    delete obj.request_heartbeat;
    return Object.entries(obj).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
  } catch (_) {
    return text || "";
  }
}

function addReasoning(turn, text) {
  if (!text) return;
  turn.trace.append(h("div", { class: "trace-item reasoning" }, h("span", { class: "tag", text: "thought" }), text));
}

function addCall(turn, name, args) {
  turn.trace.append(h("div", { class: "trace-item call" },
    h("span", { class: "tag", text: "call" }), h("code", { text: `${name}(${shortJSON(args)})` })));
}

function addResult(turn, name, ok, message) {
  turn.trace.append(h("div", { class: `trace-item result${ok ? "" : " failed"}` },
    h("span", { class: "tag", text: ok ? "result" : "failed" }), message || ""));
}

function addReply(turn, text) {
  turn.replies.append(h("div", { class: "reply", text }));
}

function addError(turn, message) {
  turn.replies.append(h("div", { class: "turn-error", role: "alert", text: message }));
}

async function loadHistory() {
  const name = current;
  const t = $("transcript");
  let body;
  try {
    body = await api(agentPath(name, "/messages"), { query: { limit: 200 } });
  } catch (err) {
    t.replaceChildren(h("p", { class: "error", text: err.message }));
    return;
  }
  if (name !== current) return;
  const msgs = body.messages.slice().reverse();
  const nodes = [];
  let turn = null;
  for (const m of msgs) {
    if (m.role === "user") {
      if ((m.content || "").startsWith("[system event]")) {
        nodes.push(h("div", { class: "event muted small", text: m.content }));
        turn = null;
        continue;
      }
      nodes.push(userBubble(m.content || ""));
      turn = null;
    } else if (m.role === "assistant") {
      if (!turn) {
        turn = turnBlock();
        nodes.push(turn.el);
      }
      addReasoning(turn, m.content);
      for (const call of m.tool_calls || []) {
        if (call.name === "send_message") {
          let text = call.arguments;
          try { text = JSON.parse(call.arguments).message; } catch (_) { /* shown raw */ }
          addReply(turn, text);
        } else {
          addCall(turn, call.name, call.arguments);
        }
      }
    } else if (m.role === "tool" && turn && m.name !== "send_message") {
      let ok = true;
      let message = m.content;
      try {
        const r = JSON.parse(m.content);
        ok = r.status === "OK";
        message = r.message;
      } catch (_) { /* shown raw */ }
      addResult(turn, m.name, ok, typeof message === "string" ? message : JSON.stringify(message));
    }
  }
  if (!nodes.length) nodes.push(h("p", { class: "placeholder muted", text: "No messages yet. Say hello." }));
  t.replaceChildren(...nodes);
  scrollDown();
}

// Parse a Server-Sent Events byte stream; calls onEvent(name, data) per event.
async function readSSE(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      let parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch (_) { parsed = { text: data.join("\n") }; }
      onEvent(event, parsed);
    }
  }
}

async function sendMessage(text) {
  if (busy || !current || !text.trim()) return;
  busy = true;
  const name = current;
  $("send").disabled = true;
  const t = $("transcript");
  t.querySelector(".placeholder")?.remove();
  t.append(userBubble(text));
  const turn = turnBlock();
  turn.el.setAttribute("aria-busy", "true");
  const typing = h("div", { class: "typing", text: "thinking…" });
  turn.replies.append(typing);
  t.append(turn.el);
  scrollDown();
  setStatus(`${name} is thinking…`);
  let replied = false;
  try {
    const res = await api(agentPath(name, "/messages"), { method: "POST", body: { text, stream: true }, raw: true });
    await readSSE(res, (event, data) => {
      if (event === "reasoning") addReasoning(turn, data.text);
      else if (event === "function_call" && data.name !== "send_message") addCall(turn, data.name, data.arguments);
      else if (event === "function_result" && data.name !== "send_message") addResult(turn, data.name, data.ok, data.message);
      else if (event === "reply") {
        typing.remove();
        addReply(turn, data.text);
        replied = true;
      } else if (event === "error") {
        addError(turn, (data.error && data.error.message) || "the turn failed");
      } else if (event === "done") {
        const r = data.turn || {};
        const usage = r.usage || {};
        turn.el.append(h("div", { class: "turn-meta muted small",
          text: `${r.stop_reason} · ${r.steps} step${r.steps === 1 ? "" : "s"} · ${fmt(usage.prompt_tokens)} prompt / ${fmt(usage.completion_tokens)} completion tokens` }));
        if (r.stop_reason === "waiting_approval") {
          turn.el.append(h("button", { type: "button", class: "link small",
            text: "A call waits for your approval: review it", onclick: () => selectTab($("tab-approvals"), true) }));
        }
      }
      scrollDown();
    });
    setStatus(replied ? `${name} replied.` : `${name} ended the turn without a reply.`);
  } catch (err) {
    addError(turn, err.message);
    setStatus("The message failed.");
  } finally {
    typing.remove();
    turn.el.removeAttribute("aria-busy");
    busy = false;
    $("send").disabled = false;
    scrollDown();
    if (name === current) {
      loadContext();
      loadAgentMeta();
      loadBlocks();
    }
    pollApprovals();
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const box = $("composer-text");
  const text = box.value;
  if (!text.trim()) return;
  box.value = "";
  sendMessage(text);
});

$("composer-text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

// --- the context window ----------------------------------------------------------

async function loadContext() {
  const name = current;
  let ctx;
  try {
    ctx = await api(agentPath(name, "/context"));
  } catch (err) {
    $("context-total").textContent = err.message;
    return;
  }
  if (name !== current) return;
  renderContext(ctx);
}

function renderContext(ctx) {
  const size = ctx.context_window || 1;
  const values = { ...ctx.sections, free: ctx.free };
  const bar = $("context-bar");
  const parts = [];
  const labels = [];
  // The part of the window held back for the answer (window minus budget).
  const reserved = Math.min(ctx.free || 0, Math.max(0, size - (ctx.budget || size)));
  for (const [key, label] of SECTIONS) {
    // The bar draws free space up to the budget; the rest is the reserve.
    const tokens = key === "free" ? (values.free || 0) - reserved : values[key] || 0;
    if (tokens <= 0) continue;
    const pct = (100 * tokens) / size;
    parts.push(h("div", {
      class: `seg seg-${key}`, style: `width:${pct}%`, title: `${label}: ${fmt(tokens)} tokens`,
    }));
    labels.push(`${label} ${fmt(values[key])}`);
  }
  if (reserved > 0) {
    parts.push(h("div", { class: "reserve", style: `width:${(100 * reserved) / size}%`,
      title: `Reserved for the answer: ${fmt(reserved)} tokens` }));
  }
  bar.replaceChildren(...parts);
  bar.setAttribute("aria-label", `Context window of ${fmt(size)} tokens: ${labels.join(", ")}`);
  $("context-legend").replaceChildren(...SECTIONS
    .filter(([key]) => key !== "alerts" || values.alerts > 0)
    .map(([key, label]) => h("li", { "data-section": key },
      h("span", { class: `swatch seg-${key}`, "aria-hidden": "true" }),
      h("span", { class: "legend-label", text: label }),
      h("span", { class: "tokens", text: fmt(values[key]) })),
  ), ...(reserved > 0 ? [h("li", { "data-section": "reserved", class: "muted" },
    h("span", { class: "swatch reserve-swatch", "aria-hidden": "true" }),
    h("span", { class: "legend-label", text: "of which kept for the reply" }),
    h("span", { class: "tokens", text: fmt(reserved) }))] : []));
  const pct = Math.round((100 * ctx.total) / size);
  $("context-total").textContent =
    `${fmt(ctx.total)} of ${fmt(size)} tokens (${pct}%) · budget ${fmt(ctx.budget)} · ${fmt(ctx.messages_in_window)} messages in window` +
    (ctx.trimmed ? ` · ${fmt(ctx.trimmed)} trimmed` : "");
}

// --- memory blocks ---------------------------------------------------------------

async function loadBlocks() {
  const name = current;
  let body;
  try {
    body = await api(agentPath(name, "/blocks"));
  } catch (err) {
    $("blocks").replaceChildren(h("p", { class: "error", text: err.message }));
    return;
  }
  if (name !== current) return;
  // Keep a block the user is editing as it is.
  const editing = document.activeElement && document.activeElement.closest && document.activeElement.closest(".block");
  if (editing && editing.dataset.agent === name) return;
  $("blocks").replaceChildren(...body.blocks.map((b) => blockEditor(name, b)));
}

function blockEditor(agent, block) {
  const id = `block-${block.label}`;
  const area = h("textarea", { id, rows: Math.min(8, Math.max(3, block.value.split("\n").length + 1)), maxlength: block.limit });
  area.value = block.value;
  const count = h("span", { class: "muted small", text: `${fmt(block.value.length)} / ${fmt(block.limit)}` });
  const note = h("span", { class: "small", role: "status", "aria-live": "polite" });
  const save = h("button", { type: "submit", text: "Save" });
  area.addEventListener("input", () => {
    count.textContent = `${fmt(area.value.length)} / ${fmt(block.limit)}`;
    note.textContent = area.value === block.value ? "" : "unsaved";
    note.className = "small muted";
  });
  const form = h("form", { class: "block", "data-agent": agent, "data-label": block.label },
    h("div", { class: "block-head" }, h("label", { for: id, text: block.label }), count),
    area,
    h("div", { class: "block-foot" }, note, save));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    save.disabled = true;
    try {
      const b = await api(agentPath(agent, `/blocks/${enc(block.label)}`), { method: "PUT", body: { value: area.value } });
      block.value = b.value;
      note.textContent = "Saved";
      note.className = "small ok";
      if (agent === current) loadContext();
    } catch (err) {
      note.textContent = err.message;
      note.className = "small error-text";
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

// --- search ----------------------------------------------------------------------

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current) return showError($("search-error"), "Select an agent first.");
  const query = $("search-query").value.trim();
  if (!query) return;
  const where = ev.target.where.value;
  showError($("search-error"), "");
  const list = $("search-results");
  try {
    const body = await api(agentPath(current, `/${where}/search`),
      { query: where === "archival" ? { query, page_size: 10 } : { query } });
    $("search-summary").textContent =
      `${fmt(body.total)} ${where === "archival" ? "passage" : "message"}${body.total === 1 ? "" : "s"} match; showing ${body.results.length}.`;
    list.replaceChildren(...body.results.map((r) => {
      if (where === "archival") {
        return h("li", {}, h("div", { class: "result-text", text: r.text }),
          h("div", { class: "muted small", text: `#${r.id} · ${when(r.created_at)}${r.source ? " · " + r.source : ""}${r.score != null ? " · score " + r.score.toFixed(3) : ""}` }));
      }
      let text = r.content || "";
      if (!text && r.tool_calls && r.tool_calls.length) {
        text = r.tool_calls.map((c) => `${c.name}(${shortJSON(c.arguments)})`).join("; ");
      }
      return h("li", {}, h("div", { class: "result-text", text }),
        h("div", { class: "muted small", text: `${r.role} · #${r.id} · ${when(r.created_at)}` }));
    }));
  } catch (err) {
    showError($("search-error"), err.message);
  }
});

$("insert-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!current) return showError($("search-error"), "Select an agent first.");
  const text = $("insert-text").value.trim();
  if (!text) return;
  try {
    const body = await api(agentPath(current, "/archival"), { method: "POST", body: { texts: [text], source: "console" } });
    $("insert-text").value = "";
    $("search-summary").textContent = `Inserted passage #${body.ids[0]}.`;
    showError($("search-error"), "");
    loadAgentMeta();
  } catch (err) {
    showError($("search-error"), err.message);
  }
});

// --- tabs (arrow keys move between them) ------------------------------------------

const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
function selectTab(tab, focus) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", on ? "true" : "false");
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-kernel") pollKernel();
  if (tab.id === "tab-approvals") pollApprovals();
}
tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => selectTab(tab, false));
  tab.addEventListener("keydown", (ev) => {
    let j = null;
    if (ev.key === "ArrowRight") j = (i + 1) % tabs.length;
    else if (ev.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
    else if (ev.key === "Home") j = 0;
    else if (ev.key === "End") j = tabs.length - 1;
    if (j !== null) {
      ev.preventDefault();
      selectTab(tabs[j], true);
    }
  });
});

// --- the kernel: process table and queues, polled ---------------------------------

function cells(row, ...values) {
  return h("tr", row, ...values.map((v, i) => {
    const num = i > 0 && typeof v === "number";
    return h("td", { class: num ? "num" : null, text: num && Number.isInteger(v) ? fmt(v) : v });
  }));
}

function emptyRow(cols, text) {
  return h("tr", {}, h("td", { colspan: cols, class: "muted small", text }));
}

async function pollKernel() {
  if (!apiKey) return;
  let k;
  try {
    k = await api("/v1/kernel");
  } catch (err) {
    showError($("kernel-error"), err.message);
    return;
  }
  showError($("kernel-error"), "");
  const procs = k.processes.slice().sort((a, b) => a.name.localeCompare(b.name));
  $("proc-table").tBodies[0].replaceChildren(...(procs.length ? procs.map((p) =>
    h("tr", { "data-agent": p.name },
      h("td", { class: "name", text: p.name, title: p.name }),
      h("td", {}, h("span", { class: `state state-${p.state}`, text: p.state })),
      h("td", { text: p.core || "" }),
      h("td", { class: "num", text: fmt(p.waiting) }),
      h("td", { class: "num", text: `${Number(p.seconds_in_state || 0).toFixed(1)} s` }))) : [emptyRow(5, "No processes loaded.")]));
  $("core-table").tBodies[0].replaceChildren(...(k.cores.length ? k.cores.map((c) =>
    h("tr", { "data-core": c.core },
      h("td", { class: "name", title: c.core }, h("div", { text: c.core }),
        h("div", { class: "muted small", text: `${c.policy} · capacity ${c.capacity}` })),
      ...[c.running, c.queued, c.served, c.failed].map((v) => h("td", { class: "num", text: fmt(v) })),
      h("td", { class: "num", text: c.cache_hit_rate == null ? "—" : `${Math.round(c.cache_hit_rate * 100)}%` }))) :
    [emptyRow(6, "No cores in use.")]));
  const usage = Object.entries(k.usage).sort(([a], [b]) => a.localeCompare(b));
  $("usage-table").tBodies[0].replaceChildren(...(usage.length ? usage.map(([name, u]) =>
    cells({}, name, u.syscalls, u.seconds, u.tokens)) : [emptyRow(4, "No agents.")]));
  $("kernel-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  $("kernel-updated").dataset.polls = String(Number($("kernel-updated").dataset.polls || 0) + 1);
}

function startPolling() {
  stopPolling();
  pollKernel();
  pollApprovals();
  pollTimer = setInterval(() => {
    if (document.hidden) return;
    pollKernel();
    pollApprovals();
  }, POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

// --- approvals: calls of irreversible tools waiting for the user -----------------

// The call's arguments as indented JSON (shown as they came when not JSON).
function prettyArgs(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text || "";
  }
}

// A tool an agent wrote (tool "create_tool"): {name, description, source, tests}; else null.
function proposalOf(a) {
  if (a.tool !== "create_tool") return null;
  try {
    const p = JSON.parse(a.arguments);
    return p && typeof p.source === "string" ? p : null;
  } catch (_) {
    return null;
  }
}

// What the owner decides on: a call's arguments, or a written tool's source and test calls.
function approvalDetails(a) {
  const p = proposalOf(a);
  if (!p) {
    return [h("pre", { class: "approval-args", "aria-label": `Arguments of ${a.tool}`, text: prettyArgs(a.arguments) })];
  }
  const tests = (p.tests || []).map((t) =>
    h("li", { text: `${p.name}(${JSON.stringify(t.args)}) → ${t.result}` }));
  return [
    h("div", { class: "small" },
      h("span", { text: `${a.agent || "The agent"} wrote a tool ` }),
      h("code", { class: "approval-new-tool", text: p.name }),
      h("span", { text: `: ${p.description || ""}` })),
    h("pre", { class: "approval-args approval-source", "aria-label": `Source of ${p.name}`, text: p.source }),
    h("div", { class: "muted small", text: "Test calls, run in the sandbox:" }),
    h("ul", { class: "approval-tests small" }, ...tests),
  ];
}

function setBadge(count) {
  const badge = $("approvals-badge");
  badge.replaceChildren(String(count), h("span", { class: "sr-only", text: " pending" }));
  badge.hidden = count === 0;
  $("tab-approvals").title = count ? `${count} call${count === 1 ? "" : "s"} waiting for your decision` : "";
}

function clearApprovals() {
  pendingItems.clear();
  deciding.clear();
  decidedShown = "";
  $("approval-list").replaceChildren();
  $("decided-list").replaceChildren();
  $("approval-outcome").replaceChildren();
  $("approval-outcome").hidden = true;
  showError($("approvals-error"), "");
  setBadge(0);
}

// Fetch the pending approvals (always: the badge) and, when the tab shows
// them, the decided ones too; one request either way.
async function pollApprovals() {
  if (!apiKey) return;
  const withDecided = showDecided && !$("panel-approvals").hidden;
  let list;
  try {
    list = (await api("/v1/approvals", { query: { status: withDecided ? "all" : "pending" } })).approvals;
  } catch (err) {
    showError($("approvals-error"), err.message);
    return;
  }
  if (!apiKey) return;
  const pending = list.filter((a) => a.status === "pending");
  setBadge(pending.length);
  renderPending(pending);
  if (withDecided) renderDecided(list.filter((a) => a.status !== "pending"));
}

function renderPending(pending) {
  const ids = new Set(pending.map((a) => a.id));
  for (const id of pendingItems.keys()) if (!ids.has(id) && !deciding.has(id)) pendingItems.delete(id);
  // A call being decided is no longer pending on the server; its item stays until the answer.
  const nodes = [...deciding].filter((id) => !ids.has(id) && pendingItems.has(id)).map((id) => pendingItems.get(id));
  for (const a of pending) {
    if (!pendingItems.has(a.id)) pendingItems.set(a.id, pendingItem(a));
    nodes.push(pendingItems.get(a.id));
  }
  const list = $("approval-list");
  // Re-attach only when the list changed: moving a node would take the focus from its reason box.
  const same = list.children.length === nodes.length && nodes.every((n, i) => list.children[i] === n);
  if (!same) list.replaceChildren(...nodes);
  $("approvals-empty").hidden = nodes.length > 0;
}

function approvalHead(a) {
  return h("div", { class: "approval-head" },
    h("code", { class: "approval-tool", text: a.tool }),
    h("span", { class: "muted small", text: ` · ${a.agent || a.agent_id}` }));
}

function pendingItem(a) {
  const reasonId = `reason-${a.id}`;
  const reason = h("input", { id: reasonId, maxlength: 2000, autocomplete: "off",
    placeholder: "optional; the agent sees it" });
  const note = h("p", { class: "small muted", role: "status", "aria-live": "polite" });
  const approve = h("button", { type: "button", class: "primary", text: "Approve" });
  const deny = h("button", { type: "button", class: "danger", text: "Deny" });
  const controls = [reason, approve, deny];
  const decide = async (yes) => {
    deciding.add(a.id);
    for (const c of controls) c.disabled = true;
    showError($("approvals-error"), "");
    note.textContent = yes
      ? (proposalOf(a) ? `Approving: the tool is installed for ${a.agent || "the agent"}, which takes a turn…`
        : `Approving: the tool runs, then ${a.agent || "the agent"} takes a turn…`)
      : `Denying: ${a.agent || "the agent"} is told and takes a turn…`;
    const text = reason.value.trim();
    try {
      const body = await api(`/v1/approvals/${enc(a.id)}`,
        { method: "POST", body: { approve: yes, reason: text || null } });
      showOutcome(body.approval, body.turn);
    } catch (err) {
      note.textContent = "";
      showError($("approvals-error"), err.status === 409 ? `Already decided: ${err.message}` : err.message);
      for (const c of controls) c.disabled = false;
    } finally {
      deciding.delete(a.id);
    }
    await pollApprovals();
    if (a.agent && a.agent === current && !busy) {
      loadHistory();
      loadContext();
      loadAgentMeta();
    }
  };
  approve.addEventListener("click", () => decide(true));
  deny.addEventListener("click", () => decide(false));
  reason.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") ev.preventDefault(); // no accidental decision: click a button
  });
  return h("li", { class: "approval", "data-approval": a.id },
    approvalHead(a),
    h("div", { class: "muted small", text: `requested ${when(a.created_at)} · ${a.id}` }),
    ...approvalDetails(a),
    h("label", { for: reasonId, text: "Reason" }),
    reason,
    h("div", { class: "approval-actions" }, approve, deny),
    note);
}

// What an approved call's tool returned ("Result: …", or how it failed); a
// denied call's result only repeats its reason.
function approvedResult(a) {
  return a.status === "approved" && a.result ? h("div", { class: "approval-result", text: a.result }) : null;
}

function showOutcome(approval, turn) {
  const el = $("approval-outcome");
  const reply = turn && turn.reply;
  // (replaceChildren would show a null as the text "null": leave the absent parts out)
  el.replaceChildren(...[
    h("div", { class: "approval-head" },
      h("span", { class: `state state-${approval.status}`, text: approval.status }),
      h("code", { class: "approval-tool", text: approval.tool }),
      h("span", { class: "muted small", text: ` · ${approval.agent || approval.agent_id}` })),
    h("div", { class: "small", text: `Reason: ${approval.reason || "none given"}` }),
    approvedResult(approval),
    reply ? h("div", { class: "small muted", text: `${approval.agent || "The agent"} replied: ${reply}` }) : null,
    turn && turn.error ? h("div", { class: "small error-text", text: `The agent's turn failed: ${turn.error}` }) : null,
  ].filter(Boolean));
  el.dataset.approval = approval.id;
  el.dataset.status = approval.status;
  el.hidden = false;
}

function renderDecided(decided) {
  decided.sort((a, b) => (b.decided_at || 0) - (a.decided_at || 0));
  const key = decided.map((a) => `${a.id}:${a.status}:${a.delivered_at || ""}`).join(",");
  if (key === decidedShown) return;
  decidedShown = key;
  $("decided-list").replaceChildren(...(decided.length ? decided.map((a) =>
    h("li", { class: "approval decided", "data-approval": a.id, "data-status": a.status },
      h("div", { class: "approval-head" },
        h("span", { class: `state state-${a.status}`, text: a.status }),
        h("code", { class: "approval-tool", text: a.tool }),
        h("span", { class: "muted small", text: ` · ${a.agent || a.agent_id}` })),
      ...approvalDetails(a),
      h("div", { class: "small", text: `Reason: ${a.reason || "none given"}` }),
      approvedResult(a),
      h("div", { class: "muted small", text: `requested ${when(a.created_at)} · decided ${when(a.decided_at)}${a.delivered_at ? "" : " · not delivered yet"}` }))) :
    [h("li", { class: "muted small", text: "No decided calls." })]));
}

$("show-decided").addEventListener("change", (ev) => {
  showDecided = ev.target.checked;
  $("decided").hidden = !showDecided;
  decidedShown = "";
  if (showDecided) pollApprovals();
});

// --- start -----------------------------------------------------------------------

(async function start() {
  if (apiKey) {
    try {
      await signIn(apiKey);
      return;
    } catch (err) {
      signOut(err.status === 401 ? "Your saved API key was rejected; sign in again." : err.message);
      return;
    }
  }
  $("signin").hidden = false;
  $("api-key").focus();
})();
