"""How policy values appear in error messages, and the pydantic error that carries them."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic_core import PydanticCustomError


def _show(value: Any) -> str:
    """A short, YAML-flavoured rendering of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"'{text}'"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _bad(kind: str, template: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(f"costguard_{kind}", template, {"got": _show(value)})

