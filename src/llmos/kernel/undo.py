"""Undoing a turn, for a retry: its block edits, archival inserts and file writes.

A retry forgets a turn (its user message and everything after it) and runs
the message again; the turn's effects go with it, so the second run starts
where the first did:

- core memory blocks the turn edited get back the values they had when the
  turn began. `TurnJournal` records those values when a turn starts (in
  memory); when the kernel has restarted since, appends are undone from the
  turn's own function calls, and a `core_memory_replace` only when its inverse
  is unambiguous;
- archival passages the turn inserted are deleted;
- files the turn wrote or deleted get back their earlier version (the file
  store keeps every version), unless someone wrote them after the turn.

Everything else a turn may have done — a user tool's or MCP tool's side
effect, a message another agent received, a block the user set after the turn
— cannot be undone here, and is listed in the report (`not_undone`).

Left out: undoing what a turn's compaction did (a turn that evicted messages
from the window cannot be retried: its user message has left the window).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from llmos.agent.catalog import function_table
from llmos.storage.files import FileError, agent_area, shared_area
from llmos.storage.models import passages

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from llmos.agent.catalog import function_table
    from llmos.memory.image import AgentImage
    from llmos.memory.recall import StoredMessage
from llmos.storage.files import FileStore

__all__ = ["TurnJournal", "TurnStart", "UndoPlan", "plan_undo"]

# Functions with no effect to undo (what they say to the user goes with the turn).
READ_ONLY = frozenset(
    {
        "send_message",
        "conversation_search",
        "conversation_search_date",
        "archival_memory_search",
        "file_read",
        "file_list",
        "file_search",
    }
)
_BLOCK_EDITS = frozenset({"core_memory_append", "core_memory_replace"})
_FILE_EDITS = frozenset({"file_write", "file_delete"})
_VERSION = re.compile(r"\(version (\d+)")
_USER_SET = re.compile(r"^\[system event\] The user set core memory block '([^']*)'")


@dataclass(slots=True)
class TurnStart:
    """The agent as a turn began: the last message id before it, and its blocks."""

    after_id: int
    blocks: dict[str, str]


class TurnJournal:
    """Where each agent's latest turn began (in memory: lost when the kernel restarts)."""

    def __init__(self) -> None:
        self._starts: dict[str, TurnStart] = {}

    def starting(
        self, events: list[StoredMessage] | Callable[[AgentImage], list[StoredMessage]]
    ) -> Callable[[AgentImage], list[StoredMessage]]:
        """`events` for `Waker.wake`, recording the turn's start once the agent is held."""

        def begin(image: AgentImage) -> list[StoredMessage]:
            found = events(image) if callable(events) else events
            self.mark(image)
            return found

        return begin

    def mark(self, image: AgentImage) -> None:
        after = image.window[-1].id if image.window else 0
        blocks = {label: b.value for label, b in image.memory.blocks.items()}
        self._starts[image.id] = TurnStart(after, blocks)

    def start_of(self, image: AgentImage, index: int) -> TurnStart | None:
        """The recorded start of the turn whose user message is `image.window[index]`."""
        start = self._starts.get(image.id)
        if start is None or image.window[index].id <= start.after_id:
            return None
        if index > 0 and image.window[index - 1].id > start.after_id:
            return None  # another turn began after the recorded one (not through send)
        return start

    def forget(self, agent_id: str) -> None:
        self._starts.pop(agent_id, None)


@dataclass(slots=True)
class _Call:
    name: str
    args: dict[str, Any]
    ok: bool
    result: str


@dataclass(slots=True)
class UndoPlan:
    """What undoing a turn takes: block values to restore, passages to delete, files."""

    blocks: dict[str, str] = field(default_factory=dict)
    passages: list[int] = field(default_factory=list)
    # (area, path, shown as, version to go back to: 0 = the turn created it)
    files: list[tuple[str, str, str, int]] = field(default_factory=list)
    not_undone: list[str] = field(default_factory=list)


def _calls(dropped: list[StoredMessage]) -> list[_Call]:
    """The turn's function calls in order, with whether each succeeded."""
    results = {m.tool_call_id: m.content or "" for m in dropped if m.role == "tool"}
    out: list[_Call] = []
    for m in dropped:
        for call in m.tool_calls:
            try:
                args = json.loads(call.arguments or "{}")
            except ValueError:
                args = {}
            raw = results.get(call.id, "")
            try:
                parsed = json.loads(raw)
                ok, message = parsed.get("status") == "OK", str(parsed.get("message", ""))
            except (ValueError, AttributeError):
                ok, message = bool(raw), raw
            out.append(_Call(call.name, args if isinstance(args, dict) else {}, ok, message))
    return out


