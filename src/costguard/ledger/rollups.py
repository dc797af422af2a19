"""Rollups: what a batch of request segments adds to the per-day summaries reports read.

Pure logic, no storage: :func:`deltas_of` folds a sequence of
:class:`~costguard.usage.RequestSegment` into counter deltas keyed by rollup key, one entry per
key however many segments touch it (DynamoDB forbids two operations on one item in one
transaction, and SQLite does one upsert per key instead of one per call). Each backend applies
the deltas in the same transaction as the rows they summarise (``sqlite_rollups``,
``dynamodb_rollups``), so a rollup is never ahead of or behind its rows.

Two families, both keyed by the UTC day number (``ts_ms // 86_400_000``) and workflow:

* **call rollups** ``(dimension, day, workflow, key, variant)`` over model calls, by the call's
  time: dimension ``model`` (key: base model id), ``agent`` (key: the collaborator, else the
  invoked agent id, else ``""``) and ``price`` (key: base model id, variant: the price key label,
  ``""`` when none was recorded). Counters: :data:`CALL_COUNTERS`. ``requests`` counts a request
  once per key, on the day of its first call with that key.
* **request rollups** ``(day, workflow, user, session)`` over requests, by the request's start
  day (a continuation adds to its request's start day, as the request row does), and over
  violations, by the violation's day. Counters: :data:`REQUEST_COUNTERS`. ``user`` and
  ``session`` are ``None`` when unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from costguard.usage import RequestSegment, ViolationRecord

DAY_MS = 86_400_000
#: Joins a base model id and a price key label into one key (the label may be empty); char(31)
#: in SQL.
PRICE_KEY_SEPARATOR = "\x1f"
CALL_DIMENSIONS = ("model", "agent", "price")
CALL_COUNTERS = (
    "requests",
    "model_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "unpriced_calls",
)
REQUEST_COUNTERS = (
    "requests",
    "model_calls",
    "tool_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "tool_response_bytes",
    "violations",
    "shadow_violations",
)

CallKey = tuple[str, int, str, str, str]  # dimension, day, workflow, key, variant
RequestKey = tuple[int, str, str | None, str | None]  # day, workflow, user, session
Seen = tuple[str, str, str]  # dimension, key, variant


def day_number(ts_ms: int) -> int:
    return ts_ms // DAY_MS


@dataclass(slots=True)
class Prior:
    """What the ledger already holds of a request: whether its row exists, the start time and
    user its row keeps (a continuation adds to its request's start day, as the row does), and the
    call keys (:data:`Seen`) it already counted the request under."""

    known: bool
    started_ms: int | None = None
    user_id: str | None = None
    seen: set[Seen] = field(default_factory=set)


@dataclass(slots=True)
class RollupDeltas:
    calls: dict[CallKey, list[int]] = field(default_factory=dict)
    requests: dict[RequestKey, list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.calls or self.requests)


def _first_segment_prior(segment: RequestSegment) -> Prior:
    """Without the ledger's word: a first segment's running totals are its delta."""
    return Prior(known=segment.totals != segment.delta)


def agent_label(agent: str | None, invoked_agent_id: str | None) -> str:
    """A call made by the invoked agent itself names no collaborator: it goes under the agent id
    the request was made to (``""`` when there is none)."""
    if agent is not None:
        return agent
    return invoked_agent_id or ""


def deltas_of(
    segments: Sequence[RequestSegment],
    prior: Callable[[RequestSegment], Prior] | None = None,
) -> RollupDeltas:
    """The rollup deltas of ``segments`` (in write order).

    ``prior(segment)`` tells what the ledger already holds of the segment's request; it is asked
    once per request (segments of one request later in the batch see the earlier ones). Without
    it a segment is new when its totals equal its delta and no key was counted before: exact for
    every request written in one segment, an over-count of ``requests`` per key for a
    continuation that reuses a model.
    """
    out = RollupDeltas()
    known: dict[str, Prior] = {}
    for segment in segments:
        state = known.get(segment.request_id)
        if state is None:
            state = (prior or _first_segment_prior)(segment)
            known[segment.request_id] = state
        if state.started_ms is None:
            state.started_ms, state.user_id = segment.started_ms, segment.user_id
        _add_segment(out, segment, state)
        state.known = True
    return _without_zeros(out)


def _add_segment(out: RollupDeltas, segment: RequestSegment, state: Prior) -> None:
    d = segment.delta
    assert state.started_ms is not None
    row = _request_row(out, day_number(state.started_ms), segment.workflow, state.user_id, segment.session_id)
    for i, value in enumerate(
        (
            0 if state.known else 1,
            d.model_calls,
            d.tool_calls,
            d.input_tokens,
            d.output_tokens,
            d.cache_read_tokens,
            d.cache_write_tokens,
            d.cost_nanos,
            d.tool_response_bytes,
        )
    ):
        row[i] += value
    add_violations(out, segment.violations, lambda _request_id: state.user_id)
    # Sum the calls per distinct (day, workflow, model, agent, price key) first: a request's
    # calls share a handful of those, and each is then added to its three dimensions once.
    combos: dict[tuple[int, str, str, str | None, str | None], list[int]] = {}
    for m in segment.model_calls:
        combo = (day_number(m.ts_ms), m.workflow, m.base_model_id, m.agent, m.price_key)
        sums = combos.get(combo)
        if sums is None:
            sums = combos[combo] = [0] * (len(CALL_COUNTERS) - 1)
        sums[0] += 1
        sums[1] += m.input_tokens
        sums[2] += m.output_tokens
        sums[3] += m.cache_read_tokens
        sums[4] += m.cache_write_tokens
        sums[5] += m.cost_nanos
        sums[6] += 0 if m.priced else 1
    for (day, workflow, model, agent, price_key), sums in combos.items():
        for dimension, key, variant in (
            ("model", model, ""),
            ("agent", agent_label(agent, segment.agent_id), ""),
            ("price", model, price_key or ""),
        ):
            totals = out.calls.get((dimension, day, workflow, key, variant))
            if totals is None:
                totals = out.calls[(dimension, day, workflow, key, variant)] = [0] * len(CALL_COUNTERS)
            seen = (dimension, key, variant)
            if seen not in state.seen:
                state.seen.add(seen)
                totals[0] += 1  # the request, once per key
            for i, value in enumerate(sums, 1):
                totals[i] += value


def _request_row(out: RollupDeltas, day: int, workflow: str, user: str | None, session: str | None) -> list[int]:
    key = (day, workflow, user, session)
    row = out.requests.get(key)
    if row is None:
        row = out.requests[key] = [0] * len(REQUEST_COUNTERS)
    return row


def add_violations(
    out: RollupDeltas, violations: Iterable[ViolationRecord], user_of: Callable[[str], str | None]
) -> RollupDeltas:
    """Count violations by their day, workflow, session and the user of their request
    (``user_of(request_id)``; None for a violation with no request)."""
    for v in violations:
        user = user_of(v.request_id) if v.request_id is not None else None
        row = _request_row(out, day_number(v.ts_ms), v.workflow, user, v.session_id)
        row[9 if v.enforced else 10] += 1
    return out


def _without_zeros(out: RollupDeltas) -> RollupDeltas:
    """Keys whose counters are all zero write nothing (no empty rollup rows)."""
    out.calls = {k: v for k, v in out.calls.items() if any(v)}
    out.requests = {k: v for k, v in out.requests.items() if any(v)}
    return out
