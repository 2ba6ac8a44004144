"""No secret leaves the server: turn JSON, SSE events, history and errors are scrubbed."""

from __future__ import annotations

import httpx
import pytest

from llmos.server import deps

SECRET = "sk-proj-abcdef1234567890SECRET"


def test_a_key_in_a_turn_is_masked_on_every_path_out(alice: httpx.Client, agent: str) -> None:
    said = f"my key is {SECRET}"
    r = alice.post(f"/v1/agents/{agent}/messages", json={"text": said})
    assert r.status_code == 200 and "echo: my key is [redacted]" in r.text
    with alice.stream(
        "POST", f"/v1/agents/{agent}/messages", json={"text": said, "stream": True}
    ) as stream:
        sse = "".join(stream.iter_text())
    assert "event: done" in sse and "[redacted]" in sse
    history = alice.get(f"/v1/agents/{agent}/messages").text
    assert "[redacted]" in history
    r = alice.post(f"/v1/agents/{SECRET}/messages", json={"text": "hi"})
    assert r.status_code == 404
    for text in (r.text, sse, history):
        assert SECRET not in text and "abcdef1234567890" not in text


def test_the_servers_own_secrets_are_masked_whatever_they_look_like(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plainwords-no-pattern-42")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY")
    deps.server_secrets.cache_clear()
    try:
        body = deps.scrub(
            {"reply": "plainwords-no-pattern-42", "list": ["wJalrXUtnFEMI/K7MDENG/bPxRfiCY", 3]}
        )
    finally:
        deps.server_secrets.cache_clear()
    assert body == {"reply": "[redacted]", "list": ["[redacted]", 3]}
