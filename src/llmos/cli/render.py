"""Rich rendering for the `llmos` command: agents, turns, memory, the context window.

Every function takes plain data (the JSON the HTTP API answers) and a rich
`Console`, so the command modules stay free of layout.
Nothing here imports the kernel: these helpers load with the CLI at start-up
and must stay cheap.

Left out: colour themes, paging of long outputs, and Markdown rendering of
replies (a model's reply is printed as the text it is).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import Console

#: colours of the context window's sections, in the order the window is laid out
SECTION_STYLES = {
    "system": "magenta",
    "tools": "blue",
    "core_memory": "green",
    "summary": "yellow",
    "messages": "cyan",
    "alerts": "red",
}


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def preview(text: str | None, width: int = 80) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# --- agents -------------------------------------------------------------------------


def agents_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Agents", title_justify="left", show_edge=False)
    table.add_column("name", style="bold")
    table.add_column("model")
    table.add_column("created")
    for r in rows:
        table.add_row(escape(r["name"]), escape(r["model"]), when(r["created_at"]))
    return table


def agent_created(console: Console, desc: dict[str, Any]) -> None:
    console.print(f"Created agent [bold]{escape(desc['name'])}[/] ({desc['id']})")
    console.print(
        f"  model {escape(desc['model'])}"
        + (f" at {escape(desc['base_url'])}" if desc.get("base_url") else "")
        + f", window {desc['context_window']:,} tokens, layout {desc['layout']}, "
        f"embedder {escape(desc['embedder'])}"
    )
    labels = ", ".join(b["label"] for b in desc["blocks"])
    console.print(f"  memory blocks: {escape(labels)}")


def agent_details(console: Console, desc: dict[str, Any]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("id", desc["id"]),
        ("model", desc["model"]),
        ("base url", desc.get("base_url") or "-"),
        ("context window", f"{desc['context_window']:,} tokens"),
        ("layout", desc["layout"]),
        ("embedder", desc["embedder"]),
        ("created", when(desc["created_at"])),
        ("messages", f"{desc['messages_in_window']} in window, {desc['recall_count']} in recall"),
        ("archival", f"{desc['archival_count']} passages"),
    ]
    if desc.get("usage"):
        rows.append(("prompt cache", cache_line(desc["usage"])))
    for key, value in rows:
        grid.add_row(key, escape(str(value)))
    console.print(f"[bold]{escape(desc['name'])}[/]")
    console.print(grid)
    console.print()
    console.print(blocks_table(desc["blocks"]))
    console.print()
    console.print("[bold]Summary[/]")
    console.print(escape(desc["summary"]) if desc["summary"] else "[dim](none yet)[/]")
    console.print()
    settings = Table(title="Settings", title_justify="left", show_edge=False)
    settings.add_column("setting")
    settings.add_column("value")
    for key, value in desc["settings"].items():
        settings.add_row(escape(key), escape(json.dumps(value)))
    console.print(settings)


def cache_line(usage: dict[str, Any]) -> str:
    """ "93.1% hit rate: 120,400 of 129,300 prompt tokens cached over 42 requests"."""
    if not usage.get("requests"):
        return "no requests yet"
    rate = usage.get("cache_hit_rate")
    shown = f"{100 * rate:.1f}% hit rate" if rate is not None else "no prompt tokens reported"
    return (
        f"{shown}: {usage['cached_prompt_tokens']:,} of {usage['prompt_tokens']:,} prompt "
        f"tokens cached over {usage['requests']:,} requests"
    )


def models_table(rows: list[dict[str, Any]]) -> Table:
    """`llmos models`: one row per configured model or provider endpoint."""
    table = Table(title="Models", title_justify="left", show_edge=False)
    for column in ("model", "endpoint", "window", "tools", "json", "stream", "cache", "agents"):
        table.add_column(column, justify="right" if column == "window" else "left")
    checked = any("reachable" in r for r in rows)
    if checked:
        table.add_column("reachable")

    def mark(value: bool) -> Text:
        return Text("yes", style="green") if value else Text("no", style="dim")

    for r in rows:
        info = r.get("info")
        cells: list[Any] = [escape(r["model"]), escape(r["endpoint"])]
        if info:
            window = f"{info['context_window']:,}"
            if info["source"] != "table":
                window += f" ({info['source']})"
            cells += [window] + [
                mark(info[k]) for k in ("native_tools", "json_schema", "streaming", "caching")
            ]
        else:
            cells += ["-", "-", "-", "-", "-"]
        cells.append(escape(", ".join(r["agents"]) or f"({r['origin']})"))
        if checked:
            ok = r.get("reachable")
            style = {True: "green", False: "red"}.get(ok, "dim")
            word = {True: "yes", False: "no"}.get(ok, "-")
            cells.append(Text(f"{word}: {r.get('detail', '')}", style=style))
        table.add_row(*cells)
    return table


def blocks_table(blocks: list[dict[str, Any]]) -> Table:
    table = Table(title="Memory blocks", title_justify="left", show_edge=False, expand=False)
    table.add_column("label", style="bold", no_wrap=True)
    table.add_column("chars", justify="right", no_wrap=True)
    table.add_column("value")
    for b in blocks:
        used = len(b["value"])
        style = "red" if used >= b["limit"] else ""
        table.add_row(
            escape(b["label"]), Text(f"{used}/{b['limit']}", style=style), escape(b["value"])
        )
    return table


# --- the context window ----------------------------------------------------------------


def context_view(console: Console, window: dict[str, Any], width: int = 60) -> None:
    """The window's sections as a table, then one bar of the sections against the window."""
    total_window = max(1, window["context_window"])
    table = Table(show_edge=False)
    table.add_column("section")
    table.add_column("tokens", justify="right")
    table.add_column("share", justify="right")
    for name, tokens in window["sections"].items():
        style = SECTION_STYLES.get(name, "white")
        table.add_row(Text(name, style=style), f"{tokens:,}", f"{100 * tokens / total_window:.1f}%")
    table.add_row(
        Text("total", style="bold"), f"{window['total']:,}",
        f"{100 * window['total'] / total_window:.1f}%",
    )  # fmt: skip
    console.print(table)
    console.print(context_bar(window, width))
    console.print(
        f"[dim]{window['total']:,} of {window['context_window']:,} tokens "
        f"(prompt budget {window['budget']:,}); {window['messages_in_window']} messages "
        "in window[/]"
    )


