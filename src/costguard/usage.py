"""Usage records: what the meter hands the ledger and what the ledger hands back.

Money is carried as integer nano-dollars (``*_nanos``): exact to 1e-9 USD, cheap to add on the
hot path and to sum in SQL. Every Bedrock on-demand price is a multiple of 1e-9 USD per token
or close to it; a per-call rounding to the nano-dollar (half-even) is the only rounding anywhere.
Public fields expose :class:`~decimal.Decimal` dollars.

Nothing here holds prompt text, model output, rationale or tool output: only counts, sizes,
ids and hashes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal(1).scaleb(-9)


@functools.lru_cache(maxsize=1024)
def usd_to_nanos(amount: Decimal | int | str) -> int:
    """Dollars to integer nano-dollars, rounding half-even at the ninth decimal.

    Memoised: the meter converts the same few policy caps on every model call.
    """
    return int((Decimal(amount) * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def nanos_to_usd(nanos: int) -> Decimal:
    """Integer nano-dollars to exact Decimal dollars (no float on the way)."""
    return (Decimal(nanos) * _NANO).normalize() if nanos else Decimal("0")


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def day_key(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d")


def month_key(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m")


@dataclass(slots=True)
class ModelCallRecord:
    """One model invocation inside a request (an agent step, or one Converse/InvokeModel call)."""

    request_id: str
    workflow: str
    session_id: str
    ts_ms: int
    model_id: str
    base_model_id: str
    step_type: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_nanos: int
    priced: bool
    latency_ms: int | None = None
    agent: str | None = None
    user_id: str | None = None
    #: The price key the call was priced with (:meth:`costguard.pricing.key.PriceKey.label`).
    price_key: str | None = None
    #: Comma-separated price flags (``unpriced``, ``region_assumed``, ``estimated``...).
    flags: str = ""


@dataclass(slots=True)
class ToolCallRecord:
    """One tool invocation: action group, knowledge base, code interpreter or collaborator."""

    request_id: str
    workflow: str
    session_id: str
    ts_ms: int
    kind: str
    name: str | None
    response_bytes: int | None
    latency_ms: int | None = None
    agent: str | None = None


@dataclass(slots=True)
class ViolationRecord:
    """A crossed limit, enforced (the call was stopped) or shadow (it was only recorded)."""

    ts_ms: int
    workflow: str
    session_id: str | None
    request_id: str | None
    kind: str
    rule: str
    limit: str
    observed: str
    enforced: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": datetime.fromtimestamp(self.ts_ms / 1000, UTC).isoformat(),
            "workflow": self.workflow,
            "session_id": self.session_id,
            "request_id": self.request_id,
            "error": self.kind,
            "rule": self.rule,
            "limit": self.limit,
            "observed": self.observed,
            "enforced": self.enforced,
            "detail": self.detail,
        }


@dataclass(slots=True)
class Totals:
    """Additive counters shared by requests and sessions."""

    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nanos: int = 0
    tool_response_bytes: int = 0
    max_tool_response_bytes: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def copy(self) -> Totals:
        return Totals(
            self.model_calls,
            self.tool_calls,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cost_nanos,
            self.tool_response_bytes,
            self.max_tool_response_bytes,
        )

    def add(self, delta: Totals) -> None:
        """Add a segment's ``delta`` in place (the largest response is a max, not a sum)."""
        self.model_calls += delta.model_calls
        self.tool_calls += delta.tool_calls
        self.input_tokens += delta.input_tokens
        self.output_tokens += delta.output_tokens
        self.cache_read_tokens += delta.cache_read_tokens
        self.cache_write_tokens += delta.cache_write_tokens
        self.cost_nanos += delta.cost_nanos
        self.tool_response_bytes += delta.tool_response_bytes
        self.max_tool_response_bytes = max(self.max_tool_response_bytes, delta.max_tool_response_bytes)

    def minus(self, earlier: Totals) -> Totals:
        """The delta since ``earlier``; the max of response sizes is carried, not subtracted."""
        return Totals(
            self.model_calls - earlier.model_calls,
            self.tool_calls - earlier.tool_calls,
            self.input_tokens - earlier.input_tokens,
            self.output_tokens - earlier.output_tokens,
            self.cache_read_tokens - earlier.cache_read_tokens,
            self.cache_write_tokens - earlier.cache_write_tokens,
            self.cost_nanos - earlier.cost_nanos,
            self.tool_response_bytes - earlier.tool_response_bytes,
            self.max_tool_response_bytes,
        )


