"""Tool calling in text: the prompt, the schema, the forgiving parser, flattening."""

from __future__ import annotations

import json
import re

import pytest

from llmos.llm.core import Message, ToolCall, ToolSpec
from llmos.llm.toolcalls import call_schema, flatten_messages, parse_call, render_tools_prompt

SEND = ToolSpec(
    name="send_message",
    description="Sends a message to the human user.",
    parameters={
        "type": "object",
        "properties": {"message": {"type": "string", "description": "Message contents."}},
        "required": ["message"],
    },
)
APPEND = ToolSpec(
    name="core_memory_append",
    description="Append to a block of core memory.",
    parameters={
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["human", "persona"]},
            "content": {"type": "string"},
            "request_heartbeat": {"type": "boolean"},
        },
        "required": ["label", "content"],
    },
)
TOOLS = [SEND, APPEND]
ID = re.compile(r"^call_[0-9a-f]{12}$")


def args(call: ToolCall) -> dict:
    return json.loads(call.arguments)


# --- render_tools_prompt --------------------------------------------------------


def test_prompt_lists_functions_arguments_and_format() -> None:
    text = render_tools_prompt(TOOLS)
    assert "send_message: Sends a message to the human user." in text
    assert "message (string): Message contents." in text
    assert '("human"|"persona")' in text  # enums are spelled out
    assert "request_heartbeat (boolean, optional)" in text
    assert '{"function": NAME, "arguments": {...}}' in text
    # Compact: a line per function and per argument, plus header and instruction.
    assert len(text.splitlines()) == 2 + 2 + 4


# --- call_schema ----------------------------------------------------------------


def test_schema_is_any_of_one_object_per_function() -> None:
    schema = call_schema(TOOLS)
    assert [v["properties"]["function"] for v in schema["anyOf"]] == [
        {"enum": ["send_message"]},
        {"enum": ["core_memory_append"]},
    ]
    for variant, tool in zip(schema["anyOf"], TOOLS, strict=True):
        assert variant["type"] == "object"
        assert list(variant["properties"]) == ["function", "arguments"]  # order matters
        assert variant["properties"]["arguments"] == tool.parameters
        assert variant["required"] == ["function", "arguments"]
        assert variant["additionalProperties"] is False
    json.dumps(schema)  # serialisable for the grammar compiler


def test_closed_schema_forbids_undeclared_arguments() -> None:
    schema = call_schema(TOOLS, closed=True)
    arguments = schema["anyOf"][0]["properties"]["arguments"]
    assert arguments["additionalProperties"] is False
    assert "additionalProperties" not in SEND.parameters  # the tool spec is not mutated


def test_schema_of_one_function_needs_no_any_of() -> None:
    schema = call_schema([SEND])
    assert "anyOf" not in schema
    assert schema["properties"]["function"] == {"enum": ["send_message"]}


# --- parse_call -----------------------------------------------------------------


def test_clean_json() -> None:
    call = parse_call('{"function": "send_message", "arguments": {"message": "hi"}}', TOOLS)
    assert call.name == "send_message"
    assert args(call) == {"message": "hi"}
    assert ID.match(call.id)


def test_ids_are_unique() -> None:
    text = '{"function": "send_message", "arguments": {"message": "hi"}}'
    assert len({parse_call(text, TOOLS).id for _ in range(50)}) == 50


def test_fenced_json_with_prose() -> None:
    text = (
        'Sure, I will say hello {politely}.\n```json\n{"function": "send_message",'
        ' "arguments": {"message": "hello"}}\n```\nThat is all.'
    )
    call = parse_call(text, TOOLS)
    assert (call.name, args(call)) == ("send_message", {"message": "hello"})


def test_prose_with_braces_before_the_object() -> None:
    text = 'I use {x} and then {"function": "send_message", "arguments": {"message": "a"}}'
    assert parse_call(text, TOOLS).name == "send_message"


def test_trailing_commas() -> None:
    call = parse_call('{"function": "send_message", "arguments": {"message": "hi",},}', TOOLS)
    assert args(call) == {"message": "hi"}


def test_single_quotes_and_python_literals() -> None:
    text = (
        "{'function': 'core_memory_append', 'arguments': {'label': 'human',"
        " 'content': 'likes \"tea\" and it\\'s hot', 'request_heartbeat': True}}"
    )
    call = parse_call(text, TOOLS)
    assert call.name == "core_memory_append"
    assert args(call) == {
        "label": "human",
        "content": 'likes "tea" and it\'s hot',
        "request_heartbeat": True,
    }


def test_none_becomes_null() -> None:
    call = parse_call('{"function": "send_message", "arguments": {"message": None}}', TOOLS)
    assert args(call) == {"message": None}


