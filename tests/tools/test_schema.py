"""Tool schemas from signatures and docstrings (no subprocess: `schema.py` is pure)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from llmos.tools.schema import SchemaError, args_model, function_schema, parse_docstring


class Point(BaseModel):
    x: float
    y: float


def google(
    city: str, days: int = 3, unit: Literal["C", "F"] = "C", tags: list[str] | None = None
) -> str:
    """Get the weather forecast
    for a city.

    More detail that is not part of the description.

    Args:
        city: Name of the city,
            e.g. Paris.
        days (int): How many days ahead.
        unit: Temperature unit.
        tags: Optional labels.

    Returns:
        The forecast.
    """
    return city


def sphinx(p: Point, scale: float) -> float:
    """Scale a point.

    :param p: the point
    :param scale: the factor
    :returns: the product
    """
    return p.x * scale


def test_google_docstring_and_signature() -> None:
    s = function_schema(google)
    assert s.name == "google"
    assert s.description == "Get the weather forecast for a city."
    props = s.parameters["properties"]
    assert list(props) == ["city", "days", "unit", "tags", "request_heartbeat"]
    assert props["city"] == {"type": "string", "description": "Name of the city, e.g. Paris."}
    assert props["days"]["type"] == "integer" and props["days"]["default"] == 3
    assert props["days"]["description"] == "How many days ahead."
    assert props["unit"]["enum"] == ["C", "F"]
    assert s.parameters["required"] == ["city"]
    assert "title" not in str(s.parameters).replace("'title'", "")  # titles stripped


def test_sphinx_docstring_and_model_argument() -> None:
    s = function_schema(sphinx)
    assert s.description == "Scale a point."
    props = s.parameters["properties"]
    assert props["scale"] == {"type": "number", "description": "the factor"}
    assert "$defs" in s.parameters and "Point" in s.parameters["$defs"]
    assert sorted(s.parameters["required"]) == ["p", "scale"]


def test_args_model_validates_and_coerces() -> None:
    model = args_model(google)
    ok = model.model_validate({"city": "Oslo", "days": "5"})
    assert ok.days == 5 and ok.unit == "C"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        model.model_validate({"days": 1})  # city missing
    with pytest.raises(ValidationError):
        model.model_validate({"city": "Oslo", "unit": "K"})
    with pytest.raises(ValidationError):
        model.model_validate({"city": "Oslo", "extra": 1})


def test_functions_that_cannot_be_tools() -> None:
    def no_doc(x: int) -> int:
        return x

    def star(*args: int) -> None:
        """Doc."""

    def reserved(request_heartbeat: bool) -> None:
        """Doc."""

    with pytest.raises(SchemaError, match="docstring"):
        function_schema(no_doc)
    with pytest.raises(SchemaError, match=r"\*args"):
        function_schema(star)
    with pytest.raises(SchemaError, match="reserved"):
        function_schema(reserved)


def test_unannotated_parameter_is_any() -> None:
    def f(x, y: int = 1):  # type: ignore[no-untyped-def]
        """Doc."""

    props = function_schema(f).parameters["properties"]
    assert "type" not in props["x"] and props["y"]["type"] == "integer"


def test_parse_docstring_plain() -> None:
    assert parse_docstring("One line.") == ("One line.", {})
    assert parse_docstring(None) == ("", {})
