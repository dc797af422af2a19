"""``action_guard``: response-size limits, trims and write idempotency inside an action group Lambda.

A Bedrock agent re-sends every tool response to the model on every later step of its loop, so a
verbose action group (a search that returns 500 full records) is where surprise bills come from.
The meter (:mod:`costguard.meter`) can only *see* that from the trace, after the fact; this
decorator sits in the action group's own Lambda and shapes the response before the agent gets it::

    from costguard.action_guard import action_guard

    @action_guard("policies/", workflow="claims-intake", ledger="dynamodb://costguard")
    def handler(event, context):
        ...
        return {"messageVersion": "1.0", "response": {...}}

Both Lambda formats (messageVersion 1.0) are understood: OpenAPI action groups
(``apiPath``/``httpMethod``, body in ``response.responseBody["application/json"].body``) and
function-details action groups (``function``, body in
``response.functionResponse.responseBody.TEXT.body``).

**Which rule.** The workflow is the ``workflow`` argument, else the session attribute
``costguard_workflow``, else ``$COSTGUARD_WORKFLOW``, else ``default`` (which gets the policy
``defaults``). The rule is the most specific ``actions`` selector of that workflow's policy that
matches (see :class:`costguard.policy.ActionRule`); its ``max_response_bytes`` overrides the
workflow's ``per_request.max_tool_response_bytes``. No rule and no limit: the response passes
untouched (and is recorded).

**What happens to a response body** (sizes are always UTF-8 bytes, as Bedrock counts them):

1. A body that is under the limit and has no trim spec passes untouched, without being parsed.
2. A body that starts with ``{`` or ``[`` and parses as JSON gets the trim spec, in this order:
   ``keep`` projection, ``drop`` paths, ``max_list_items`` (every list cut to its first N
   items; nothing is appended to a list, so element types stay valid), ``max_string_bytes``
   (every string value cut at a UTF-8 character boundary, ending in "…"). If anything changed,
   or the body is over the limit, it is re-serialised compactly (``separators=(",", ":")``,
   ``ensure_ascii=False``): whitespace alone can bring pretty-printed JSON under a limit. When
   lists or strings were cut and the root is an object without a ``_costguard`` key, a
   ``"_costguard": {"items_dropped": n, "strings_truncated": m}`` entry is added, so the model
   knows it saw a partial result instead of concluding "there are only 20 claims". The trim
   applies to every response of a matching action, not only oversize ones: the agent then sees
   one stable shape, and the tokens are saved on every call.
3. A body that is not JSON (plain text, typical of function-details action groups) is never
   restructured; ``max_string_bytes``, if set, applies to the whole text (it is one string),
   cut at a character boundary.
4. Still over the limit: the body is replaced by a small notice — valid JSON for OpenAPI
   (``{"costguard": {"error": "response_too_large", "limit_bytes", "observed_bytes", "action",
   "hint"}}``, httpStatusCode kept as the handler set it, because the model reads the body as
   the observation and re-plans from it), text for function details with
   ``responseState: "REPROMPT"`` (Bedrock hands the text back to the model to re-ask). The hint
   names the paging/filter parameters the call used (``limit=500``, ``page``, ``fields``...)
   so the agent asks for less. Output is never truncated into invalid JSON.
5. The trim walks iteratively and stops at ``MAX_JSON_DEPTH`` (100) levels of nesting: a body
   nested deeper where the trim must go (or deeper than the json module can parse or write)
   is not restructured, only measured, and replaced by the notice when over the limit. If
   shaping fails for any other reason (a costguard bug), the body is still measured and
   replaced when over the limit, and the record says ``outcome: error``: the cap is never
   bypassed.

A violation (kind ``ResponseTooLarge``, rule ``actions.<selector>.max_response_bytes`` or
``per_request.max_tool_response_bytes``) is recorded when the body is still over the limit after
the trim, i.e. when it is (or in shadow mode would be) replaced. In ``mode: shadow`` the agent
gets the handler's response exactly as returned; the violation is recorded with
``enforced: false`` and its detail carries the would-be sizes.

**Recording.** Every invocation writes an :class:`~costguard.usage.ActionRecord` (sizes, trim
counts, outcome ``passed|trimmed|replaced|replayed|error``, latency): sizes and counts only, never
the body. In Lambda the record also carries what the invocation itself costs
(:mod:`costguard.action_cost`: billed duration x configured memory at the architecture's
GB-second price, plus the request price); the ledger adds that cost to the session (it counts
toward ``per_session.max_cost_usd``) and to the workflow's budget counters. Ledger failures follow ``on_ledger_error``: ``allow`` logs a warning and the response
goes out; ``deny`` returns a structured failure (OpenAPI: httpStatusCode 503; function details:
``responseState: "FAILURE"``, which ends the agent's turn with a dependency failure) that says the
cost ledger is unavailable and whether the action ran. The ledger is opened before the handler
runs, so a fail-closed workflow never performs an action it cannot record. Metrics
(``ActionResponseBytes``, ``ActionBytesSaved``, ``ActionTrimmed``, ``ActionReplaced``) go to the
optional ``metrics`` sink; a failing sink never breaks an action (failures are counted in
:attr:`ActionGuard.metrics_dropped`).

**Idempotent writes** (``idempotent: true``). The key is the SHA-256 of the user id (HMAC-SHA256
with ``user_id_key``/``$COSTGUARD_USER_KEY`` when set; taken from the session attribute
``costguard_user_id``), sessionId, agent id, actionGroup, apiPath or function, httpMethod, and the
canonical JSON of ``parameters`` and ``requestBody`` (lists sorted, so argument order does not
matter). The first caller claims the key in the ledger and runs the handler; a handler that raises
releases the claim (a retry runs again) and its exception propagates unchanged, as Lambda expects.
A retry within ``idempotency_ttl_s`` never runs the handler again.

The trade-off: costguard never persists tool output, so the ledger keeps only the SHA-256 and size
of the first response. A retry that reaches the same warm Lambda instance gets the first response
back from a bounded in-process LRU cache (checked against the ledger's hash). A retry on another
(cold) instance cannot get the original body back; it gets a structured answer instead, saying the
write already completed (when, response hash and size) and must not be repeated — or, while the
first attempt has not finished, that it is still in progress. An attempt killed mid-run (timeout)
leaves its claim ``in_progress`` until the TTL expires; keep ``idempotency_ttl_s`` modest.

Importing this module does nothing: no policy files are read, no ledger or boto3 client is made.
Policies load when :func:`action_guard` is called (the decoration, at the Lambda's init phase); the
ledger opens on the first invocation and is reused by warm invocations.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import sys
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from costguard.action_cost import invocation_cost
from costguard.coerce import canonical as _canonical
from costguard.errors import CostguardError, PolicyError
from costguard.ledger import Ledger, open_ledger
from costguard.policy import ActionRule, ActionTrim, PolicySet, WorkflowPolicy, load_policies, parse_trim_path
from costguard.usage import ActionRecord, IdempotencyRecord, ViolationRecord

__all__ = [
    "ActionGuard",
    "CompiledTrim",
    "TrimStats",
    "action_guard",
    "shape_body",
    "truncate_utf8",
    "utf8_len",
]

logger = logging.getLogger("costguard.action_guard")

Handler = Callable[[Any, Any], Any]

DEFAULT_WORKFLOW: Final = "default"
WORKFLOW_ATTRIBUTE: Final = "costguard_workflow"
USER_ATTRIBUTE: Final = "costguard_user_id"
ANNOTATION_KEY: Final = "_costguard"
ELLIPSIS: Final = "…"
_ELLIPSIS_BYTES: Final = len(ELLIPSIS.encode())

METRIC_RESPONSE_BYTES: Final = "ActionResponseBytes"
METRIC_BYTES_SAVED: Final = "ActionBytesSaved"
METRIC_TRIMMED: Final = "ActionTrimmed"
METRIC_REPLACED: Final = "ActionReplaced"

#: Bounds of the in-process replay cache (warm-instance retries of idempotent writes).
REPLAY_CACHE_MAX_ENTRIES: Final = 128
REPLAY_CACHE_MAX_BYTES: Final = 8 * 1024 * 1024
#: The trim does not descend deeper than this; a body nested deeper where it must go is only
#: measured against the limit (and replaced by the notice when over it). Real API responses nest
#: a few levels.
MAX_JSON_DEPTH: Final = 100

# Parameter names that usually control how much an operation returns: named in the hint.
_NARROWING_PARAM_RE: Final = re.compile(
    r"(page|limit|size|count|max|top|take|offset|cursor|field|select|column|include|expand|"
    r"from|to$|since|until|date|range|filter|query|status|sort|^q$)",
    re.IGNORECASE,
)


class MetricsLike(Protocol):
    """What ``metrics`` must provide (:class:`costguard.metrics.MetricsSink` does)."""

    def add(self, name: str, value: float, unit: str, *, workflow: str, model_id: str | None = None) -> None: ...


# --------------------------------------------------------------------------------------------
# Bytes and trimming (pure functions: no ledger, no policy loading)
# --------------------------------------------------------------------------------------------


def utf8_len(text: str) -> int:
    """UTF-8 byte length of ``text`` (what Bedrock counts), cheap for ASCII."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate from json.loads("\\ud800"): count it as 3 bytes
        return len(text.encode("utf-8", "surrogatepass"))


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes at a character boundary.

    A cut text ends in "…" (inside the budget) when the budget has room for it, so a reader can
    tell. Returns ``(text, was_cut)``.
    """
    if len(text) * 4 <= max_bytes:  # cannot be over: no need to encode
        return text, False
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text, False
    marker = ELLIPSIS if max_bytes > _ELLIPSIS_BYTES else ""
    budget = max_bytes - (len(marker.encode()) if marker else 0)
    # Decoding a prefix with "ignore" drops only the partial character at the cut.
    return raw[:budget].decode("utf-8", "ignore") + marker, True


@dataclass(slots=True)
class TrimStats:
    """What a trim removed."""

    fields_dropped: int = 0
    items_dropped: int = 0
    strings_truncated: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.fields_dropped or self.items_dropped or self.strings_truncated)


class _Node:
    """A compiled set of trim paths: ``leaf`` means the path ends here (the whole subtree)."""

    __slots__ = ("children", "leaf")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf = False

    def add(self, keys: tuple[str, ...]) -> None:
        node = self
        for key in keys:
            node = node.children.setdefault(key, _Node())
        node.leaf = True

    def merged(self, other: _Node) -> _Node:
        out = _Node()
        out.leaf = self.leaf or other.leaf
        for key in self.children.keys() | other.children.keys():
            mine, theirs = self.children.get(key), other.children.get(key)
            if mine is not None and theirs is not None:
                out.children[key] = mine.merged(theirs)
            else:
                out.children[key] = mine if mine is not None else theirs  # type: ignore[assignment]
        return out

    def fold_wildcards(self) -> _Node:
        """Merge a ``*`` child into every named sibling, so a lookup needs one dict access."""
        star = self.children.get("*")
        for key, child in list(self.children.items()):
            if key != "*" and star is not None:
                child = child.merged(star)
            self.children[key] = child.fold_wildcards()
        return self


def _tree(paths: Iterable[str] | None) -> _Node | None:
    if not paths:
        return None
    root = _Node()
    for path in paths:
        keys = parse_trim_path(path)
        if not keys:  # "[]" alone: the whole document
            root.leaf = True
        else:
            root.add(keys)
    return root.fold_wildcards()


class CompiledTrim:
    """An :class:`~costguard.policy.ActionTrim` ready to apply to parsed JSON."""

    __slots__ = ("drop", "keep", "max_list_items", "max_string_bytes", "_deep")

    def __init__(self, spec: ActionTrim) -> None:
        self.keep = _tree(spec.keep)
        if self.keep is not None and self.keep.leaf:
            self.keep = None  # keeping the root keeps everything
        self.drop = _tree(spec.drop)
        self.max_list_items = spec.max_list_items
        self.max_string_bytes = spec.max_string_bytes
        # Without list or string caps, subtrees no path reaches are returned as they are.
        self._deep = self.max_list_items is not None or self.max_string_bytes is not None

    def apply(self, value: Any) -> tuple[Any, TrimStats]:
        """The trimmed value (input left untouched) and what was removed."""
        stats = TrimStats()
        if self.drop is not None and self.drop.leaf:  # dropping the root: an empty document
            stats.fields_dropped += 1
            return ({} if isinstance(value, dict) else [] if isinstance(value, list) else None), stats
        return self._walk(value, self.keep, self.drop, stats), stats

    def _walk(self, value: Any, keep: _Node | None, drop: _Node | None, stats: TrimStats) -> Any:
        """Iterative (an explicit stack, no recursion): each container is created in place and
        filled as its items come off the stack, so depth costs memory, not Python frames."""
        root: list[Any] = [None]
        # (value, keep, drop, the container to write into, the slot there, depth)
        pending: list[tuple[Any, _Node | None, _Node | None, Any, Any, int]] = [(value, keep, drop, root, 0, 0)]
        while pending:
            value, keep, drop, target, slot, depth = pending.pop()
            if depth > MAX_JSON_DEPTH:
                raise _TooDeep(depth)
            if keep is None and drop is None and not self._deep:
                target[slot] = value
            elif isinstance(value, dict):
                keep_children = keep.children if keep is not None else None
                drop_children = drop.children if drop is not None else None
                star_keep = keep_children.get("*") if keep_children is not None else None
                star_drop = drop_children.get("*") if drop_children is not None else None
                out: dict[Any, Any] = {}
                target[slot] = out
                for key, item in value.items():
                    child_keep: _Node | None = None
                    if keep_children is not None:
                        child_keep = keep_children.get(key, star_keep)
                        if child_keep is None:
                            stats.fields_dropped += 1
                            continue
                        if child_keep.leaf:
                            child_keep = None  # the path ends here: keep the whole subtree
                    child_drop: _Node | None = None
                    if drop_children is not None:
                        child_drop = drop_children.get(key, star_drop)
                        if child_drop is not None and child_drop.leaf:
                            stats.fields_dropped += 1
                            continue
                    out[key] = None  # holds the key's place: the order of keys is kept
                    pending.append((item, child_keep, child_drop, out, key, depth + 1))
            elif isinstance(value, list):
                limit = self.max_list_items
                if limit is not None and len(value) > limit:
                    # Cut first, then walk: the dropped items cost nothing.
                    stats.items_dropped += len(value) - limit
                    value = value[:limit]
                items: list[Any] = [None] * len(value)
                target[slot] = items
                # Lists are transparent: the same paths apply to every element.
                pending.extend((item, keep, drop, items, index, depth + 1) for index, item in enumerate(value))
            elif isinstance(value, str) and self.max_string_bytes is not None:
                text, cut = truncate_utf8(value, self.max_string_bytes)
                if cut:
                    stats.strings_truncated += 1
                target[slot] = text
            else:
                target[slot] = value
        return root[0]


class _TooDeep(Exception):
    """Internal: a JSON body nests deeper than :data:`MAX_JSON_DEPTH`."""


@dataclass(slots=True)
class ShapedBody:
    """The result of :func:`shape_body` for one body string."""

    text: str
    bytes_before: int
    bytes_after: int
    stats: TrimStats
    is_json: bool
    over_limit: bool  # still over the limit after the trim: the caller replaces it

    @property
    def changed(self) -> bool:
        return self.bytes_after != self.bytes_before or self.stats.changed


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_NOT_JSON: Final = object()


def _unshaped(text: str, before: int, limit: int | None) -> ShapedBody:
    """JSON too deep to restructure (or to cut as text, which would break it): only measured."""
    return ShapedBody(text, before, before, TrimStats(), True, limit is not None and before > limit)


def shape_body(text: str, trim: CompiledTrim | None, limit: int | None) -> ShapedBody:
    """Apply the trim spec and measure against ``limit`` (see the module docstring)."""
    before = utf8_len(text)
    if trim is None and (limit is None or before <= limit):
        return ShapedBody(text, before, before, TrimStats(), False, False)
    data: Any = _NOT_JSON
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            data = json.loads(text)
        except ValueError:
            data = _NOT_JSON
        except RecursionError:  # nested deeper than the json module can parse
            return _unshaped(text, before, limit)
    stats = TrimStats()
    if data is _NOT_JSON:
        out = text
        if trim is not None and trim.max_string_bytes is not None:
            out, cut = truncate_utf8(text, trim.max_string_bytes)
            stats.strings_truncated += int(cut)
        after = utf8_len(out) if out is not text else before
        return ShapedBody(out, before, after, stats, False, limit is not None and after > limit)
    if trim is not None:
        try:
            data, stats = trim.apply(data)
        except _TooDeep:
            return _unshaped(text, before, limit)
        if isinstance(data, dict) and (stats.items_dropped or stats.strings_truncated) and ANNOTATION_KEY not in data:
            data[ANNOTATION_KEY] = {"items_dropped": stats.items_dropped, "strings_truncated": stats.strings_truncated}
    out = text
    after = before
    if stats.changed or (limit is not None and before > limit):
        try:
            compact = _dumps(data)
        except RecursionError:  # a deep subtree no trim path reached
            return _unshaped(text, before, limit)
        compact_bytes = utf8_len(compact)
        # Re-serialising an untouched document is only worth it when it is smaller.
        if stats.changed or compact_bytes < before:
            out, after = compact, compact_bytes
    return ShapedBody(out, before, after, stats, True, limit is not None and after > limit)


# --------------------------------------------------------------------------------------------
# Events and responses
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Invocation:
    """The fields of an action group event costguard needs (parsed defensively)."""

    event: Mapping[str, Any]
    workflow: str
    action_group: str
    api_path: str | None
    http_method: str | None
    function: str | None
    session_id: str | None
    agent_id: str | None
    request_id: str | None
    #: The Lambda context (its memory size prices the invocation) and when the invocation began.
    context: Any = None
    started: float = 0.0

    @property
    def is_function(self) -> bool:
        return self.function is not None and self.api_path is None

    @property
    def action(self) -> str:
        """``"actionGroup apiPath VERB"`` or ``"actionGroup function"`` (ActionRecord.action)."""
        if self.is_function:
            return f"{self.action_group} {self.function}"
        return " ".join(p for p in (self.action_group, self.api_path or "", (self.http_method or "").upper()) if p)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _attributes(event: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = event.get(name)
    return value if isinstance(value, Mapping) else {}


def _param_items(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(name, value)`` of the event's parameters and requestBody properties."""
    found: list[tuple[str, Any]] = []
    params = event.get("parameters")
    if isinstance(params, list):
        found.extend((str(p.get("name")), p.get("value")) for p in params if isinstance(p, Mapping))
    body = event.get("requestBody")
    content = body.get("content") if isinstance(body, Mapping) else None
    if isinstance(content, Mapping):
        for media in content.values():
            props = media.get("properties") if isinstance(media, Mapping) else None
            if isinstance(props, list):
                found.extend((str(p.get("name")), p.get("value")) for p in props if isinstance(p, Mapping))
    return found


