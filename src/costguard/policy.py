"""The policy language: pydantic models, the YAML loader, merging and the JSON Schema.

A policy file is one YAML document::

    version: 1
    defaults: {...}          # merged under every workflow; also what unknown workflows get
    workflows:
      claims-intake: {...}   # mode, on_ledger_error, unpriced, default_model, models,
                             # per_request, per_session, budget, actions

Rules the loader applies:

* Unknown keys are errors; every limit is optional. Money is :class:`~decimal.Decimal`, built
  from the YAML text of the scalar (``1.50`` is ``Decimal("1.50")``), never through a float.
* ``defaults`` are deep-merged under each workflow: a workflow's keys win, nested mappings
  (``per_request``, ``per_session``, ``models``, ``budget``, ``actions`` and each action rule)
  merge key by key, lists
  (``models.allow``, ``budget.alert_at_pct``) are replaced. An explicit ``null`` in a workflow
  clears an inherited value (the built-in default applies instead).
* Several files (a directory, or a list of paths) make one :class:`PolicySet`: ``version`` is
  required in every file, ``defaults`` may appear in one file only and a workflow in one file
  only.
* Every problem in every file is collected and raised as one :class:`~costguard.errors.PolicyError`
  whose details name the file, the 1-based line and the dotted field.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from costguard.errors import PolicyError, PolicyErrorDetail

__all__ = [
    "RULES",
    "ActionRule",
    "ActionTrim",
    "Budget",
    "DefaultsSection",
    "Limits",
    "ModelRules",
    "PolicyFile",
    "PolicySet",
    "WorkflowPolicy",
    "WorkflowSection",
    "check_policies",
    "load_policies",
    "parse_action_selector",
    "parse_trim_path",
    "policy_json_schema",
]

PathArg = str | os.PathLike[str]

#: Every rule string a violation record can carry.
RULES: Final[tuple[str, ...]] = (
    "per_request.max_model_calls",
    "per_request.max_tool_calls",
    "per_request.max_tokens",
    "per_request.max_cost_usd",
    "per_request.max_tool_response_bytes",
    "per_session.max_model_calls",
    "per_session.max_tool_calls",
    "per_session.max_tokens",
    "per_session.max_cost_usd",
    "per_session.max_tool_response_bytes",
    "models.allow",
    "budget.daily_usd",
    "budget.monthly_usd",
    "kill_switch",
    "unpriced",
)

WORKFLOW_NAME_PATTERN: Final[str] = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_WORKFLOW_NAME_RE: Final[re.Pattern[str]] = re.compile(WORKFLOW_NAME_PATTERN)
DEFAULT_ALERT_AT_PCT: Final[tuple[int, ...]] = (50, 80, 100)
DEFAULTS_NAME: Final[str] = "*"
_JSON_SCHEMA_DIALECT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
_POLICY_SUFFIXES: Final[tuple[str, ...]] = (".yaml", ".yml")
_GEO_PREFIXES: Final[frozenset[str]] = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})
_FOR_WORKFLOW_CACHE_MAX: Final[int] = 1024


# --------------------------------------------------------------------------------------------
# Field validators (strict: YAML must say what it means)
# --------------------------------------------------------------------------------------------


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


def _check_nonneg_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad("int", "must be an integer >= 0, got {got}", value)
    return value


def _check_pct(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise _bad("pct", "must be an integer between 1 and 1000, got {got}", value)
    return value


def _to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        # A Python float given programmatically: its shortest repr is what the caller typed.
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _check_money(value: Any) -> Decimal:
    number = _to_decimal(value)
    if number is None or number < 0:
        raise _bad("money", "must be a number of USD >= 0, got {got}", value)
    return number


def _check_positive_money(value: Any) -> Decimal:
    number = _to_decimal(value)
    if number is None or number <= 0:
        raise _bad("money", "must be a number of USD > 0, got {got}", value)
    return number


def _check_model_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad("str", "must be a model id or glob pattern (a non-empty string), got {got}", value)
    return value.strip()


def _check_workflow_name(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("name", "workflow name {got} is not a string: quote it in YAML", value)
    if not _WORKFLOW_NAME_RE.match(value):
        raise _bad(
            "name",
            "invalid workflow name {got}: use 1-128 characters from A-Z a-z 0-9 . _ : -, "
            "starting with a letter or digit",
            value,
        )
    return value


def _check_version(value: Any) -> int:
    if isinstance(value, bool) or value != 1 or not isinstance(value, int):
        raise _bad("version", "unsupported policy version {got}: this costguard reads version 1", value)
    return 1


NonNegInt = Annotated[int, Field(ge=0), BeforeValidator(_check_nonneg_int)]
Money = Annotated[
    Decimal,
    BeforeValidator(_check_money),
    WithJsonSchema({"type": "number", "minimum": 0}),
]
PositiveMoney = Annotated[
    Decimal,
    BeforeValidator(_check_positive_money),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0}),
]
Percent = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_check_pct)]
ModelPattern = Annotated[str, Field(min_length=1), BeforeValidator(_check_model_text)]
WorkflowName = Annotated[str, Field(pattern=WORKFLOW_NAME_PATTERN), BeforeValidator(_check_workflow_name)]
Version = Annotated[Literal[1], BeforeValidator(_check_version)]

# -- action selectors and trim paths (the ``actions`` section) ---------------------------------

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


def _check_positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad("int", "must be an integer >= 1, got {got}", value)
    return value


def _check_bool(value: Any) -> bool:
    # pydantic would take "yes", 1 or "off" for a bool: a policy must say true or false.
    if not isinstance(value, bool):
        raise _bad("bool", "must be true or false, got {got}", value)
    return value


PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_check_positive_int)]
StrictBool = Annotated[bool, BeforeValidator(_check_bool)]
TrimPath = Annotated[str, Field(min_length=1), BeforeValidator(_check_trim_path)]
ActionSelectorText = Annotated[str, Field(min_length=1), BeforeValidator(_check_selector)]

Mode = Literal["enforce", "shadow"]
OnLedgerError = Literal["allow", "deny"]
Unpriced = Literal["alert", "block", "fallback"]
OnExhausted = Literal["block", "alert"]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Caps for one request (``per_request``) or one session (``per_session``). All optional."""

    max_model_calls: NonNegInt | None = Field(
        default=None, description="Most model invocations (orchestration loop steps) allowed."
    )
    max_tool_calls: NonNegInt | None = Field(
        default=None, description="Most tool calls (action group, knowledge base, collaborator) allowed."
    )
    max_tokens: NonNegInt | None = Field(
        default=None, description="Most tokens (input + output, cache included) allowed."
    )
    max_cost_usd: Money | None = Field(default=None, description="Most spend allowed, in USD.")
    max_tool_response_bytes: NonNegInt | None = Field(
        default=None, description="Largest tool response (UTF-8 bytes) allowed."
    )

    @property
    def is_empty(self) -> bool:
        """True when no limit is set."""
        return all(getattr(self, name) is None for name in type(self).model_fields)


