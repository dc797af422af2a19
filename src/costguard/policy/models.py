"""The policy models: limits, model rules, budgets, action rules, workflow policies, PolicySet."""

from __future__ import annotations

import fnmatch
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from costguard.errors import PolicyErrorDetail
from costguard.policy.render import _bad
from costguard.policy.selectors import (
    SELECTOR_SYNTAX,
    ActionSelector,
    _check_selector,
    _check_trim_path,
    _compile_selectors,
    _selector_matches,
)

#: Every rule string a violation record can carry.
RULES: Final[tuple[str, ...]] = (
    "per_request.max_model_calls",
    "per_request.max_tool_calls",
    "per_request.max_tokens",
    "per_request.max_cost_usd",
    "per_request.max_tool_response_bytes",
    "per_request.max_repeated_tool_calls",
    "per_session.max_model_calls",
    "per_session.max_tool_calls",
    "per_session.max_tokens",
    "per_session.max_cost_usd",
    "per_session.max_tool_response_bytes",
    "per_session.max_repeated_tool_calls",
    "models.allow",
    "models.pin",
    "budget.daily_usd",
    "budget.monthly_usd",
    "kill_switch",
    "unpriced",
    "unmetered",
)

WORKFLOW_NAME_PATTERN: Final[str] = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_WORKFLOW_NAME_RE: Final[re.Pattern[str]] = re.compile(WORKFLOW_NAME_PATTERN)
DEFAULT_ALERT_AT_PCT: Final[tuple[int, ...]] = (50, 80, 100)
DEFAULTS_NAME: Final[str] = "*"
_JSON_SCHEMA_DIALECT: Final[str] = "https://json-schema.org/draft/2020-12/schema"
_FOR_WORKFLOW_CACHE_MAX: Final[int] = 1024


# --------------------------------------------------------------------------------------------
# Field validators (strict: YAML must say what it means)
# --------------------------------------------------------------------------------------------

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
Unmetered = Literal["allow", "warn", "block"]
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
    max_repeated_tool_calls: NonNegInt | None = Field(
        default=None,
        description=(
            "Most calls of one tool with the same parameters (canonical JSON) allowed: a stuck loop "
            "asking for the same page again is stopped at the next repeat."
        ),
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
    pin: Literal["session"] | None = Field(
        default=None,
        description=(
            "session: a session keeps the model of its first call; a call on another model is refused "
            "before it is sent (inference-profile and ARN forms of one model are the same model)."
        ),
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

    @property
    def pinned_per_session(self) -> bool:
        """True when a session's first model is the only one its later calls may use."""
        return self.pin == "session"


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



class WorkflowPolicy(_Strict):
    """The effective policy of one workflow: its own settings merged over ``defaults``."""

    name: str = Field(min_length=1)
    mode: Mode = "enforce"
    on_ledger_error: OnLedgerError = "allow"
    unpriced: Unpriced = "alert"
    unmetered: Unmetered = "warn"
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
    unmetered: Unmetered | None = Field(
        default=None,
        description=(
            "For a cost-bearing call costguard cannot meter (e.g. retrieve, rerank): allow (counted), "
            "warn (counted, logged, Unmetered metric) or block (refused before it is sent)."
        ),
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
        # The loader builds PolicySets, so it is imported when first needed, not at import time.
        from costguard.policy.loader import _build, _Document

        return _build([_Document(source, None, dict(document))], [])

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> PolicySet:
        """Validate and merge one policy document given as YAML text."""
        from costguard.policy.loader import _build, _parse

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