def _body_slots(response: Any) -> tuple[str | None, list[tuple[dict[str, Any], str]]]:
    """The response format (``openapi``/``function``/None) and its ``(body holder, content type)``."""
    inner = response.get("response") if isinstance(response, Mapping) else None
    if not isinstance(inner, Mapping):
        return None, []
    if isinstance(inner.get("responseBody"), Mapping):
        kind, bodies = "openapi", inner["responseBody"]
    elif isinstance(inner.get("functionResponse"), Mapping) and isinstance(
        inner["functionResponse"].get("responseBody"), Mapping
    ):
        kind, bodies = "function", inner["functionResponse"]["responseBody"]
    else:
        return None, []
    slots = [
        (holder, content_type)
        for content_type, holder in bodies.items()
        if isinstance(holder, dict) and isinstance(holder.get("body"), str)
    ]
    return kind, slots


def _bodies_digest(response: Any) -> tuple[str, int]:
    """SHA-256 and total UTF-8 size of a response's bodies (what the ledger may keep)."""
    _, slots = _body_slots(response)
    digest = hashlib.sha256()
    size = 0
    for index, (holder, _) in enumerate(slots):
        body: str = holder["body"]
        encoded = body.encode("utf-8", "surrogatepass")
        if index:
            digest.update(b"\x00")
        digest.update(encoded)
        size += len(encoded)
    return digest.hexdigest(), size