class ModelRules(_Strict):
    """Which models a workflow may call."""

    allow: list[ModelPattern] | None = Field(
        default=None,
        description="Model ids or fnmatch glob patterns (case-sensitive); omit to allow every model.",
    )
    _matcher: re.Pattern[str] | None = PrivateAttr(default=None)

    @field_validator("allow")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise PydanticCustomError(
                "costguard_empty",
                "must list at least one model id or pattern (leave 'allow' out to allow every model)",
            )
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.allow:
            joined = "|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in self.allow)
            self._matcher = re.compile(joined)

    def allows(self, model_id: str, base_model_id: str | None = None) -> bool:
        """True if there is no allow-list, or ``model_id`` or ``base_model_id`` matches a pattern."""
        if self.allow is None:
            return True
        matcher = self._matcher
        if matcher is None:
            return False
        if matcher.match(model_id) is not None:
            return True
        return base_model_id is not None and matcher.match(base_model_id) is not None


class Budget(_Strict):
    """A workflow's spend per UTC day and month, shared by every caller through the ledger."""

    daily_usd: PositiveMoney | None = Field(default=None, description="Spend allowed per UTC day, in USD.")
    monthly_usd: PositiveMoney | None = Field(default=None, description="Spend allowed per UTC month, in USD.")
    alert_at_pct: list[Percent] = Field(
        default_factory=lambda: list(DEFAULT_ALERT_AT_PCT),
        description="Alert when spend reaches these percentages of a budget (1..1000).",
    )
    on_exhausted: OnExhausted = Field(
        default="block", description="block: set the kill switch and refuse calls; alert: only alert."
    )

    @field_validator("alert_at_pct")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class ActionTrim(_Strict):
    """How ``action_guard`` shrinks a JSON action response. Applied in this order:

    ``keep`` (projection: only these paths survive), ``drop`` (these paths are removed),
    ``max_list_items`` (every list at any depth is cut to its first N items) and
    ``max_string_bytes`` (every string value is cut to N UTF-8 bytes at a character boundary,
    ending in "…"). Paths are dotted keys with ``[]`` after a list (``items[].id``,
    ``meta.total``); lists are transparent, ``*`` is any key.
    """

    keep: list[TrimPath] | None = Field(
        default=None, description="JSON paths to keep (everything else is dropped), e.g. 'items[].id'."
    )
    drop: list[TrimPath] | None = Field(default=None, description="JSON paths to remove, e.g. 'items[].raw'.")
    max_list_items: PositiveInt | None = Field(
        default=None, description="Cut every list to its first N items."
    )
    max_string_bytes: PositiveInt | None = Field(
        default=None, description="Cut every string to N UTF-8 bytes (at a character boundary)."
    )

    @field_validator("keep", "drop")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise PydanticCustomError(
                "costguard_empty", "must list at least one JSON path (leave it out to keep every field)"
            )
        return value

    @property
    def is_empty(self) -> bool:
        """True when the trim changes nothing."""
        return all(getattr(self, name) is None for name in type(self).model_fields)


