"""Tool schemas from Python signatures and docstrings.

A user tool is a plain Python function with type hints and a docstring. Its
JSON schema (what the model sees) is built by pydantic from the signature: one
model field per parameter, required unless it has a default. The description
is the docstring's first paragraph, and each argument's description comes from
the docstring's `Args:` section (Google style) or `:param name:` lines (Sphinx
style).

This module imports only pydantic, the standard library and `llmos.errors`:
the sandbox child (`_child.py`) imports it too, to validate arguments where
the tool runs.

Left out: NumPy-style docstrings, `*args`/`**kwargs` (rejected: the model
cannot fill them), and return-type schemas (results are free-form JSON).
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from llmos.errors import InvalidRequest

HEARTBEAT_DOC = "true: take another step after this call"
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]*:\s*$")  # Returns:, Raises:, Example:
_GOOGLE_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class SchemaError(InvalidRequest):
    """A function cannot be a tool (bad name, *args, no docstring, unknown type)."""


@dataclass(slots=True)
class ToolSchema:
    name: str
    description: str
    parameters: dict[str, Any]


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) from a Google- or Sphinx-style docstring."""
    text = inspect.cleandoc(doc or "")
    lines = text.splitlines()
    desc_lines: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    arg_indent = 0
    for line in lines:
        if _ARGS_HEADER.match(line):
            in_args, current = True, None
            continue
        if m := _SPHINX_ARG.match(line):
            current = m.group(1)
            args[current] = m.group(2).strip()
            continue
        if line.strip().startswith(":"):  # :returns:, :raises:
            current = None
            continue
        if in_args:
            if _SECTION.match(line) and not line.startswith((" ", "\t")):
                in_args, current = False, None
                continue
            m = _GOOGLE_ARG.match(line)
            # An argument line is less indented than its continuation lines.
            indent = len(line) - len(line.lstrip())
            if m and (current is None or indent <= arg_indent):
                current = m.group(1).lstrip("*")
                arg_indent = indent
                args[current] = m.group(3).strip()
            elif current and line.strip():
                args[current] = (args[current] + " " + line.strip()).strip()
            continue
        if current and line.strip():  # Sphinx continuation
            args[current] = (args[current] + " " + line.strip()).strip()
            continue
        current = None
        if not args:
            desc_lines.append(line)
    # The description is the text before the first blank-line-separated section.
    paragraphs = "\n".join(desc_lines).strip().split("\n\n")
    description = " ".join(p.strip() for p in paragraphs[0].splitlines()) if paragraphs else ""
    return description, args


def args_model(func: Callable[..., Any], heartbeat: bool = False) -> type[BaseModel]:
    """A pydantic model of `func`'s parameters (validates a call's arguments)."""
    sig = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as e:  # an annotation that names something undefined
        raise SchemaError(f"cannot resolve the type hints of {func.__name__}: {e}") from None
    _, docs = parse_docstring(func.__doc__)
    fields: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SchemaError(f"{func.__name__}: *args and **kwargs cannot be tool arguments")
        if name == "request_heartbeat":
            raise SchemaError(f"{func.__name__}: 'request_heartbeat' is reserved")
        annotation = hints.get(name, Any)
        default = ... if p.default is p.empty else p.default
        fields[name] = (annotation, Field(default, description=docs.get(name)))
    if heartbeat:
        fields["request_heartbeat"] = (bool, Field(False, description=HEARTBEAT_DOC))
    # forbid: a misspelt argument is an error the model can fix, not silently dropped
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    try:
        return create_model(f"{func.__name__}_args", __config__=config, **fields)
    except Exception as e:
        raise SchemaError(f"{func.__name__}: unsupported argument type ({e})") from None


def _strip_titles(node: Any) -> Any:
    # pydantic's titles cost tokens on every request and say nothing new
    if isinstance(node, dict):
        return {
            k: _strip_titles(v)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def function_schema(func: Callable[..., Any], name: str | None = None) -> ToolSchema:
    """The tool schema of a function: name, docstring description, JSON schema of its arguments."""
    name = name or func.__name__
    if not TOOL_NAME.match(name):
        raise SchemaError(f"{name!r} is not a valid tool name (letters, digits, _; max 64)")
    description, _ = parse_docstring(func.__doc__)
    if not description:
        raise SchemaError(f"{name}: a tool needs a docstring saying what it does")
    model = args_model(func, heartbeat=True)
    try:
        schema = model.model_json_schema()
    except Exception as e:
        raise SchemaError(f"{name}: an argument type has no JSON schema ({e})") from None
    schema = _strip_titles(schema)
    schema.pop("additionalProperties", None)
    return ToolSchema(name, description, schema)