def _with_body(response: Mapping[str, Any], kind: str, body: str, response_state: str | None) -> dict[str, Any]:
    """A copy of ``response`` whose body is ``body`` (the handler's dict is left untouched)."""
    out = dict(response)
    inner = dict(out["response"])
    if kind == "openapi":
        inner["responseBody"] = {"application/json": {"body": body}}
    else:
        function_response = dict(inner.get("functionResponse") or {})
        function_response["responseBody"] = {"TEXT": {"body": body}}
        if response_state is not None:
            function_response["responseState"] = response_state
        inner["functionResponse"] = function_response
    out["response"] = inner
    return out


def _fresh_response(
    inv: _Invocation,
    payload: Mapping[str, Any],
    text: str,
    *,
    status_code: int = 200,
    response_state: str | None = None,
) -> dict[str, Any]:
    """A complete response built from the event: JSON ``payload`` (OpenAPI) or ``text`` (function)."""
    event = inv.event
    if inv.is_function:
        function_response: dict[str, Any] = {"responseBody": {"TEXT": {"body": text}}}
        if response_state is not None:
            function_response["responseState"] = response_state
        inner: dict[str, Any] = {
            "actionGroup": inv.action_group,
            "function": inv.function,
            "functionResponse": function_response,
        }
    else:
        inner = {
            "actionGroup": inv.action_group,
            "apiPath": inv.api_path,
            "httpMethod": inv.http_method,
            "httpStatusCode": status_code,
            "responseBody": {"application/json": {"body": _dumps(payload)}},
        }
    return {
        "messageVersion": "1.0",
        "response": inner,
        # Echoed so the session state the agent carries is not lost by this answer.
        "sessionAttributes": dict(_attributes(event, "sessionAttributes")),
        "promptSessionAttributes": dict(_attributes(event, "promptSessionAttributes")),
    }


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hint(inv: _Invocation) -> str:
    narrowing = [(name, value) for name, value in _param_items(inv.event) if _NARROWING_PARAM_RE.search(name)]
    base = "ask for fewer items, a smaller page, or specific fields"
    if narrowing:
        used = ", ".join(f"{name}={_short(value)}" for name, value in narrowing[:5])
        return f"{base}: this call used {used}; lower the page size or limit, or request only the fields you need"
    return f"{base}: narrow the request (a filter, a shorter date range, one record instead of a list)"