class ActionRule(_Strict):
    """Limits and trims for matching action group invocations (``action_guard``).

    The key of a rule in ``actions`` is a selector, matched with fnmatch globs (case-sensitive;
    the method is compared upper-cased; ``*`` in an apiPath also matches ``/``):

    * ``"<actionGroup>"`` – every invocation of the action group, e.g. ``"claims"``;
    * ``"<actionGroup> <apiPath>"`` – one OpenAPI operation path, any method, e.g.
      ``"claims /claims/{claimId}"`` (the apiPath exactly as the OpenAPI schema spells it);
    * ``"<actionGroup> <METHOD> <apiPath>"`` – one operation, e.g. ``"claims GET /claims/{claimId}"``;
    * ``"<actionGroup>.<function>"`` – one function of a function-details action group, e.g.
      ``"claims.search_claims"``.

    When several selectors match, the most specific wins: method+path and function selectors
    beat path-only selectors, which beat group-only ones; then the selector with more literal
    (non-glob) characters; then the one listed first.
    """

    max_response_bytes: NonNegInt | None = Field(
        default=None,
        description="Largest response body (UTF-8 bytes) after trimming; overrides per_request.max_tool_response_bytes.",
    )
    trim: ActionTrim | None = Field(default=None, description="How to shrink a JSON response body.")
    idempotent: StrictBool = Field(
        default=False, description="A write action: a retry with the same input is not run again."
    )
    idempotency_ttl_s: PositiveInt = Field(
        default=3600, description="How long (seconds) a retry is recognised as a retry."
    )


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


class WorkflowPolicy(_Strict):
    """The effective policy of one workflow: its own settings merged over ``defaults``."""

    name: str = Field(min_length=1)
    mode: Mode = "enforce"
    on_ledger_error: OnLedgerError = "allow"
    unpriced: Unpriced = "alert"
    default_model: str | None = None
    models: ModelRules = Field(default_factory=ModelRules)
    per_request: Limits = Field(default_factory=Limits)
    per_session: Limits = Field(default_factory=Limits)
    budget: Budget | None = None
    actions: dict[ActionSelectorText, ActionRule] = Field(default_factory=dict)
    # (actions it was compiled from, compiled selectors, lookup cache); rebuilt when ``actions``
    # is not the same object (model_copy shares private attributes).
    _action_index: tuple[Any, list[tuple[ActionSelector, ActionRule, int]], dict[Any, Any]] | None = PrivateAttr(
        default=None
    )

    @property
    def shadow(self) -> bool:
        """True in shadow mode: violations are recorded, nothing is blocked."""
        return self.mode == "shadow"

    def action_match(
        self,
        action_group: str,
        api_path: str | None = None,
        http_method: str | None = None,
        function: str | None = None,
    ) -> tuple[str, ActionRule] | None:
        """The most specific ``(selector, rule)`` of ``actions`` matching an invocation, or None."""
        if not self.actions:
            return None
        index = self._action_index
        if index is None or index[0] is not self.actions:
            index = (self.actions, _compile_selectors(self.actions), {})
            self._action_index = index
        cache = index[2]
        key = (action_group, api_path, http_method, function)
        if key in cache:
            return cache[key]  # type: ignore[no-any-return]
        best: tuple[tuple[int, int, int], str, ActionRule] | None = None
        for selector, rule, order in index[1]:
            if _selector_matches(selector, action_group, api_path, http_method, function):
                rank = (*selector.specificity, -order)
                if best is None or rank > best[0]:
                    best = (rank, selector.text, rule)
        found = None if best is None else (best[1], best[2])
        if len(cache) < _FOR_WORKFLOW_CACHE_MAX:  # bounded: event fields come from the outside
            cache[key] = found
        return found

    def action_rule(
        self,
        action_group: str,
        api_path: str | None = None,
        http_method: str | None = None,
        function: str | None = None,
    ) -> ActionRule | None:
        """The most specific rule of ``actions`` matching an invocation, or None."""
        found = self.action_match(action_group, api_path, http_method, function)
        return None if found is None else found[1]