def _short(call: _Call) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in call.args.items() if k != "request_heartbeat")
    return f"{call.name}({args[:80] + '…' if len(args) > 80 else args})"


def _unappend(value: str, content: str) -> str | None:
    if value == content:
        return ""
    suffix = "\n" + content
    return value[: -len(suffix)] if value.endswith(suffix) else None


def _unreplace(value: str, old: str, new: str) -> str | None:
    """The value before `value.replace(old, new)`, when only one value could have been."""
    if not new or value.count(new) != 1:
        return None
    before = value.replace(new, old)
    return before if before.replace(old, new) == value else None


def _blocks(
    plan: UndoPlan, image: AgentImage, calls: list[_Call], user_set: set[str], start: Any
) -> None:
    edits = [c for c in calls if c.name in _BLOCK_EDITS and c.ok]
    for label in dict.fromkeys(str(c.args.get("label", "")) for c in edits):
        block = image.memory.blocks.get(label)
        if block is None:
            continue
        if label in user_set:
            plan.not_undone.append(f"block '{label}': set by the user after the turn, kept")
            continue
        if start is not None and label in start.blocks:
            plan.blocks[label] = start.blocks[label]
            continue
        value: str | None = block.value
        for c in reversed([c for c in edits if c.args.get("label") == label]):
            if value is None:
                break
            if c.name == "core_memory_append":
                value = _unappend(value, str(c.args.get("content", "")))
            else:
                old, new = str(c.args.get("old_content", "")), str(c.args.get("new_content", ""))
                value = _unreplace(value, old, new)
        if value is None:
            plan.not_undone.append(f"block '{label}': its edits could not be reversed, kept")
        else:
            plan.blocks[label] = value


def _file(image: AgentImage, path: str) -> tuple[str, str]:
    if path.startswith("shared/"):
        name, _, rest = path[len("shared/") :].partition("/")
        return shared_area(name), rest
    return agent_area(image.id), path


def _files(plan: UndoPlan, image: AgentImage, calls: list[_Call], files: FileStore) -> None:
    touched: dict[str, list[int]] = {}
    for c in calls:
        found = _VERSION.search(c.result) if c.name in _FILE_EDITS and c.ok else None
        if found:
            touched.setdefault(str(c.args.get("path", "")), []).append(int(found.group(1)))
    for shown, versions in touched.items():
        area, path = _file(image, shown)
        try:
            history = files.versions(image.owner, area, path)
        except FileError:
            plan.not_undone.append(f"file {shown}: no longer exists")
            continue
        if not history or history[-1]["version"] != max(versions):
            plan.not_undone.append(f"file {shown}: written again after the turn, kept")
            continue
        plan.files.append((area, path, shown, min(versions) - 1))


def plan_undo(
    conn: Connection,
    image: AgentImage,
    dropped: list[StoredMessage],
    start: TurnStart | None,
    files: FileStore,
) -> UndoPlan:
    """What undoing the turn `dropped` (its user message first) takes, and what it cannot."""
    plan = UndoPlan()
    calls = _calls(dropped)
    user_set = {
        found.group(1)
        for m in dropped[1:]
        if m.role == "user" and (found := _USER_SET.match(m.content or ""))
    }
    _blocks(plan, image, calls, user_set, start)
    inserted = [str(c.args.get("content", "")) for c in calls if c.name == "archival_memory_insert"]
    if inserted:
        rows = conn.execute(
            select(passages.c.id, passages.c.text)
            .where(passages.c.agent_id == image.id, passages.c.created_at >= dropped[0].created_at)
            .order_by(passages.c.id)
        ).fetchall()
        for text in inserted:
            pid = next((r.id for r in rows if r.text == text and r.id not in plan.passages), None)
            if pid is not None:
                plan.passages.append(pid)
    _files(plan, image, calls, files)
    for c in calls:
        if c.name in READ_ONLY | _BLOCK_EDITS | _FILE_EDITS or c.name == "archival_memory_insert":
            continue
        if c.ok:
            plan.not_undone.append(f"{_short(c)}: its effects stay")
        elif function_table(c.name, image.settings) is None:  # a user tool may act, then fail
            plan.not_undone.append(f"{_short(c)}: failed, but may have acted; its effects stay")
    return plan


def undo_files(plan: UndoPlan, owner: str, files: FileStore) -> None:
    """Put back the files of `plan` (each its own write); failures join `not_undone`."""
    for area, path, shown, version in plan.files:
        try:
            before = next(
                (v for v in files.versions(owner, area, path) if v["version"] == version), None
            )
            if before is None or before["deleted"]:  # the turn made it, or brought it back
                files.delete(owner, area, path)
            else:
                files.rollback(owner, area, path, version)
        except FileError as exc:
            plan.not_undone.append(f"file {shown}: {exc}")