def _too_large_notice(
    inv: _Invocation, limit: int, observed: int | None, minimal: bool = False
) -> tuple[dict[str, Any], str]:
    notice: dict[str, Any] = {
        "error": "response_too_large",
        "limit_bytes": limit,
        "observed_bytes": observed,
        "action": inv.action,
    }
    if not minimal:
        notice["hint"] = _hint(inv)
    payload = {"costguard": notice}
    size = "could not be measured against" if observed is None else f"was {observed} bytes, over"
    text = f"costguard: response_too_large. The result of {inv.action} {size} the {limit}-byte limit, so it was withheld."
    if not minimal:
        text += f" To get a result, {notice['hint']}."
    return payload, text


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


# --------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------


class _LedgerUnavailable(Exception):
    """Internal: a ledger operation failed (already logged)."""


@dataclass(slots=True)
class _Cached:
    response: dict[str, Any]
    sha256: str
    size: int


class ActionGuard:
    """The state behind one decorated handler: policies, the lazily opened ledger, the replay cache.

    One instance lives as long as the Lambda execution environment, so the ledger connection and
    the replay cache are reused across warm invocations.
    """

    def __init__(
        self,
        handler: Handler,
        policies: PolicySet,
        *,
        workflow: str | None = None,
        ledger: str | Ledger | None = None,
        metrics: MetricsLike | None = None,
        clock: Callable[[], float] = time.time,
        user_id_key: str | bytes | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.handler = handler
        self.policies = policies
        self.workflow = workflow
        self.metrics = metrics
        self._ledger_spec = ledger
        self._ledger: Ledger | None = ledger if isinstance(ledger, Ledger) else None
        self._clock = clock
        self._timer = timer
        key = user_id_key if user_id_key is not None else os.environ.get("COSTGUARD_USER_KEY")
        self._user_key: bytes | None = key.encode() if isinstance(key, str) else key
        self._lock = threading.Lock()
        self._replay: OrderedDict[str, _Cached] = OrderedDict()
        self._replay_bytes = 0
        self._trims: dict[int, tuple[ActionTrim, CompiledTrim]] = {}
        #: Ledger operations that failed (under either on_ledger_error setting).
        self.ledger_errors = 0
        #: Metric samples the sink refused (it raised).
        self.metrics_dropped = 0

    # -- plumbing ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def ledger(self) -> Ledger:
        """The ledger, opened on first use (raises what ``open_ledger`` raises)."""
        if self._ledger is None:
            with self._lock:
                if self._ledger is None:
                    self._ledger = open_ledger(self._ledger_spec)  # type: ignore[arg-type]
        return self._ledger

    def _ledger_call(self, what: str, fn: Callable[[Ledger], Any]) -> Any:
        """Run ``fn(ledger)``; on any failure log it, count it and raise ``_LedgerUnavailable``."""
        try:
            return fn(self.ledger())
        except (CostguardError, OSError) as exc:  # LedgerError, or a ledger file that cannot be opened
            self.ledger_errors += 1
            logger.warning("costguard action guard: ledger unavailable while %s: %s", what, exc)
            raise _LedgerUnavailable(str(exc)) from exc

    def _metric(self, name: str, value: float, unit: str, workflow: str) -> None:
        if self.metrics is None:
            return
        try:
            self.metrics.add(name, value, unit, workflow=workflow)
        except Exception:  # telemetry never breaks an action
            self.metrics_dropped += 1

    def _compiled(self, trim: ActionTrim | None) -> CompiledTrim | None:
        if trim is None or trim.is_empty:
            return None
        entry = self._trims.get(id(trim))
        if entry is None or entry[0] is not trim:
            entry = (trim, CompiledTrim(trim))
            if len(self._trims) < 1024:
                self._trims[id(trim)] = entry
        return entry[1]

    def _invocation(self, event: Mapping[str, Any], context: Any) -> _Invocation:
        attributes = _attributes(event, "sessionAttributes")
        workflow = (
            self.workflow
            or _str_or_none(attributes.get(WORKFLOW_ATTRIBUTE))
            or _str_or_none(os.environ.get("COSTGUARD_WORKFLOW", "").strip())
            or DEFAULT_WORKFLOW
        )
        agent = event.get("agent")
        return _Invocation(
            event=event,
            workflow=workflow,
            action_group=str(event.get("actionGroup") or ""),
            api_path=_str_or_none(event.get("apiPath")),
            http_method=_str_or_none(event.get("httpMethod")),
            function=_str_or_none(event.get("function")),
            session_id=_str_or_none(event.get("sessionId")),
            agent_id=_str_or_none(agent.get("id")) if isinstance(agent, Mapping) else None,
            request_id=_str_or_none(getattr(context, "aws_request_id", None)),
            context=context,
            started=self._timer(),
        )

    def idempotency_key(self, inv: _Invocation) -> str:
        """SHA-256 hex of who asked what (see the module docstring)."""
        user = _str_or_none(_attributes(inv.event, "sessionAttributes").get(USER_ATTRIBUTE))
        if user is not None and self._user_key is not None:
            user = "h:" + hmac.new(self._user_key, user.encode(), hashlib.sha256).hexdigest()
        material = [
            user,
            inv.session_id,
            inv.agent_id,
            inv.action_group,
            inv.function if inv.is_function else inv.api_path,
            (inv.http_method or "").upper() or None,
            _canonical(inv.event.get("parameters") or []),
            _canonical(inv.event.get("requestBody") or {}),
        ]
        text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    # -- replay cache ---------------------------------------------------------------------------

    def _remember(self, key: str, response: dict[str, Any], sha: str, size: int) -> None:
        if size > REPLAY_CACHE_MAX_BYTES // 4:  # one huge response must not evict everything
            return
        with self._lock:
            old = self._replay.pop(key, None)
            if old is not None:
                self._replay_bytes -= old.size
            self._replay[key] = _Cached(copy.deepcopy(response), sha, size)
            self._replay_bytes += size
            while self._replay and (
                len(self._replay) > REPLAY_CACHE_MAX_ENTRIES or self._replay_bytes > REPLAY_CACHE_MAX_BYTES
            ):
                _, evicted = self._replay.popitem(last=False)
                self._replay_bytes -= evicted.size

    def _recall(self, key: str, sha: str | None) -> dict[str, Any] | None:
        with self._lock:
            cached = self._replay.get(key)
            if cached is None or sha is None or cached.sha256 != sha:
                return None
            self._replay.move_to_end(key)
            return copy.deepcopy(cached.response)

    # -- responses costguard writes ----------------------------------------------------------------

    def _ledger_denied(self, inv: _Invocation, action_ran: bool) -> dict[str, Any]:
        ran = (
            "The action already ran; do not repeat it."
            if action_ran
            else "The action was not run."
        )
        message = (
            f"The cost ledger is unavailable and workflow '{inv.workflow}' fails closed "
            f"(on_ledger_error: deny), so the result of {inv.action} is withheld. {ran} "
            "Tell the user the service is temporarily unavailable."
        )
        payload = {
            "costguard": {
                "error": "ledger_unavailable",
                "action": inv.action,
                "action_ran": action_ran,
                "message": message,
            }
        }
        return _fresh_response(inv, payload, f"costguard: ledger_unavailable. {message}", status_code=503,
                               response_state="FAILURE")

    def _replay_notice(self, inv: _Invocation, record: IdempotencyRecord) -> dict[str, Any]:
        if record.status == "completed":
            info: dict[str, Any] = {
                "status": "already_completed",
                "action": inv.action,
                "completed_at": _iso(record.completed_at_ms),
                "response_sha256": record.response_sha256,
                "response_bytes": record.response_bytes,
                "message": (
                    "This write already ran with exactly these inputs and must not be retried. Its "
                    "original result is not stored; treat the action as done (ask the user, or use a "
                    "read action, if you need its details)."
                ),
            }
        else:
            info = {
                "status": "in_progress",
                "action": inv.action,
                "started_at": _iso(record.claimed_at_ms),
                "message": (
                    "The first attempt of this write with exactly these inputs is still running. Do not "
                    "retry it; tell the user it is being processed."
                ),
            }
        text = f"costguard: {info['status']}. {info['message']}"
        if record.status == "completed":
            text += f" (completed at {info['completed_at']}, response sha256 {record.response_sha256})"
        return _fresh_response(inv, {"costguard": info}, text)

    # -- the invocation -----------------------------------------------------------------------------

    def __call__(self, event: Any, context: Any) -> Any:
        if not isinstance(event, Mapping):  # not an action group event: nothing to govern
            return self.handler(event, context)
        started = time.perf_counter()
        ts_ms = self._now_ms()
        inv = self._invocation(event, context)
        policy = self.policies.for_workflow(inv.workflow)
        match = policy.action_match(inv.action_group, inv.api_path, inv.http_method, inv.function)
        selector, rule = match if match is not None else (None, None)
        fail_closed = policy.on_ledger_error == "deny"

        # Opening the ledger before the handler runs: a fail-closed workflow must not perform an
        # action it cannot record.
        ledger_ok = True
        try:
            self._ledger_call("opening the ledger", lambda ledger: ledger)
        except _LedgerUnavailable:
            if fail_closed:
                return self._ledger_denied(inv, action_ran=False)
            ledger_ok = False  # fail open: run unrecorded, without retry protection

        key: str | None = None
        if ledger_ok and rule is not None and rule.idempotent:
            key = self.idempotency_key(inv)
            try:
                existing = self._ledger_call(
                    "claiming an idempotency key",
                    lambda ledger: ledger.claim_idempotency_key(key, ts_ms, rule.idempotency_ttl_s * 1000),
                )
            except _LedgerUnavailable:
                if fail_closed:
                    return self._ledger_denied(inv, action_ran=False)
                key = None  # fail open: run without retry protection
            else:
                if existing is not None:
                    return self._replayed(inv, policy, key, existing, ts_ms, started)

        try:
            response = self.handler(event, context)
        except BaseException:
            # Lambda semantics: the handler's exception propagates unchanged. Release the claim
            # first so a retry runs the action again; ledger trouble here is only logged.
            if key is not None:
                try:
                    self._ledger_call("releasing an idempotency key", lambda ledger: ledger.release_idempotency_key(key))
                except _LedgerUnavailable:
                    pass
            if ledger_ok:
                self._record(inv, policy, ActionRecord(
                    ts_ms, inv.workflow, inv.action, inv.session_id, inv.request_id, 0, 0, 0, 0, 0, "error",
                    _elapsed_ms(started), inv.agent_id,
                ), None)
            raise

        try:
            final, record, violation = self._shape(inv, policy, selector, rule, response, ts_ms)
        except Exception:  # a costguard bug must not break the action, nor let a body past the cap
            logger.exception("costguard action guard: could not shape the response of %s", inv.action)
            final, record, violation = self._capped_after_error(inv, policy, selector, rule, response, ts_ms)

        if key is not None:
            sha, size = _bodies_digest(final)
            try:
                self._ledger_call(
                    "completing an idempotency key",
                    lambda ledger: ledger.complete_idempotency_key(key, sha, size, self._now_ms()),
                )
            except _LedgerUnavailable:
                if fail_closed:
                    return self._ledger_denied(inv, action_ran=True)
            else:
                self._remember(key, final, sha, size)

        if record is not None and ledger_ok:
            record.latency_ms = _elapsed_ms(started)
            if not self._record(inv, policy, record, violation) and fail_closed:
                return self._ledger_denied(inv, action_ran=True)
        return final

    def _record(
        self, inv: _Invocation, policy: WorkflowPolicy, record: ActionRecord, violation: ViolationRecord | None
    ) -> bool:
        """Write the action (and violation); False when the ledger failed."""
        self._add_cost(inv, record)
        try:
            self._ledger_call("recording an action", lambda ledger: ledger.record_action(record))
            if violation is not None:
                self._ledger_call("recording a violation", lambda ledger: ledger.record_violation(violation))
        except _LedgerUnavailable:
            return False
        return True

    def _add_cost(self, inv: _Invocation, record: ActionRecord) -> None:
        """What this invocation costs in Lambda time, as billed: measured up to this point."""
        try:
            cost = invocation_cost(inv.context, self._timer() - inv.started)
        except Exception:  # a costguard bug must not break the action: record it unpriced
            logger.exception("costguard action guard: could not price the invocation of %s", inv.action)
            return
        if cost is None:
            return  # not in Lambda (no memory size): nothing Lambda bills
        if cost.region_assumed:
            logger.warning("costguard action guard: no Lambda price for this region; priced as %s", cost.region)
        record.cost_nanos = cost.cost_nanos
        record.billed_ms = cost.billed_ms
        record.memory_mb = cost.memory_mb
        record.architecture = cost.architecture

    def _replayed(
        self,
        inv: _Invocation,
        policy: WorkflowPolicy,
        key: str,
        existing: IdempotencyRecord,
        ts_ms: int,
        started: float,
    ) -> dict[str, Any]:
        cached = self._recall(key, existing.response_sha256) if existing.status == "completed" else None
        response = cached if cached is not None else self._replay_notice(inv, existing)
        _, size = _bodies_digest(response)
        record = ActionRecord(
            ts_ms, inv.workflow, inv.action, inv.session_id, inv.request_id,
            existing.response_bytes or 0, size, 0, 0, 0, "replayed", _elapsed_ms(started), inv.agent_id,
        )
        if not self._record(inv, policy, record, None) and policy.on_ledger_error == "deny":
            return self._ledger_denied(inv, action_ran=True)
        return response

    def _shape(
        self,
        inv: _Invocation,
        policy: WorkflowPolicy,
        selector: str | None,
        rule: ActionRule | None,
        response: Any,
        ts_ms: int,
    ) -> tuple[Any, ActionRecord | None, ViolationRecord | None]:
        """Trim/replace the response; the record and violation to write (see the module docstring)."""
        limit, limit_rule = _limit_of(policy, selector, rule)
        trim = self._compiled(rule.trim if rule is not None else None)
        kind, slots = _body_slots(response)
        if kind is None:
            logger.warning(
                "costguard action guard: %s returned no recognisable action group response; passed through",
                inv.action,
            )
            return response, self._action_record(inv, ts_ms, 0, 0, TrimStats(), "passed"), None

        shaped = [shape_body(holder["body"], trim, limit) for holder, _ in slots]
        before = sum(s.bytes_before for s in shaped)
        after = sum(s.bytes_after for s in shaped)
        stats = TrimStats(
            sum(s.stats.fields_dropped for s in shaped),
            sum(s.stats.items_dropped for s in shaped),
            sum(s.stats.strings_truncated for s in shaped),
        )
        over = any(s.over_limit for s in shaped)
        changed = any(s.changed for s in shaped)
        outcome = "replaced" if over else "trimmed" if changed else "passed"

        final = response
        if over:
            assert limit is not None
            replaced, replaced_bytes = _withheld(inv, kind, response, limit, after)
        elif changed:
            replaced = _with_body_slots(response, kind, [s.text for s in shaped])
            replaced_bytes = after
        else:
            replaced, replaced_bytes = response, after

        violation: ViolationRecord | None = None
        if over:
            violation = _too_large(inv, policy, ts_ms, selector, limit_rule, limit, before, after, stats)

        if policy.shadow:
            if outcome != "passed":
                logger.info(
                    "costguard action guard (shadow): %s would be %s: %d -> %d bytes (limit %s)",
                    inv.action, outcome, before, replaced_bytes, limit,
                )
            record = self._action_record(inv, ts_ms, before, before, TrimStats(), "passed")
            self._emit(inv.workflow, before, 0, False, False)
            return final, record, violation

        final = replaced
        record = self._action_record(inv, ts_ms, before, replaced_bytes, stats, outcome)
        self._emit(inv.workflow, before, max(0, before - replaced_bytes), outcome == "trimmed", outcome == "replaced")
        return final, record, violation

    def _capped_after_error(
        self,
        inv: _Invocation,
        policy: WorkflowPolicy,
        selector: str | None,
        rule: ActionRule | None,
        response: Any,
        ts_ms: int,
    ) -> tuple[Any, ActionRecord | None, ViolationRecord | None]:
        """After an internal error while shaping: nothing is trimmed, but the size cap still holds
        (an over-limit body is replaced by the notice) and the record says ``outcome=error``.

        A response that cannot even be measured is withheld whenever a size limit applies (it
        might be over it), and delivered as is when none does.
        """
        limit, limit_rule = _limit_of(policy, selector, rule)
        try:
            kind, slots = _body_slots(response)
            sizes = [utf8_len(holder["body"]) for holder, _ in slots]
        except Exception:
            logger.exception("costguard action guard: could not measure the response of %s", inv.action)
            unmeasured = self._action_record(inv, ts_ms, 0, 0, TrimStats(), "error")
            if limit is None or policy.shadow:
                return response, unmeasured, None
            payload, text = _too_large_notice(inv, limit, None, minimal=True)
            return _fresh_response(inv, payload, text, response_state="REPROMPT"), unmeasured, None
        before = sum(sizes)
        over = kind is not None and limit is not None and any(size > limit for size in sizes)
        if not over:
            return response, self._action_record(inv, ts_ms, before, before, TrimStats(), "error"), None
        assert kind is not None and limit is not None
        violation = _too_large(inv, policy, ts_ms, selector, limit_rule, limit, before, before, TrimStats())
        if policy.shadow:
            return response, self._action_record(inv, ts_ms, before, before, TrimStats(), "error"), violation
        replaced, replaced_bytes = _withheld(inv, kind, response, limit, before)
        return replaced, self._action_record(inv, ts_ms, before, replaced_bytes, TrimStats(), "error"), violation

    def _action_record(
        self, inv: _Invocation, ts_ms: int, before: int, after: int, stats: TrimStats, outcome: str
    ) -> ActionRecord:
        return ActionRecord(
            ts_ms, inv.workflow, inv.action, inv.session_id, inv.request_id, before, after,
            stats.fields_dropped, stats.items_dropped, stats.strings_truncated, outcome, None, inv.agent_id,
        )

    def _emit(self, workflow: str, before: int, saved: int, trimmed: bool, replaced: bool) -> None:
        self._metric(METRIC_RESPONSE_BYTES, before, "Bytes", workflow)
        self._metric(METRIC_BYTES_SAVED, saved, "Bytes", workflow)
        self._metric(METRIC_TRIMMED, 1 if trimmed else 0, "Count", workflow)
        self._metric(METRIC_REPLACED, 1 if replaced else 0, "Count", workflow)


def _limit_of(policy: WorkflowPolicy, selector: str | None, rule: ActionRule | None) -> tuple[int | None, str]:
    """The size limit that applies and the rule string a violation of it carries."""
    if rule is not None and rule.max_response_bytes is not None:
        return rule.max_response_bytes, f"actions.{selector}.max_response_bytes"
    return policy.per_request.max_tool_response_bytes, "per_request.max_tool_response_bytes"


def _withheld(inv: _Invocation, kind: str, response: Any, limit: int, observed: int) -> tuple[dict[str, Any], int]:
    """``response`` with its body replaced by the too-large notice, and the notice's size."""
    payload, text = _too_large_notice(inv, limit, observed)
    body = _dumps(payload) if kind == "openapi" else text
    if utf8_len(body) > limit:  # a tiny limit: drop the hint rather than exceed it further
        payload, text = _too_large_notice(inv, limit, observed, minimal=True)
        body = _dumps(payload) if kind == "openapi" else text
    return _with_body(response, kind, body, "REPROMPT" if kind == "function" else None), utf8_len(body)


def _too_large(
    inv: _Invocation,
    policy: WorkflowPolicy,
    ts_ms: int,
    selector: str | None,
    limit_rule: str,
    limit: int | None,
    before: int,
    after: int,
    stats: TrimStats,
) -> ViolationRecord:
    return ViolationRecord(
        ts_ms=ts_ms,
        workflow=inv.workflow,
        session_id=inv.session_id,
        request_id=inv.request_id,
        kind="ResponseTooLarge",
        rule=limit_rule,
        limit=str(limit),
        observed=str(after),
        enforced=not policy.shadow,
        detail={
            "action": inv.action,
            "selector": selector,
            "bytes_before": before,
            "bytes_after_trim": after,
            "fields_dropped": stats.fields_dropped,
            "items_dropped": stats.items_dropped,
            "strings_truncated": stats.strings_truncated,
            "agent_id": inv.agent_id,
        },
    )


def _with_body_slots(response: Mapping[str, Any], kind: str, texts: list[str]) -> dict[str, Any]:
    """A copy of ``response`` with each string body replaced, in ``_body_slots`` order."""
    out = dict(response)
    inner = dict(out["response"])
    if kind == "openapi":
        container = inner["responseBody"] = dict(inner["responseBody"])
    else:
        function_response = inner["functionResponse"] = dict(inner["functionResponse"])
        container = function_response["responseBody"] = dict(function_response["responseBody"])
    remaining = iter(texts)
    for content_type, holder in list(container.items()):
        if isinstance(holder, dict) and isinstance(holder.get("body"), str):
            container[content_type] = {**holder, "body": next(remaining)}
    out["response"] = inner
    return out


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _load(policies: PolicySet | str | os.PathLike[str] | None) -> PolicySet:
    if isinstance(policies, PolicySet):
        return policies
    if policies is None:
        configured = os.environ.get("COSTGUARD_POLICIES", "").strip()
        if not configured:
            logger.info("costguard action guard: no policies given and $COSTGUARD_POLICIES unset: no limits apply")
            return PolicySet.empty()
        return load_policies(configured)
    if isinstance(policies, str | os.PathLike):
        return load_policies(Path(os.fspath(policies)))
    raise PolicyError(f"policies must be a PolicySet or a path, not {type(policies).__name__}")


def action_guard(
    policies: PolicySet | str | os.PathLike[str] | Handler | None = None,
    *,
    workflow: str | None = None,
    ledger: str | Ledger | None = None,
    metrics: MetricsLike | None = None,
    clock: Callable[[], float] | None = None,
    user_id_key: str | bytes | None = None,
    timer: Callable[[], float] | None = None,
) -> Any:
    """Decorate an action group Lambda handler ``handler(event, context) -> response``.

    ``policies``: a :class:`~costguard.policy.PolicySet` or a policy file/directory, loaded once,
    now (``None``: ``$COSTGUARD_POLICIES``, else no limits). ``workflow``: the workflow whose
    policy applies (else the ``costguard_workflow`` session attribute, ``$COSTGUARD_WORKFLOW``,
    ``default``). ``ledger``: a URL or a :class:`~costguard.ledger.Ledger`, opened on the first
    invocation (``None``: ``$COSTGUARD_LEDGER`` or the default SQLite file). ``metrics``: an
    object with ``add(name, value, unit, *, workflow, model_id=None)``. ``clock``: seconds since
    the epoch (tests). ``user_id_key``: HMAC key for user ids in idempotency keys (else
    ``$COSTGUARD_USER_KEY``). ``timer``: the monotonic seconds the invocation's billed duration is
    measured with (tests; default ``time.perf_counter``). The wrapped function exposes its
    :class:`ActionGuard` as ``.guard``.

    ``@action_guard`` without arguments works too (policies from ``$COSTGUARD_POLICIES``).
    """
    if callable(policies) and not isinstance(policies, PolicySet):
        return action_guard(workflow=workflow, ledger=ledger, metrics=metrics, clock=clock,
                            user_id_key=user_id_key, timer=timer)(policies)
    policy_set = _load(policies)  # type: ignore[arg-type]

    def decorate(handler: Handler) -> Handler:
        guard = ActionGuard(
            handler,
            policy_set,
            workflow=workflow,
            ledger=ledger,
            metrics=metrics,
            clock=clock or time.time,
            user_id_key=user_id_key,
            timer=timer or time.perf_counter,
        )

        @functools.wraps(handler)
        def guarded(event: Any, context: Any) -> Any:
            return guard(event, context)

        guarded.guard = guard  # type: ignore[attr-defined]
        return guarded

    return decorate


class _DecoratorModule(types.ModuleType):
    """Lets ``@costguard.action_guard(...)`` work as well as ``from costguard.action_guard import
    action_guard``: the module and the decorator share a name, and once the submodule is imported
    Python binds ``costguard.action_guard`` to the module, so the module itself must be callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return action_guard(*args, **kwargs)


sys.modules[__name__].__class__ = _DecoratorModule