class _Section(_Strict):
    """The settings a ``defaults`` or workflow section may hold; every key is optional."""

    mode: Mode | None = Field(
        default=None, description="enforce: block on a violation; shadow: record would-be violations only."
    )
    on_ledger_error: OnLedgerError | None = Field(
        default=None, description="When the ledger is unreachable: allow (fail open) or deny (fail closed)."
    )
    unpriced: Unpriced | None = Field(
        default=None, description="For a model missing from the price catalog: alert, block or fallback."
    )
    default_model: ModelPattern | None = Field(
        default=None, description="Model id to price agent steps whose trace names no model."
    )
    models: ModelRules | None = None
    per_request: Limits | None = Field(
        default=None, description="Caps for one invoke_agent call (with its return-control continuations)."
    )
    per_session: Limits | None = Field(
        default=None, description="Caps for one sessionId, across requests and processes."
    )
    budget: Budget | None = None
    actions: dict[ActionSelectorText, ActionRule | None] | None = Field(
        default=None,
        description=(
            "Response limits, trims and idempotency for action group Lambdas guarded by action_guard, by "
            "selector: " + SELECTOR_SYNTAX + "."
        ),
    )


class DefaultsSection(_Section):
    """Settings merged under every workflow; also the policy of workflows not listed."""


class WorkflowSection(_Section):
    """One workflow's settings; whatever it leaves out comes from ``defaults``."""