@dataclass(slots=True)
class RequestSegment:
    """What one stream of one request produced, written to the ledger in one transaction.

    A request continued through return-control is written as several segments: ``totals`` are
    the request's running totals, ``delta`` what this segment added (sessions and budgets add
    the delta; the request row takes the totals).
    """

    request_id: str
    workflow: str
    session_id: str
    user_id: str | None
    operation: str
    agent_id: str | None
    agent_alias_id: str | None
    started_ms: int
    ended_ms: int
    status: str
    totals: Totals
    delta: Totals
    latency_ms: int
    model_latency_ms: int
    tool_latency_ms: int
    unknown_events: int
    unpriced_calls: int
    return_control_id: str | None
    model_calls: list[ModelCallRecord]
    tool_calls: list[ToolCallRecord]
    violations: list[ViolationRecord]
    reservation: Reservation | None = None
    #: A checkpoint of a request still running: settle what was spent against the reservation and
    #: keep (and renew) the rest of the hold, instead of releasing it.
    keep_reservation: bool = False
    #: Milliseconds from the request's start to its first model output (a chunk, a streamed
    #: delta or a model invocation's output); None when no output came.
    ttft_ms: int | None = None
    #: The spend settled against a process's budget slice (batched writes), instead of a
    #: per-request ``reservation``.
    lease_settle: LeaseSettle | None = None
    #: The request was taken over from an earlier segment (a return-control continuation), so
    #: the ledger already holds it, or may: it is never counted as a new request of its session.
    resumed: bool = False
    #: How many segments this one stands for (a batch merges a request's segments into one).
    parts: int = 1

    @property
    def is_first(self) -> bool:
        """Whether this segment starts its request (counted as a new request of its session)."""
        return not self.resumed and self.totals == self.delta


def merge_segments(segments: Sequence[RequestSegment]) -> RequestSegment:
    """Consecutive segments of one request as one (deltas and timings summed, rows joined)."""
    first, last = segments[0], segments[-1]
    if len(segments) == 1:
        return first
    delta = Totals()
    for segment in segments:
        delta.add(segment.delta)
    return RequestSegment(
        request_id=first.request_id,
        workflow=first.workflow,
        session_id=first.session_id,
        user_id=first.user_id,
        operation=first.operation,
        agent_id=first.agent_id,
        agent_alias_id=first.agent_alias_id,
        started_ms=first.started_ms,
        ended_ms=last.ended_ms,
        status=last.status,
        totals=last.totals,
        delta=delta,
        latency_ms=sum(s.latency_ms for s in segments),
        model_latency_ms=sum(s.model_latency_ms for s in segments),
        tool_latency_ms=sum(s.tool_latency_ms for s in segments),
        unknown_events=sum(s.unknown_events for s in segments),
        unpriced_calls=sum(s.unpriced_calls for s in segments),
        return_control_id=last.return_control_id,
        model_calls=[m for s in segments for m in s.model_calls],
        tool_calls=[c for s in segments for c in s.tool_calls],
        violations=[v for s in segments for v in s.violations],
        ttft_ms=next((s.ttft_ms for s in segments if s.ttft_ms is not None), None),
        resumed=first.resumed,
        parts=sum(s.parts for s in segments),
    )


def merge_by_request(segments: Sequence[RequestSegment]) -> list[tuple[RequestSegment, list[RequestSegment]]]:
    """Segments grouped by request (in order of first appearance), each group merged; the
    originals are kept for their settlements (a request's segments may settle different leases)."""
    groups: dict[str, list[RequestSegment]] = {}
    for segment in segments:
        groups.setdefault(segment.request_id, []).append(segment)
    return [(merge_segments(members), members) for members in groups.values()]


@dataclass(slots=True)
class LeaseSettle:
    """Spend settled against a budget slice's lease (see ``costguard.meter.slices``).

    ``spent_nanos`` is added to every period's ``spent``; ``release_nanos`` (at most what the
    lease still holds) moves from ``reserved`` and out of the lease. A lease already reclaimed
    releases nothing: its hold went back when it was reclaimed, and only the spend is counted.
    """

    workflow: str
    periods: tuple[str, ...]
    lease_id: str | None
    spent_nanos: int
    release_nanos: int


@dataclass(frozen=True, slots=True)
class PeriodLimit:
    """A budget period counter key and its limit (``None`` = counted, not limited)."""

    period: str  # "day:2026-11-22" or "month:2026-11"
    limit_nanos: int | None


@dataclass(slots=True)
class Reservation:
    """Money held against a workflow's period counters until the request settles.

    A hold with an amount is a lease (``lease_id``): it expires at ``expires_at_ms`` unless
    renewed, and an expired lease is reclaimed by the next reservation on its workflow (or by the
    reconcile job's sweep), so a process killed mid-call cannot keep its hold for good.
    """

    workflow: str
    periods: tuple[PeriodLimit, ...]
    amount_nanos: int
    lease_id: str | None = None
    owner: str = ""
    expires_at_ms: int = 0
    ttl_ms: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """A budget hold as the ledger keeps it (``budget status`` lists them, live and expired)."""

    lease_id: str
    workflow: str
    periods: tuple[str, ...]
    amount_nanos: int
    owner: str
    expires_at_ms: int

    def expired(self, now_ms: int) -> bool:
        return self.expires_at_ms <= now_ms


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    reservation: Reservation | None = None
    failed_period: str | None = None
    limit_nanos: int | None = None
    committed_nanos: int | None = None  # spent + reserved at the failed period