def test_unquoted_keys() -> None:
    call = parse_call('{function: send_message, arguments: {message: "hi"}}', TOOLS)
    assert (call.name, args(call)) == ("send_message", {"message": "hi"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"function": "send_message", "arguments": {"message": "hel', {"message": "hel"}),
        ('{"function": "send_message", "arguments": {"message": "hi"', {"message": "hi"}),
        ('{"function": "send_message", "arguments": {"message": "hi", "req', {"message": "hi"}),
        ('{"function": "send_message", "arguments": {"message": "hi", "x": ', {"message": "hi"}),
        ('{"function": "send_message", "arguments": {"message": "hi", "x": Tr', {"message": "hi"}),
        ('{"function": "send_message", "arguments": {"n": [1, 2', {"n": [1, 2]}),
        ('{"function": "send_message", "arguments": {"message": "a\\', {"message": "a"}),
        ('{"function": "send_message", "arguments": {', {}),
        ('{"function": "send_message", "argu', {}),
    ],
)
def test_truncated_json_is_closed(text: str, expected: dict) -> None:
    call = parse_call(text, TOOLS)
    assert call.name == "send_message"
    assert args(call) == expected


def test_truncated_inside_the_name_is_a_failure() -> None:
    call = parse_call('{"function": "send_mes', TOOLS)
    # A cut name is not a known function; the executor will say so.
    assert call.name in ("", "send_mes")


def test_name_and_parameters_shape() -> None:
    text = '{"name": "core_memory_append", "parameters": {"label": "human", "content": "x"}}'
    call = parse_call(text, TOOLS)
    assert (call.name, args(call)) == ("core_memory_append", {"label": "human", "content": "x"})


def test_arguments_as_json_string() -> None:
    text = json.dumps({"function": "send_message", "arguments": json.dumps({"message": "hi"})})
    call = parse_call(text, TOOLS)
    assert args(call) == {"message": "hi"}


def test_openai_nested_shape_and_cosmetic_name() -> None:
    text = json.dumps(
        {"function": {"name": "functions.Send_Message", "arguments": '{"message": "hi"}'}}
    )
    call = parse_call(text, TOOLS)
    assert (call.name, args(call)) == ("send_message", {"message": "hi"})


def test_missing_arguments_are_empty() -> None:
    assert parse_call('{"function": "send_message"}', TOOLS).arguments == "{}"


def test_unknown_name_is_kept_for_the_executor_to_report() -> None:
    call = parse_call('{"function": "launch_rockets", "arguments": {}}', TOOLS)
    assert call.name == "launch_rockets"


@pytest.mark.parametrize(
    "text",
    ["total garbage, no json here", "", "{", "}}}{{{", '{"arguments": {"a": 1}}', "[1, 2]", "{{{{"],
)
def test_garbage_gives_an_empty_name_and_never_raises(text: str) -> None:
    call = parse_call(text, TOOLS)
    assert call.name == ""
    assert call.arguments == text
    assert ID.match(call.id)


def test_undecodable_string_arguments_are_passed_raw() -> None:
    call = parse_call('{"function": "send_message", "arguments": "not json"}', TOOLS)
    assert (call.name, call.arguments) == ("send_message", "not json")


# --- flatten_messages -----------------------------------------------------------


def test_flatten_rewrites_calls_and_results_and_alternates_roles() -> None:
    call = ToolCall(id="call_1", name="send_message", arguments='{"message": "hi"}')
    msgs = [
        Message(role="system", content="You are Sam."),
        Message(role="user", content="hello"),
        Message(role="assistant", content="Greeting.", tool_calls=[call]),
        Message(role="tool", content='{"status": "OK"}', tool_call_id="call_1"),
        Message(role="user", content="how are you?"),
        Message(role="assistant", content="fine"),
        Message(role="assistant", content="thanks"),
    ]
    flat = flatten_messages(msgs)
    assert [m.role for m in flat] == ["system", "user", "assistant", "user", "assistant"]
    assert all(not m.tool_calls for m in flat)
    assert flat[2].content == (
        'Greeting.\n{"function": "send_message", "arguments": {"message": "hi"}}'
    )
    # The result is named through the call id, and merged with the next user turn.
    assert flat[3].content == '[function result: send_message] {"status": "OK"}\n\nhow are you?'
    assert flat[4].content == "fine\n\nthanks"
    # The assistant text is exactly what parse_call reads back.
    back = parse_call(flat[2].content, TOOLS)
    assert (back.name, args(back)) == ("send_message", {"message": "hi"})


def test_flatten_uses_the_tool_message_name_and_keeps_bad_arguments() -> None:
    call = ToolCall(id="c", name="send_message", arguments="{broken")
    flat = flatten_messages(
        [
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", name="send_message", content="error", tool_call_id="zz"),
        ]
    )
    assert flat[0].content == '{"function": "send_message", "arguments": "{broken"}'
    assert flat[1] == Message(role="user", content="[function result: send_message] error")


def test_flatten_does_not_mutate_its_input() -> None:
    call = ToolCall(id="c", name="send_message", arguments="{}")
    msgs = [Message(role="assistant", content="x", tool_calls=[call])]
    flatten_messages(msgs)
    assert msgs[0].tool_calls == [call]
    assert msgs[0].content == "x"