class PolicyFile(_Strict):
    """One costguard policy file (one YAML document)."""

    version: Version = Field(description="Policy language version; must be 1.")
    defaults: DefaultsSection | None = None
    workflows: dict[WorkflowName, WorkflowSection | None] = Field(
        default_factory=dict,
        description="Policies by workflow name (the name passed to guard.wrap).",
        json_schema_extra={"additionalProperties": False},
    )

    @field_validator("workflows", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


# --------------------------------------------------------------------------------------------
# PolicySet
# --------------------------------------------------------------------------------------------


class PolicySet:
    """The merged policies of every workflow, plus the defaults unknown workflows get."""

    __slots__ = ("_cache", "_defaults", "_sources", "_workflows")

    def __init__(
        self,
        workflows: Mapping[str, WorkflowPolicy] | Sequence[WorkflowPolicy] = (),
        defaults: WorkflowPolicy | None = None,
        sources: Sequence[str] = (),
    ) -> None:
        items = workflows.items() if isinstance(workflows, Mapping) else ((p.name, p) for p in workflows)
        by_name: dict[str, WorkflowPolicy] = {}
        for name, policy in items:
            by_name[name] = policy if policy.name == name else policy.model_copy(update={"name": name})
        if defaults is None:
            defaults = WorkflowPolicy(name=DEFAULTS_NAME)
        elif defaults.name != DEFAULTS_NAME:
            defaults = defaults.model_copy(update={"name": DEFAULTS_NAME})
        self._workflows: Mapping[str, WorkflowPolicy] = types.MappingProxyType(by_name)
        self._defaults = defaults
        self._sources = tuple(str(s) for s in sources)
        self._cache: dict[str, WorkflowPolicy] = {}

    # construction -------------------------------------------------------------------------

    @classmethod
    def empty(cls) -> PolicySet:
        """No workflows; defaults enforce nothing (enforce mode, no limits)."""
        return cls()

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], source: str = "<dict>") -> PolicySet:
        """Validate and merge one policy document given as a mapping (lines are not known)."""
        return _build([_Document(source, None, dict(document))], [])

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> PolicySet:
        """Validate and merge one policy document given as YAML text."""
        errors: list[PolicyErrorDetail] = []
        doc = _parse(source, text, errors)
        return _build([doc] if doc is not None else [], errors)

    # access -------------------------------------------------------------------------------

    @property
    def workflows(self) -> Mapping[str, WorkflowPolicy]:
        return self._workflows

    @property
    def defaults(self) -> WorkflowPolicy:
        return self._defaults

    @property
    def sources(self) -> tuple[str, ...]:
        return self._sources

    def for_workflow(self, name: str) -> WorkflowPolicy:
        """The workflow's policy; for a workflow not listed, the defaults under that name."""
        known = self._workflows.get(name)
        if known is not None:
            return known
        cached = self._cache.get(name)
        if cached is None:
            cached = self._defaults.model_copy(update={"name": name})
            if len(self._cache) < _FOR_WORKFLOW_CACHE_MAX:
                self._cache[name] = cached
        return cached

    def names(self) -> tuple[str, ...]:
        """The workflow names, sorted."""
        return tuple(sorted(self._workflows))

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._workflows)

    def __repr__(self) -> str:
        return f"PolicySet(workflows={list(self.names())!r}, sources={list(self._sources)!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (money as exact decimal strings) for display."""
        return {
            "sources": list(self._sources),
            "defaults": self._defaults.model_dump(mode="json", exclude={"name"}),
            "workflows": {
                name: self._workflows[name].model_dump(mode="json", exclude={"name"}) for name in self.names()
            },
        }


# --------------------------------------------------------------------------------------------
# YAML: a SafeLoader whose floats are Decimals built from the scalar's text
# --------------------------------------------------------------------------------------------


