"""Scripted models for the fake servers: a small MemGPT agent that reads its prompt.

`memgpt_policy(view)` takes the OpenAI-shaped view of a request (what
`FakeOpenAIServer` receives, or `caching.anthropic_view` / `converse_view` of
an Anthropic or Bedrock request) and answers in the servers' short form, so
the same agent plays behind every provider:

* "remember that X"      -> core_memory_append(human, X), heartbeat, then a reply
* "archive: X"           -> archival_memory_insert(X), heartbeat, then a reply
* "search archive for Q" -> archival_memory_search(Q), heartbeat, then a reply
                            quoting what the search returned
* "what is my sister called?" -> answers from anything in its prompt
* a summary request (no tools) -> a fixed summary
* anything else          -> send_message("echo N"), N the message's length

Left out: everything a real model does beyond these patterns.
"""

from __future__ import annotations

import json
import re
from typing import Any

SUMMARY = "Summary: the user talked at length about rivers, and about their family."
_SISTER = re.compile(r"sister is called (\w+)")


def is_alert(message: dict[str, Any]) -> bool:
    return message.get("role") == "user" and str(message.get("content") or "").startswith(
        "[system alert]"
    )


def send(text: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {"name": "send_message", "arguments": {"message": text, "request_heartbeat": False}}
        ]
    }


def call(name: str, thought: str, **arguments: Any) -> dict[str, Any]:
    arguments["request_heartbeat"] = True
    return {"content": thought, "tool_calls": [{"name": name, "arguments": arguments}]}


def memgpt_policy(view: dict[str, Any]) -> dict[str, Any]:
    messages = view.get("messages") or []
    if not view.get("tools"):
        return {"content": SUMMARY}
    conversation = [m for m in messages if not is_alert(m)]
    last = conversation[-1]
    if last["role"] == "tool":
        name = last.get("name") or ""
        if name == "archival_memory_search":
            return send(f"From my archive: {str(last.get('content'))[:300]}")
        if name == "send_message":
            return send("(unexpected heartbeat)")
        return send(f"Done ({name}).")
    text = str(last.get("content") or "")
    if m := re.search(r"remember that (.+?)[.!]?$", text, re.I):
        return call(
            "core_memory_append", "A fact to keep.", label="human", content=m.group(1).strip()
        )
    if m := re.match(r"archive: (.+)$", text, re.I | re.S):
        return call("archival_memory_insert", "Worth archiving.", content=m.group(1).strip())
    if m := re.match(r"search archive for (.+?)\??$", text, re.I):
        return call("archival_memory_search", "Let me look.", query=m.group(1).strip())
    if "what is my sister called" in text.lower():
        prompt = json.dumps(messages)
        found = _SISTER.findall(prompt)
        return send(f"Your sister is called {found[-1]}." if found else "I do not know.")
    return send(f"echo {len(text)}")