@dataclass(frozen=True, slots=True)
class KillSwitch:
    workflow: str
    reason: str
    set_by: str
    set_at_ms: int
    expires_at_ms: int | None


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    workflow: str
    period: str
    spent_nanos: int
    reserved_nanos: int

    @property
    def spent_usd(self) -> Decimal:
        return nanos_to_usd(self.spent_nanos)

    @property
    def reserved_usd(self) -> Decimal:
        return nanos_to_usd(self.reserved_nanos)


@dataclass(slots=True)
class SessionUsage:
    """Everything the ledger knows about one sessionId, across requests and processes."""

    session_id: str
    workflow: str | None
    requests: int
    model_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    max_tool_response_bytes: int
    tool_response_bytes: int = 0
    user_id: str | None = None
    violations: list[ViolationRecord] = field(default_factory=list)
    #: Latency roll-up of the session's requests (sums, milliseconds).
    latency_ms: int = 0
    model_latency_ms: int = 0
    tool_latency_ms: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def totals(self) -> Totals:
        return Totals(
            self.model_calls,
            self.tool_calls,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            usd_to_nanos(self.cost_usd),
            self.tool_response_bytes,
            self.max_tool_response_bytes,
        )

    @classmethod
    def empty(cls, session_id: str) -> SessionUsage:
        return cls(session_id, None, 0, 0, 0, 0, 0, 0, 0, Decimal("0"), 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "workflow": self.workflow,
            "user_id": self.user_id,
            "requests": self.requests,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": format(self.cost_usd, "f"),
            "tool_response_bytes": self.tool_response_bytes,
            "max_tool_response_bytes": self.max_tool_response_bytes,
            "latency_ms": self.latency_ms,
            "model_latency_ms": self.model_latency_ms,
            "tool_latency_ms": self.tool_latency_ms,
            "violations": [v.to_dict() for v in self.violations],
        }


@dataclass(slots=True)
class ActionRecord:
    """One action group invocation seen by ``action_guard``: sizes and what the trim removed.

    ``outcome`` is ``passed`` (under the limit, untouched), ``trimmed`` (the trim spec shrank it
    under the limit), ``replaced`` (still too large: the agent got a structured notice instead),
    ``replayed`` (an idempotent retry answered from the first run) or ``error``.
    """

    ts_ms: int
    workflow: str
    action: str  # "actionGroup apiPath VERB" or "actionGroup function"
    session_id: str | None
    request_id: str | None
    bytes_before: int
    bytes_after: int
    fields_dropped: int
    items_dropped: int
    strings_truncated: int
    outcome: str
    latency_ms: int | None = None
    agent_id: str | None = None
    #: What the invocation cost in Lambda time and requests (``costguard.action_cost``): counted
    #: in the session's cost and the workflow's budget counters. 0 outside Lambda.
    cost_nanos: int = 0
    billed_ms: int | None = None
    memory_mb: int | None = None
    architecture: str | None = None

    @property
    def cost_usd(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    def budget_periods(self) -> tuple[str, str]:
        """The budget counter periods its cost lands in (as the meter names them)."""
        return "day:" + day_key(self.ts_ms), "month:" + month_key(self.ts_ms)


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The ledger's memory of one idempotent action run: never the response itself."""

    key: str
    status: str  # "in_progress" | "completed"
    claimed_at_ms: int
    expires_at_ms: int
    response_sha256: str | None = None
    response_bytes: int | None = None
    completed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AlertKey:
    """An alert claimed for (workflow, kind, threshold, period): the reconciler's dedupe key.

    ``state`` is ``claimed`` (a run is publishing it, until ``lease_until_ms``) or ``sent``.
    """

    key: str
    ts_ms: int
    detail: dict[str, Any]
    state: str = "sent"
    lease_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """Metered usage of one workflow on one model on one UTC day: the reconciler's ledger side."""

    day: str  # YYYY-MM-DD
    workflow: str
    base_model_id: str
    model_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_nanos: int
    unpriced_calls: int = 0
    #: The price key label the calls were priced with (``Ledger.daily_usage_by_price_key``);
    #: ``""`` for calls written before price keys were kept, None in ``daily_usage``.
    price_key: str | None = None

    @property
    def cost_usd(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)