class _PolicyLoader(yaml.SafeLoader):
    """SafeLoader that never makes a float: YAML floats become exact Decimals."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node)).replace("_", "").lower()
    negative = text.startswith("-")
    body = text.lstrip("+-")
    if body == ".inf":
        return Decimal("-Infinity" if negative else "Infinity")
    if body == ".nan":
        return Decimal("NaN")
    if ":" in body:  # YAML 1.1 base 60, e.g. 1:30.5
        total = Decimal(0)
        for part in body.split(":"):
            total = total * 60 + Decimal(part)
        return -total if negative else total
    return Decimal(text)  # exactly the digits written: "1.50" -> Decimal("1.50")


_PolicyLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


@dataclass
class _Document:
    """One parsed policy document: where it came from, its node tree (for lines), its data."""

    file: str
    root: yaml.Node | None
    data: dict[Any, Any]
    errors: list[PolicyErrorDetail] = field(default_factory=list)
    defaults_ok: bool = True
    workflows_ok: bool = True
    bad_workflows: set[str] = field(default_factory=set)


def _line(node: yaml.Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None else None


def _file_error(file: str, message: str, line: int | None = None, field_name: str = "-") -> PolicyErrorDetail:
    return PolicyErrorDetail(file=file, line=line, field=field_name, message=message)


def _parse(file: str, text: str, errors: list[PolicyErrorDetail]) -> _Document | None:
    """Compose and construct one YAML document; append problems to ``errors``."""
    loader = _PolicyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            errors.append(_file_error(file, "file is empty: expected a policy document starting with 'version: 1'"))
            return None
        duplicates = _duplicate_keys(file, root)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.context}: {exc.problem}"
        errors.append(_file_error(file, f"invalid YAML: {problem}", mark.line + 1 if mark else None))
        return None
    except (yaml.YAMLError, ValueError, InvalidOperation) as exc:
        errors.append(_file_error(file, f"invalid YAML: {exc}"))
        return None
    finally:
        loader.dispose()
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        errors.append(
            _file_error(
                file,
                f"a policy file must be a mapping with 'version', 'defaults' and 'workflows', got {_show(data)}",
                _line(root),
            )
        )
        return None
    return _Document(file, root, data, duplicates)


def _duplicate_keys(file: str, root: yaml.Node) -> list[PolicyErrorDetail]:
    """PyYAML silently keeps the last of duplicate keys; a policy file must not have any."""
    found: list[PolicyErrorDetail] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int | None] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(key, yaml.ScalarNode):
                    if key.value in first:
                        found.append(
                            PolicyErrorDetail(
                                file=file,
                                line=_line(key),
                                field=_dotted((*path, key.value)),
                                message=f"duplicate key '{key.value}' (first defined at line {first[key.value]})",
                            )
                        )
                    else:
                        first[key.value] = _line(key)
                    walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return found


def _key_matches(key: yaml.Node, element: Any) -> bool:
    """Does a mapping key node hold the key pydantic reports (``yes`` arrives as 1, ``2024`` as 2024)?"""
    if not isinstance(key, yaml.ScalarNode):
        return False
    if key.value == str(element) and not isinstance(element, bool):
        return True
    if key.tag == "tag:yaml.org,2002:str" or not isinstance(element, int | float | Decimal):
        return False
    try:
        value = _PolicyLoader("").construct_object(key)
    except (yaml.YAMLError, ValueError, ArithmeticError):
        return False
    return bool(value == element)


def _locate(
    root: yaml.Node | None, loc: Sequence[Any], want_key: bool
) -> tuple[yaml.Node | None, str]:
    """The node a pydantic ``loc`` points at (the key node if ``want_key``, else the value node)
    and the dotted field name, spelled as the YAML spells the keys."""
    node = root
    parts: list[str] = []
    found: yaml.Node | None = root
    for index, element in enumerate(loc):
        if element == "[key]":
            continue
        if isinstance(node, yaml.MappingNode):
            match: tuple[yaml.Node, yaml.Node] | None = None
            for key, value in reversed(node.value):  # after a "<<" merge the last key wins
                if _key_matches(key, element):
                    match = (key, value)
                    break
            if match is None:
                parts.append(str(element))
                node = None
                continue
            parts.append(str(match[0].value))
            is_last = index == len(loc) - 1
            next_is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
            found = match[0] if (is_last and want_key) or next_is_key else match[1]
            node = match[1]
            if next_is_key:
                node = None
        elif isinstance(node, yaml.SequenceNode) and isinstance(element, int):
            parts.append(f"[{element}]")
            if 0 <= element < len(node.value):
                node = found = node.value[element]
            else:
                node = None
        else:
            parts.append(f"[{element}]" if isinstance(element, int) else str(element))
            node = None
    return found, _join(parts)


def _join(parts: Sequence[str]) -> str:
    text = ""
    for part in parts:
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "-"


def _dotted(loc: Sequence[Any]) -> str:
    return _locate(None, loc, want_key=False)[1]


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional to reach the interesting type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _type_at(root_model: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The (unwrapped) type a pydantic ``loc`` refers to, walking the model classes."""
    current: Any = root_model
    for element in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(element))
            if info is None:
                return None
            current = _unwrap(info.annotation)
        elif get_origin(current) is dict:
            current = _unwrap(get_args(current)[1])
        elif get_origin(current) is list:
            current = _unwrap(get_args(current)[0])
        else:
            return None
    return current


def _message(error: Mapping[str, Any], root_model: type[BaseModel]) -> str:
    kind: str = error["type"]
    loc: tuple[Any, ...] = tuple(error["loc"])
    value = error.get("input")
    if kind.startswith("costguard_"):
        return str(error["msg"])
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        model = _type_at(root_model, loc[:-1])
        allowed = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        if not allowed:
            return f"unknown key '{key}'"
        text = f"unknown key '{key}' (allowed: {', '.join(allowed)})"
        close = difflib.get_close_matches(key, allowed, n=1)
        return f"{text}; did you mean '{close[0]}'?" if close else text
    if kind == "missing":
        name = loc[-1] if loc else "?"
        hint = " (add 'version: 1')" if loc == ("version",) else ""
        return f"missing required key '{name}'{hint}"
    if kind == "literal_error":
        target = _type_at(root_model, loc)
        choices = [str(c) for c in get_args(target)] if get_origin(target) is Literal else []
        if not choices:
            choices = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        return f"must be one of {', '.join(choices)}, got {_show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
        return f"must be a mapping, got {_show(value)}"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return f"must be a list, got {_show(value)}"
    if kind == "string_type":
        return f"must be a string, got {_show(value)}"
    if kind == "invalid_key":
        return "keys must be strings"
    message = str(error.get("msg", "invalid value"))
    return message[:1].lower() + message[1:]