def context_bar(window: dict[str, Any], width: int = 60) -> Text:
    total_window = max(1, window["context_window"])
    bar = Text("[")
    used = 0
    for name, tokens in window["sections"].items():
        # Any non-empty section gets at least one cell, so small ones stay visible.
        cells = max(1, round(width * tokens / total_window)) if tokens else 0
        cells = min(cells, width - used)
        bar.append("█" * cells, style=SECTION_STYLES.get(name, "white"))
        used += cells
    bar.append("·" * (width - used), style="dim")
    bar.append("]")
    return bar


# --- turns ----------------------------------------------------------------------------


def turn_view(console: Console, turn: dict[str, Any]) -> None:
    """A finished turn (`Turn.as_dict()`, as the HTTP API answers it): inner thoughts and
    calls dimmed, replies prominent, in the order they happened."""
    calls = iter(turn.get("function_calls", []))
    replies = iter(turn.get("replies", []))
    for msg in turn.get("messages", []):
        if msg["role"] == "assistant":
            thought = (msg.get("content") or "").strip()
            if not msg.get("tool_calls"):
                # A plain-text answer is the reply itself (see agent/loop.py).
                if thought:
                    reply_line(console, next(replies, thought))
                continue
            if thought:
                thought_line(console, thought)
            for call in msg["tool_calls"]:
                if call["name"] != "send_message":
                    call_line(console, call["name"], call["arguments"])
        elif msg["role"] == "tool":
            record = next(calls, None)
            if record is None:
                continue
            if not record["ok"]:
                failed_line(console, record["name"], record["result"])
            elif record["name"] == "send_message":
                reply_line(console, next(replies, ""))
    turn_end(console, turn)


def thought_line(console: Console, text: str) -> None:
    console.print(Text(f"💭 {text}", style="dim italic"))


def call_line(console: Console, name: str, arguments: Any) -> None:
    console.print(Text(f"⚙ {name}({arguments})", style="dim"))


def failed_line(console: Console, name: str, result: Any) -> None:
    console.print(Text(f"✗ {name} failed: {preview(str(result), 200)}", style="dim red"))


def reply_line(console: Console, text: str) -> None:
    console.print(Text(text, style="bold"))


def turn_end(console: Console, turn: dict[str, Any]) -> None:
    """Why the turn stopped (when not the usual way) and what it cost."""
    stop = turn.get("stop_reason") or ""
    if turn.get("error"):
        console.print(f"[red]error ({stop}):[/] {escape(turn['error'])}")
    elif stop not in ("end_turn", ""):
        console.print(f"[yellow]turn stopped: {stop}[/]")
    u = turn.get("usage") or {}
    steps = turn.get("steps", 0)
    cached = u.get("cached_prompt_tokens", 0)
    console.print(
        f"[dim]{steps} step{'s' if steps != 1 else ''} · "
        f"{u.get('prompt_tokens', 0):,} prompt + {u.get('completion_tokens', 0):,} completion "
        "tokens"
        + (f" ({cached:,} cached)" if cached else "")
        + (f" · {turn['flushes']} flush" if turn.get("flushes") else "")
        + "[/]"
    )


# --- search results ----------------------------------------------------------------------


def passages_view(console: Console, passages: list[dict[str, Any]], total: int) -> None:
    if not passages:
        console.print("[dim]no archival passages match[/]")
        return
    console.print(f"[dim]{len(passages)} of {total} passages[/]")
    for p in passages:
        console.print(
            f"[dim]#{p['id']} {when(p['created_at'])}[/] {escape(preview(p['text'], 300))}"
        )


def recall_view(console: Console, found: list[dict[str, Any]], total: int) -> None:
    if not found:
        console.print("[dim]no messages match[/]")
        return
    console.print(f"[dim]{len(found)} of {total} messages[/]")
    for m in found:
        text = searchable_text(m) if m["role"] == "assistant" else (m.get("content") or "")
        console.print(f"[dim]{when(m['created_at'])} {m['role']}:[/] {escape(preview(text, 300))}")


def searchable_text(message: dict[str, Any]) -> str:
    """An assistant message's thoughts and the text it sent (`StoredMessage.as_dict()`)."""
    parts = [message.get("content") or ""]
    for call in message.get("tool_calls") or []:
        if call["name"] == "send_message":
            try:
                parts.append(str(json.loads(call["arguments"]).get("message", "")))
            except (ValueError, AttributeError, TypeError):
                parts.append(str(call["arguments"]))
    return "\n".join(p for p in parts if p)
