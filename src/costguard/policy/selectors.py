"""The grammar of the ``actions`` section: action selectors, their matching, and trim paths."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic_core import PydanticCustomError

from costguard.policy.render import _bad, _show

if TYPE_CHECKING:
    from costguard.policy.models import ActionRule


#: HTTP methods an OpenAPI action group can declare (Bedrock sends them in ``httpMethod``).
HTTP_METHODS: Final[frozenset[str]] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Bedrock action group and function names are ([0-9a-zA-Z][_-]?)+ : no dots, no spaces, no
# slashes, which is what lets "." and " " separate the parts of a selector unambiguously.
# fnmatch glob characters (* ? [ ] !) are allowed on top.
_SELECTOR_NAME_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9_\-*?\[\]!]+$")
_SELECTOR_PATH_RE: Final[re.Pattern[str]] = re.compile(r"^[/*?\[][^\s]*$")
_SELECTOR_METHOD_RE: Final[re.Pattern[str]] = re.compile(r"^[A-Za-z*?\[\]!]+$")
_GLOB_CHARS: Final[frozenset[str]] = frozenset("*?[]!")
SELECTOR_SYNTAX: Final[str] = (
    "'<actionGroup>', '<actionGroup> <apiPath>', '<actionGroup> <METHOD> <apiPath>' or "
    "'<actionGroup>.<function>' (fnmatch globs allowed in every part)"
)
# A trim path segment: a key (or * for any key), optionally followed by [] ; or a bare [].
_TRIM_SEGMENT_RE: Final[re.Pattern[str]] = re.compile(r"^(?:[^.\[\]]+(?:\[\])?|\[\])$")


@dataclass(frozen=True, slots=True)
class ActionSelector:
    """A parsed ``actions`` key. ``kind`` is ``group``, ``api`` or ``function``."""

    text: str
    kind: str
    group: str
    method: str | None = None  # upper-cased; None matches every method
    path: str | None = None
    function: str | None = None

    @property
    def specificity(self) -> tuple[int, int]:
        """(level, literal characters): a higher tuple is the more specific selector.

        Level 1 names only the action group; 2 adds the apiPath; 3 adds the method as well, or
        names a function. Among equal levels the selector with more non-glob characters wins.
        """
        if self.kind == "group":
            level = 1
        elif self.kind == "function" or self.method is not None:
            level = 3
        else:
            level = 2
        parts = (self.group, self.method or "", self.path or "", self.function or "")
        literal = sum(1 for part in parts for ch in part if ch not in _GLOB_CHARS)
        return level, literal


def _selector_error(text: Any, why: str) -> PydanticCustomError:
    return PydanticCustomError(
        "costguard_selector",
        "invalid action selector {got}: {why}; use " + SELECTOR_SYNTAX,
        {"got": _show(text), "why": why},
    )


def parse_action_selector(text: str) -> ActionSelector:
    """Parse an ``actions`` key; raises ``PydanticCustomError`` (``costguard_selector``) when bad."""
    if not isinstance(text, str) or not text.strip():
        raise _selector_error(text, "a selector is a non-empty string")
    parts = text.split()
    group = parts[0]
    if len(parts) == 1:
        group, dot, function = text.strip().partition(".")
        if not _SELECTOR_NAME_RE.match(group):
            raise _selector_error(text, f"'{group}' is not an action group name")
        if not dot:
            return ActionSelector(text, "group", group)
        if not _SELECTOR_NAME_RE.match(function):
            raise _selector_error(text, f"'{function}' is not a function name")
        return ActionSelector(text, "function", group, function=function)
    if not _SELECTOR_NAME_RE.match(group):
        raise _selector_error(text, f"'{group}' is not an action group name")
    if len(parts) == 2:
        method, path = None, parts[1]
    elif len(parts) == 3:
        method, path = parts[1], parts[2]
        if not _SELECTOR_METHOD_RE.match(method) or (
            not any(ch in _GLOB_CHARS for ch in method) and method.upper() not in HTTP_METHODS
        ):
            raise _selector_error(text, f"'{method}' is not an HTTP method ({', '.join(sorted(HTTP_METHODS))})")
        method = method.upper()
    else:
        raise _selector_error(text, "too many parts")
    if not _SELECTOR_PATH_RE.match(path):
        raise _selector_error(text, f"'{path}' is not an apiPath (it starts with '/')")
    return ActionSelector(text, "api", group, method=method, path=path)


def _check_selector(value: Any) -> str:
    if not isinstance(value, str):
        raise _selector_error(value, "quote it in YAML")
    parse_action_selector(value)
    return value


def parse_trim_path(text: str) -> tuple[str, ...]:
    """``"items[].id"`` -> ``("items", "id")``: the keys to follow from the root.

    Lists are transparent (a path step applies to every element of a list it meets), so ``[]``
    only documents that a list is expected; ``"[].id"`` on a root list is ``("id",)``. ``*``
    stands for any key. Keys containing ``.`` or ``[`` cannot be addressed.
    Raises ``PydanticCustomError`` (``costguard_path``) when the path is malformed.
    """
    segments = text.split(".") if isinstance(text, str) and text else [""]
    keys: list[str] = []
    for segment in segments:
        if not _TRIM_SEGMENT_RE.match(segment):
            raise PydanticCustomError(
                "costguard_path",
                "invalid JSON path {got}: use dotted keys with [] after a list, e.g. 'items[].id', "
                "'meta.total' or '*' for any key",
                {"got": _show(text)},
            )
        key = segment[:-2] if segment.endswith("[]") else segment
        if key:
            keys.append(key)
    return tuple(keys)


def _check_trim_path(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("path", "must be a JSON path string such as 'items[].id', got {got}", value)
    parse_trim_path(value)
    return value



def _compile_selectors(actions: Mapping[str, ActionRule]) -> list[tuple[ActionSelector, ActionRule, int]]:
    return [(parse_action_selector(text), rule, index) for index, (text, rule) in enumerate(actions.items())]


def _glob(pattern: str, value: str) -> bool:
    if not any(ch in _GLOB_CHARS for ch in pattern):
        return pattern == value
    return fnmatch.fnmatchcase(value, pattern)


def _selector_matches(
    selector: ActionSelector, group: str, path: str | None, method: str | None, function: str | None
) -> bool:
    if not _glob(selector.group, group):
        return False
    if selector.kind == "group":
        return True
    if selector.kind == "function":
        return function is not None and _glob(selector.function or "", function)
    if path is None or not _glob(selector.path or "", path):
        return False
    return selector.method is None or (method is not None and _glob(selector.method, method.upper()))