def _details(
    exc: ValidationError,
    file: str,
    root: yaml.Node | None,
    root_model: type[BaseModel],
    prefix: tuple[Any, ...] = (),
    line: int | None = None,
) -> list[tuple[tuple[Any, ...], PolicyErrorDetail]]:
    """Map each pydantic error to ``(loc, PolicyErrorDetail)`` with file, line and dotted field."""
    out: list[tuple[tuple[Any, ...], PolicyErrorDetail]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        want_key = error["type"] in ("extra_forbidden", "invalid_key", "costguard_name")
        node, dotted = _locate(root, (*prefix, *loc), want_key)
        out.append(
            (
                loc,
                PolicyErrorDetail(
                    file=file,
                    line=_line(node) if line is None else line,
                    field=dotted,
                    message=_message(error, root_model),
                ),
            )
        )
    return out


def _validate_document(doc: _Document) -> None:
    try:
        PolicyFile.model_validate(doc.data)
    except ValidationError as exc:
        for loc, detail in _details(exc, doc.file, doc.root, PolicyFile):
            doc.errors.append(detail)
            if loc[:1] == ("defaults",):
                doc.defaults_ok = False
            elif loc[:1] == ("workflows",):
                if len(loc) >= 2:
                    doc.bad_workflows.add(str(loc[1]))
                else:  # workflows itself is unusable
                    doc.workflows_ok = False


def _as_mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` wins; mappings merge key by key; lists and scalars are replaced."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def _drop_nulls(data: Mapping[str, Any]) -> dict[str, Any]:
    """An explicit null clears a value: drop it so the built-in default applies."""
    return {k: (_drop_nulls(v) if isinstance(v, Mapping) else v) for k, v in data.items() if v is not None}


def _model_candidates(model_id: str) -> list[str]:
    candidates = [model_id]
    head, dot, rest = model_id.partition(".")
    if dot and head in _GEO_PREFIXES:
        candidates.append(rest)
    return candidates


def _consistency(policy: WorkflowPolicy) -> list[tuple[str, str]]:
    """Problems only visible once defaults and a workflow are merged: ``(field, message)``."""
    problems: list[tuple[str, str]] = []
    model = policy.default_model
    if model and not model.startswith("arn:") and policy.models.allow is not None:
        if not any(policy.models.allows(candidate) for candidate in _model_candidates(model)):
            problems.append(
                (
                    "default_model",
                    f"'{model}' is not allowed by models.allow ({', '.join(policy.models.allow)}): "
                    "every step priced with it would be blocked",
                )
            )
    return problems


def _effective(
    name: str,
    merged: Mapping[str, Any],
    file: str,
    line: int | None,
    prefix: tuple[str, ...],
    errors: list[PolicyErrorDetail],
) -> WorkflowPolicy | None:
    try:
        policy = WorkflowPolicy.model_validate({**_drop_nulls(merged), "name": name})
    except ValidationError as exc:
        errors.extend(detail for _, detail in _details(exc, file, None, WorkflowPolicy, prefix, line))
        return None
    problems = _consistency(policy)
    for field_name, message in problems:
        errors.append(PolicyErrorDetail(file=file, line=line, field=_dotted((*prefix, field_name)), message=message))
    return None if problems else policy


def _key_line(doc: _Document, loc: tuple[str, ...]) -> int | None:
    return _line(_locate(doc.root, loc, want_key=True)[0])


def _where(file: str, line: int | None) -> str:
    return f"{file}:{line}" if line is not None else file


def _build(documents: Sequence[_Document], errors: list[PolicyErrorDetail]) -> PolicySet:
    """Validate every document, combine them, merge defaults under workflows; raise all errors."""
    for doc in documents:
        _validate_document(doc)
        errors.extend(doc.errors)

    defaults_doc: _Document | None = None
    owners: dict[str, _Document] = {}
    order: list[str] = []
    for doc in documents:
        if "defaults" in doc.data:
            if defaults_doc is None:
                defaults_doc = doc
            else:
                first = _where(defaults_doc.file, _key_line(defaults_doc, ("defaults",)))
                errors.append(
                    PolicyErrorDetail(
                        file=doc.file,
                        line=_key_line(doc, ("defaults",)),
                        field="defaults",
                        message=f"defaults already defined in {first}: define defaults in one file only",
                    )
                )
        for name in _as_mapping(doc.data.get("workflows")):
            if not isinstance(name, str):
                continue
            if name in owners:
                other = owners[name]
                first = _where(other.file, _key_line(other, ("workflows", name)))
                errors.append(
                    PolicyErrorDetail(
                        file=doc.file,
                        line=_key_line(doc, ("workflows", name)),
                        field=f"workflows.{name}",
                        message=f"workflow '{name}' already defined in {first}: define each workflow in one file only",
                    )
                )
            else:
                owners[name] = doc
                order.append(name)

    defaults_raw: Mapping[str, Any] = {}
    defaults_ok = True
    defaults_policy = WorkflowPolicy(name=DEFAULTS_NAME)
    if defaults_doc is not None:
        defaults_ok = defaults_doc.defaults_ok
        defaults_raw = _as_mapping(defaults_doc.data.get("defaults"))
        if defaults_ok:
            built = _effective(
                DEFAULTS_NAME,
                defaults_raw,
                defaults_doc.file,
                _key_line(defaults_doc, ("defaults",)),
                ("defaults",),
                errors,
            )
            if built is None:
                defaults_ok = False
            else:
                defaults_policy = built

    workflows: dict[str, WorkflowPolicy] = {}
    for name in order:
        doc = owners[name]
        if not (defaults_ok and doc.workflows_ok) or name in doc.bad_workflows:
            continue
        own = _as_mapping(_as_mapping(doc.data.get("workflows")).get(name))
        policy = _effective(
            name,
            _deep_merge(defaults_raw, own),
            doc.file,
            _key_line(doc, ("workflows", name)),
            ("workflows", name),
            errors,
        )
        if policy is not None:
            workflows[name] = policy

    if errors:
        rank = {doc.file: index for index, doc in enumerate(documents)}
        ordered = sorted(
            enumerate(errors), key=lambda item: (rank.get(item[1].file, -1), item[1].line or 0, item[0])
        )
        raise PolicyError([detail for _, detail in ordered])
    return PolicySet(workflows, defaults_policy, tuple(doc.file for doc in documents))


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _policy_files(paths: PathArg | Sequence[PathArg], errors: list[PolicyErrorDetail]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        given: list[PathArg] = [paths]
    else:
        given = list(paths)
    if not given:
        errors.append(_file_error("<policy>", "no policy files given"))
    files: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for item in given:
        path = Path(os.fspath(item)).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in _POLICY_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
            if not found:
                errors.append(_file_error(str(path), "no policy files (*.yaml, *.yml) in this directory"))
            for p in found:
                add(p)
        elif path.is_file():
            add(path)
        elif path.exists():
            errors.append(_file_error(str(path), "not a file or directory"))
        else:
            errors.append(_file_error(str(path), "no such file or directory"))
    return files


def _read(path: Path, errors: list[PolicyErrorDetail]) -> _Document | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        errors.append(_file_error(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
        return None
    except OSError as exc:
        errors.append(_file_error(str(path), f"cannot read: {exc.strerror or exc}"))
        return None
    return _parse(str(path), text, errors)


def load_policies(path: PathArg | Sequence[PathArg]) -> PolicySet:
    """Load policy files: one YAML file, a directory of ``*.yaml``/``*.yml``, or a list of those.

    Raises :class:`~costguard.errors.PolicyError` listing every problem in every file.
    """
    errors: list[PolicyErrorDetail] = []
    documents: list[_Document] = []
    for file in _policy_files(path, errors):
        doc = _read(file, errors)
        if doc is not None:
            documents.append(doc)
    return _build(documents, errors)


def check_policies(paths: PathArg | Sequence[PathArg]) -> list[PolicyErrorDetail]:
    """Every problem in the policy files (an empty list means they are valid)."""
    try:
        load_policies(paths)
    except PolicyError as exc:
        return list(exc.errors)
    return []


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a policy file, for editors and the YAML language server."""
    schema = PolicyFile.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "title": "costguard policy file",
        "description": (
            "Per-workflow cost policies for Amazon Bedrock agents: loop and tool caps, response-size "
            "limits, token and cost caps, model allow-lists and budgets."
        ),
        **schema,
    }
