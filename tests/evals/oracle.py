"""A scripted oracle model for the eval tests: it answers only from what it can see.

As an agent (functions offered) it never reads facts from its prompt: it looks
them up with the memory functions and answers with what the search returned —
so a perfect score means the memory path (eviction, recall and archival
search) really delivered the fact. In plain chat (no functions: the
no-memory baseline) it answers from its prompt, and says "I don't know" when
the fact is not there; so does an agent offered no memory functions (the
kernel pages its memory in: memory_mode "auto"). As a judge it says yes
when the reference answer is in the graded answer.
"""

from __future__ import annotations

import json
import re

from llmos.llm.core import ChatRequest, ChatResponse
from llmos.llm.replay import call, say

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
KEY = re.compile(rf"value of key ({UUID})")
WHAT = re.compile(r"what is (?:my|\w+'s) (.+?)\?", re.I)


def _fact(what: str, text: str) -> str | None:
    found = re.findall(rf"my {re.escape(what)} is (\w+)", text, re.I)
    return found[-1] if found else None


def _answer(text: str) -> ChatResponse:
    return call("send_message", message=text, request_heartbeat=False)


def plain(request: ChatRequest) -> ChatResponse:
    prompt = "\n".join(m.content or "" for m in request.messages)
    said = [m.content or "" for m in request.messages if m.role == "user"]
    last = next((t for t in reversed(said) if not t.startswith("[system alert]")), "")
    if m := re.search(r"Reference answer: (.*)\n.*Assistant's answer: (.*)\n", prompt):
        return say("yes" if m.group(1).lower() in m.group(2).lower() else "no")
    if m := KEY.search(last):
        key = m.group(1)
        while hop := re.search(rf"^{key}: ({UUID})$", prompt, re.M):
            key = hop.group(1)
        return say(key if key != m.group(1) else "I don't know.")
    if m := WHAT.search(last):
        return say(_fact(m.group(1), prompt) or "I don't know.")
    return say("I don't know.")


def oracle(request: ChatRequest) -> ChatResponse:
    if not request.tools:
        return plain(request)
    if not {t.name for t in request.tools} & {"archival_memory_search", "conversation_search"}:
        # memory_mode "auto": the kernel paged memory in; answer from what it put in the window
        return _answer(plain(request).content or "")
    convo = [m for m in request.messages if not (m.content or "").startswith("[system alert]")]
    last = convo[-1]
    if last.role == "tool":
        asked = next(m for m in reversed(convo) if m.role == "assistant" and m.tool_calls)
        query = json.loads(asked.tool_calls[-1].arguments).get("query", "")
        result = last.content or ""
        if last.name == "archival_memory_search":
            hop = re.search(rf"{query}: ({UUID})", result)
            # the value is itself a key: look it up; else it is the answer
            if hop:
                return call("archival_memory_search", query=hop.group(1), request_heartbeat=True)
            return _answer(query)
        if last.name == "conversation_search":
            return _answer(_fact(query, result) or "I could not find it.")
        return _answer("done")
    text = last.content or ""
    if m := KEY.search(text):
        return call("archival_memory_search", query=m.group(1), request_heartbeat=True)
    if m := WHAT.search(text):
        return call("conversation_search", query=m.group(1), request_heartbeat=True)
    return _answer("I don't know.")
