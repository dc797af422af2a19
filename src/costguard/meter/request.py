"""One request's running counters, the checks made on every step, and its settlement."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costguard.errors import (
    BudgetExceeded,
    CostCapExceeded,
    LedgerError,
    LoopCapExceeded,
    ModelNotAllowed,
    PolicyViolation,
    ResponseTooLarge,
    TokenCapExceeded,
    ToolCapExceeded,
    WorkflowBlocked,
)
from costguard.meter.loops import RepeatCounter, converse_tool_uses
from costguard.meter.pinning import SessionPin, known_pins, pinned_identity
from costguard.meter.slices import slice_cap
from costguard.metrics import MetricsSink, record_segment, record_throttle, record_violation
from costguard.pricing import is_prompt_router
from costguard.trace import AnswerChunk, ModelCall, ModelCallStarted, ReturnControl, ToolCall, ToolResult, TraceSink
from costguard.usage import (
    ModelCallRecord,
    PeriodLimit,
    RequestSegment,
    Reservation,
    ReserveResult,
    ToolCallRecord,
    Totals,
    ViolationRecord,
    nanos_to_usd,
    usd_to_nanos,
)

if TYPE_CHECKING:
    from costguard.meter.guard import Guard
    from costguard.meter.slices import Slice
    from costguard.policy import Limits, WorkflowPolicy
    from costguard.pricing.catalog import RateCard

logger = logging.getLogger("costguard")

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True, slots=True)
class Binding:
    """What a wrapped client attributes its calls to."""

    workflow: str
    user_id: str | None
    session_id: str | None
    region: str = "us-east-1"


@dataclass(slots=True)
class GuardrailUsage:
    """Guardrail policy units processed (ApplyGuardrail, or a Converse guardrail assessment)."""

    units: Mapping[str, int]
    flags: frozenset[str] = frozenset()


class RequestMeter(TraceSink):
    """One request's running counters and the checks made on every step.

    It is the trace normaliser's sink: an agent stream's steps arrive as method calls, with no
    step object built per event; single-response operations hand it :data:`Step` objects
    (:meth:`on_step`).
    """

    def __init__(
        self,
        guard: Guard,
        policy: WorkflowPolicy,
        binding: Binding,
        operation: str,
        request_id: str,
        session_id: str,
        started_ms: int,
        previous: Totals,
        session_base: Totals,
        agent_id: str | None,
        agent_alias_id: str | None,
        *,
        resumed: bool = False,
    ) -> None:
        self.guard = guard
        self.resumed = resumed
        #: Batched mode: the budget slice this request holds ``held`` nanos of.
        self.slice: Slice | None = None
        self.held = 0
        self.policy = policy
        self.binding = binding
        self.region = binding.region
        self.operation = operation
        self.request_id = request_id
        self.session_id = session_id
        self.started_ms = started_ms
        #: Durations (latency, time to first token, checkpoint intervals) are measured on the
        #: guard's duration clock: ``time.monotonic``, or a replay's recorded clock.
        self._elapsed = guard.duration_clock
        self.started_monotonic = self._elapsed()
        self.agent_id = agent_id
        self.agent_alias_id = agent_alias_id
        self.totals = previous.copy()
        #: Where this meter took the request over (a continuation's earlier totals): caps count from it.
        self.origin = previous  # (never changed in place, as segment_start: both shared)
        #: Where the segment being written started: moves at each checkpoint.
        self.segment_start = previous
        self.session_base = session_base
        self.per_request: Limits = policy.per_request
        self.per_session: Limits = policy.per_session
        # Caps in nano-dollars, converted once: the checks run on every model call.
        self._req_cost_cap = _nanos_or_none(self.per_request.max_cost_usd)
        self._ses_cost_cap = _nanos_or_none(self.per_session.max_cost_usd)
        self._req_calls_cap = self.per_request.max_model_calls
        self._ses_calls_cap = self.per_session.max_model_calls
        self._token_or_cost_caps = (
            self.per_request.max_tokens is not None or self.per_session.max_tokens is not None
            or self._req_cost_cap is not None or self._ses_cost_cap is not None
        )
        #: Models this request has checked already (allow-list, pin, unpriced): their cards.
        self._checked: dict[str, RateCard] = {}
        self.shadow = policy.mode == "shadow"
        self.model_rows: list[ModelCallRecord] = []
        self.tool_rows: list[ToolCallRecord] = []
        self.violation_rows: list[ViolationRecord] = []
        self.violated: set[str] = set()
        self.model_latency_ms = 0
        self.tool_latency_ms = 0
        self.unknown_events = 0
        self.unpriced_calls = 0
        self.calls_started = 0
        self.return_control_id: str | None = None
        self.reservation: Reservation | None = None
        self.periods: tuple[PeriodLimit, ...] = ()
        self.requested_model: str | None = None
        self.finished = False
        #: Set while a single response is settled: the call has happened, so a budget it overran
        #: is recorded (enforced: false), not raised.
        self.settling = False
        self.request_start_cost = previous.cost_nanos
        self.last_checkpoint = self.started_monotonic
        self.segment_started_monotonic = self.started_monotonic
        self._renew_at = 0.0
        self._refusal: tuple[str, int, int] | None = None
        self.first_output_monotonic: float | None = None
        self._repeats: RepeatCounter | None = None
        #: Whether tool calls are counted by their parameters (a repeat cap is set).
        self.counts_repeats = (
            policy.per_request.max_repeated_tool_calls is not None or policy.per_session.max_repeated_tool_calls is not None
        )
        self._pin: SessionPin | None = None

    # -- before the call ------------------------------------------------------------------------

    def check_before_call(self, model_id: str | None) -> None:
        guard, policy = self.guard, self.policy
        self.requested_model = model_id
        switch = guard.kill_switch(policy, self.binding.workflow)
        if switch is not None:
            self.violate(
                WorkflowBlocked,
                "kill_switch",
                "set",
                "blocked",
                reason=switch.reason,
                set_by=switch.set_by,
            )
        if model_id and not is_prompt_router(model_id):
            # A prompt router picks the model itself: its choice is checked when it is known.
            self.check_model(model_id)
        # A session that has reached a cap cannot make another call without crossing it.
        s, cap = self.session_base, self.per_session
        if cap.max_model_calls is not None and s.model_calls + 1 > cap.max_model_calls:
            self.violate(LoopCapExceeded, "per_session.max_model_calls", cap.max_model_calls, s.model_calls + 1)
        if cap.max_tokens is not None and s.tokens >= cap.max_tokens:
            self.violate(TokenCapExceeded, "per_session.max_tokens", cap.max_tokens, s.tokens)
        if cap.max_cost_usd is not None and s.cost_nanos >= usd_to_nanos(cap.max_cost_usd):
            self.violate(
                CostCapExceeded, "per_session.max_cost_usd", cap.max_cost_usd, _usd(s.cost_nanos)
            )
        if self.per_request.max_model_calls == 0:
            self.violate(LoopCapExceeded, "per_request.max_model_calls", 0, 1)
        self._reserve()

    def _reserve(self) -> None:
        self.periods = self.guard.period_limits(self.policy, self.started_ms)
        slices = self.guard.slices
        if all(p.limit_nanos is None for p in self.periods):
            # Nothing limits spend: it is counted when settled, without holding anything.
            if slices is None:
                self.reservation = Reservation(self.binding.workflow, self.periods, 0)
            return
        amount = self.guard.reservation_estimate(self.binding.workflow)
        if self._req_cost_cap is not None:
            amount = min(amount, self._req_cost_cap)
        if slices is not None:
            self._hold_from_slice(amount)
            return
        self.reservation = self._hold(None, amount)
        if self.reservation is None:
            # No room: the budget violation was recorded (shadow / alert) or raised; in the
            # non-enforcing case count spend without holding money.
            self.reservation = Reservation(self.binding.workflow, self.periods, 0)

    def _hold_from_slice(self, amount: int) -> None:
        guard = self.guard
        assert guard.slices is not None
        useful = guard.smallest_useful_hold(self.binding.workflow)
        # A first guess (nothing learned yet) never holds more than a slice may: a request that
        # costs more grows its hold as it spends.
        amount = max(useful, min(amount, slice_cap(self.periods)))
        self.slice = guard.slices.slice_for(self.binding.workflow, self.periods)
        grant = guard.slices.hold(self.slice, amount, useful, self._grow_lease)
        self.held = grant.amount
        if grant.refusal is not None and not grant.amount:
            r = grant.refusal
            self._budget_violation(r.failed_period or "", r.limit_nanos or 0, (r.committed_nanos or 0) + amount)

    def _grow_lease(self, lease: Reservation, amount: int) -> ReserveResult | None:
        ledger = self.guard.ledger
        return self.guard.ledger_call(  # type: ignore[no-any-return]
            self.policy,
            "budget reservation",
            lambda: ledger.extend_reservation(lease, amount, now_ms=self.guard.now_ms()),
            None,
        )

    def _check_slice_budget(self) -> None:
        s, slices = self.slice, self.guard.slices
        if s is None or slices is None or "budget" in self.violated:
            return
        spent = self.totals.cost_nanos - self.segment_start.cost_nanos
        shortfall = spent - self.held
        if shortfall <= 0:
            return
        grant = slices.grow(s, max(shortfall, self.guard.reserve_nanos, self.held), self._grow_lease)
        self.held += grant.amount
        if grant.refusal is not None and spent > self.held:
            r = grant.refusal
            self.violated.add("budget")
            self._budget_violation(r.failed_period or "", r.limit_nanos or 0, (r.committed_nanos or 0) + spent - self.held)

    def _hold(self, existing: Reservation | None, amount: int) -> Reservation | None:
        """Reserve ``amount``, or what room is left when less than that; None when none is."""
        guard = self.guard
        target = existing if existing is not None else Reservation(
            self.binding.workflow, self.periods, 0, None, guard.lease_owner, 0, guard.lease_ttl_ms
        )
        for _ in range(3):
            result = self._grow_lease(target, amount)
            if result is None:
                return existing  # ledger down and failing open: go on unreserved
            if result.ok:
                if result.reservation is not None:
                    self._renew_at = self._elapsed() + self.guard.lease_ttl_ms / 2000
                return result.reservation
            self._refusal = (result.failed_period or "", result.limit_nanos or 0, result.committed_nanos or 0)
            room = (result.limit_nanos or 0) - (result.committed_nanos or 0)
            if room <= 0 or room >= amount:
                break
            if existing is None and room < self.guard.smallest_useful_hold(self.binding.workflow):
                break
            amount = room
        self._budget_violation(result.failed_period or "", result.limit_nanos or 0, (result.committed_nanos or 0) + amount)
        return None

    def _budget_violation(self, period: str, limit_nanos: int, observed_nanos: int) -> None:
        rule = "budget.daily_usd" if period.startswith("day:") else "budget.monthly_usd"
        budget = self.policy.budget
        # A call that has already happened cannot be stopped: its overspend is recorded, not raised.
        enforce = (budget is None or budget.on_exhausted == "block") and not self.settling
        self.violate(
            BudgetExceeded,
            rule,
            _usd(limit_nanos),
            _usd(observed_nanos),
            enforce=enforce,
            period=period.split(":", 1)[-1],
        )

    def check_model(self, model_id: str) -> RateCard:
        """The allow-list and the ``unpriced`` policy, for ``model_id``; its standard rate card.

        Once per model per request: an agent loop calls the same model step after step.
        """
        checked = self._checked.get(model_id)
        if checked is not None:
            return checked
        card = self._check_model(model_id)
        self._checked[model_id] = card
        return card

    def _check_model(self, model_id: str) -> RateCard:
        card = self.guard.rate_card(model_id, self.region)
        models = self.policy.models
        if models.allow is not None and not models.allows(model_id, card.base_model_id):
            self.violate(ModelNotAllowed, "models.allow", list(models.allow), model_id, model=model_id)
        if models.pinned_per_session and model_id != UNKNOWN_MODEL:
            # A step whose model nobody knows must not pin the session to "unknown".
            self._check_pin(model_id, card)
        if not card.priced:
            unpriced = self.policy.unpriced
            if unpriced == "block":
                self.violate(ModelNotAllowed, "unpriced", "priced model", model_id, model=model_id)
            elif unpriced == "alert":
                self.violate(
                    ModelNotAllowed,
                    "unpriced",
                    "priced model",
                    model_id,
                    enforce=False,
                    model=model_id,
                    fallback_model=card.base_model_id,
                )
        return card

    def _check_pin(self, model_id: str, card: RateCard) -> None:
        if self._pin is None:
            ledger, session_id = self.guard.ledger, self.session_id
            self._pin = SessionPin(
                session_id,
                lambda model: self.guard.ledger_call(
                    self.policy,
                    "session model pin",
                    lambda: ledger.pin_session_model(session_id, model, self.guard.now_ms()),
                    None,
                ),
                known_pins(ledger),
            )
        pinned = self._pin.violates(pinned_identity(model_id, card))
        if pinned is not None:
            self.violate(ModelNotAllowed, "models.pin", pinned, model_id, model=model_id)

    def check_converse_repeats(self, messages: Any) -> None:
        """Before a Converse request is sent: refuse one carrying a call repeated too often.

        Raises the violation after settling the (unsent) request, as a pre-call check does.
        """
        if self.per_request.max_repeated_tool_calls is None and self.per_session.max_repeated_tool_calls is None:
            return
        try:
            for name, key, new in converse_tool_uses(messages):
                self._count_repeat(name, key, new_to_session=new)
        except PolicyViolation:
            self.finish("blocked", write_usage=False)
            raise

    # -- per step -------------------------------------------------------------------------------

    def on_step(self, step: object) -> None:
        kind = type(step)
        if kind is ModelCall:
            c: ModelCall = step  # type: ignore[assignment]
            self.model_call(
                c.model_id, c.step_type, c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_write_tokens,
                c.latency_ms, c.trace_id, c.agent, c.flags, c.usage_missing,
                cache_write_1h_tokens=c.cache_write_1h_tokens, tier=c.tier, latency_optimized=c.latency_optimized,
                routed=c.routed,
            )
        elif kind is ModelCallStarted:
            self.model_started(step.model_id, step.step_type, step.trace_id, step.agent)  # type: ignore[attr-defined]
        elif kind is ToolCall:
            t: ToolCall = step  # type: ignore[assignment]
            self.tool_call(t.kind, t.name, t.trace_id, t.agent, t.call_hash)
        elif kind is ToolResult:
            r: ToolResult = step  # type: ignore[assignment]
            self.tool_result(r.kind, r.name, r.response_bytes, r.latency_ms, r.trace_id, r.agent, call_counted=r.call_counted)
        elif kind is ReturnControl:
            self.return_control(step.invocation_id, step.inputs)  # type: ignore[attr-defined]
        elif kind is GuardrailUsage:
            self._guardrail(step)  # type: ignore[arg-type]
        elif kind is AnswerChunk:
            self.answer_chunk(step.response_bytes)  # type: ignore[attr-defined]

    # -- the trace normaliser's sink ------------------------------------------------------------

    def answer_chunk(self, response_bytes: int) -> None:
        self.mark_output()

    def return_control(self, invocation_id: str | None, inputs: int) -> None:
        self.return_control_id = invocation_id

    def mark_output(self) -> None:
        """The request's first model output (a chunk, a streamed delta, a model's answer)."""
        if self.first_output_monotonic is None:
            self.first_output_monotonic = self._elapsed()

    def run_steps(self, steps: Iterable[object]) -> None:
        """Meter a single-response call's steps and settle the request (status ok or violation)."""
        status = "violation"
        self.settling = True
        try:
            for step in steps:
                self.on_step(step)
            status = "ok"
        finally:
            self.finish(status)

    def model_started(self, model_id: str | None, step_type: str, trace_id: str | None, agent: str | None) -> None:
        self.calls_started += 1
        if model_id:
            self.check_model(model_id)
        started = max(self.calls_started, self.totals.model_calls - self.origin.model_calls + 1)
        self._check_calls(self.origin.model_calls + started)

    def _check_calls(self, request_calls: int) -> None:
        cap = self._req_calls_cap
        if cap is not None and request_calls > cap:
            self.violate(LoopCapExceeded, "per_request.max_model_calls", cap, request_calls)
        cap = self._ses_calls_cap
        if cap is not None:
            session_calls = self.session_base.model_calls + request_calls - self.origin.model_calls
            if session_calls > cap:
                self.violate(LoopCapExceeded, "per_session.max_model_calls", cap, session_calls)

    def model_call(
        self,
        model_id: str | None,
        step_type: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        latency_ms: int | None,
        trace_id: str | None,
        agent: str | None,
        flags: frozenset[str],
        usage_missing: bool,
        *,
        cache_write_1h_tokens: int = 0,
        tier: str = "standard",
        latency_optimized: bool = False,
        routed: bool = False,
    ) -> None:
        """A model call's usage: priced, counted, recorded, and every cap it may cross checked."""
        self.mark_output()
        chosen = model_id
        if not model_id:
            model_id = self.policy.default_model or UNKNOWN_MODEL
        card = self.guard.rate_card(model_id, self.region, tier, latency_optimized)
        cw_1h = min(cache_write_1h_tokens, cache_write_tokens)
        cost_nanos, price_key, card_flags = card.cost_of(
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens - cw_1h, cw_1h
        )
        t = self.totals
        t.model_calls += 1
        t.input_tokens += input_tokens
        t.output_tokens += output_tokens
        t.cache_read_tokens += cache_read_tokens
        t.cache_write_tokens += cache_write_tokens
        t.cost_nanos += cost_nanos
        priced = card.priced
        if not priced:
            self.unpriced_calls += 1
        if latency_ms:
            self.model_latency_ms += latency_ms
        if flags:
            card_flags = card_flags | flags
        self._new_model_row(
            model_id, card.base_model_id, step_type, input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, cost_nanos, priced, latency_ms, agent, price_key, card_flags,
        )
        if not chosen or routed:
            # The call has happened (and is recorded above): a model nobody chose before it was
            # sent (a default, or a prompt router's pick) is checked now, to stop what follows.
            self.check_model(model_id)
        self._check_calls(t.model_calls)
        self._check_tokens_and_cost()
        self._check_budget()
        self._keep_alive()

    def _guardrail(self, step: GuardrailUsage) -> None:
        """Guardrail text units cost money of their own: counted in cost, not as a model call."""
        priced = self.guard.pricing.guardrail_card(self.region).price(step.units)
        if not priced.cost_nanos:
            return
        self.totals.cost_nanos += priced.cost_nanos
        self._new_model_row(
            "guardrail", "guardrail", "GUARDRAIL", 0, 0, 0, 0, priced.cost_nanos, priced.priced, None, None,
            priced.key.label(), priced.flags | step.flags,
        )
        self._check_tokens_and_cost()
        self._check_budget()

    def _new_model_row(
        self,
        model_id: str,
        base_model_id: str,
        step_type: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        cost_nanos: int,
        priced: bool,
        latency_ms: int | None,
        agent: str | None,
        price_key: str,
        flags: frozenset[str],
    ) -> None:
        self.model_rows.append(
            ModelCallRecord(
                self.request_id, self.binding.workflow, self.session_id, self.guard.now_ms(), model_id, base_model_id,
                step_type, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, priced,
                latency_ms, agent, self.binding.user_id, price_key, _flags_text(flags) if flags else "",
            )
        )

    def _check_tokens_and_cost(self) -> None:
        if not self._token_or_cost_caps:
            return
        t, start, base = self.totals, self.origin, self.session_base
        req, ses = self.per_request, self.per_session
        if req.max_tokens is not None and t.tokens > req.max_tokens:
            self.violate(TokenCapExceeded, "per_request.max_tokens", req.max_tokens, t.tokens)
        if ses.max_tokens is not None:
            tokens = base.tokens + t.tokens - start.tokens
            if tokens > ses.max_tokens:
                self.violate(TokenCapExceeded, "per_session.max_tokens", ses.max_tokens, tokens)
        if self._req_cost_cap is not None and t.cost_nanos > self._req_cost_cap:
            self.violate(CostCapExceeded, "per_request.max_cost_usd", req.max_cost_usd, _usd(t.cost_nanos))
        if self._ses_cost_cap is not None:
            cost = base.cost_nanos + t.cost_nanos - start.cost_nanos
            if cost > self._ses_cost_cap:
                self.violate(CostCapExceeded, "per_session.max_cost_usd", ses.max_cost_usd, _usd(cost))

    def _check_budget(self) -> None:
        if self.slice is not None:
            self._check_slice_budget()
            return
        reservation = self.reservation
        if reservation is None or all(p.limit_nanos is None for p in reservation.periods):
            return
        spent = self.totals.cost_nanos - self.segment_start.cost_nanos
        shortfall = spent - reservation.amount_nanos
        if shortfall <= 0 or "budget" in self.violated:
            return
        # Grow the hold geometrically (at least doubling it) so a long loop costs a handful of
        # ledger writes, not one per step; the surplus goes back when the request settles.
        self._refusal = None
        held = self._hold(reservation, max(shortfall, self.guard.reserve_nanos, reservation.amount_nanos))
        if held is None:
            self.violated.add("budget")
        elif spent > held.amount_nanos and self._refusal is not None:
            # The budget had less room than what was spent: the request is past the limit. Never
            # recorded as ok: a BudgetExceeded (enforced: false once the call could not be stopped).
            period, limit, committed = self._refusal
            self.violated.add("budget")
            self._budget_violation(period, limit, committed + spent - held.amount_nanos)

    def tool_call(self, kind: str, name: str | None, trace_id: str | None, agent: str | None, call_hash: str | None) -> None:
        t = self.totals
        t.tool_calls += 1
        self._new_tool_row(kind, name, agent)
        cap = self.per_request.max_tool_calls
        if cap is not None and t.tool_calls > cap:
            self.violate(ToolCapExceeded, "per_request.max_tool_calls", cap, t.tool_calls, tool=name)
        cap = self.per_session.max_tool_calls
        if cap is not None:
            calls = self.session_base.tool_calls + t.tool_calls - self.origin.tool_calls
            if calls > cap:
                self.violate(ToolCapExceeded, "per_session.max_tool_calls", cap, calls, tool=name)
        if call_hash is not None:
            self._count_repeat(name, call_hash)

    def _count_repeat(self, name: str | None, key: str, *, new_to_session: bool = True) -> None:
        req = self.per_request.max_repeated_tool_calls
        ses = self.per_session.max_repeated_tool_calls
        if req is None and ses is None:
            return
        if self._repeats is None:
            before: dict[str, int] = {}
            if ses is not None:
                before = self.guard.session_repeats(self.policy, self.session_id)
            self._repeats = RepeatCounter(before)
        in_request, in_session = self._repeats.count(key, new_to_session=new_to_session)
        if req is not None and in_request > req:
            self.violate(LoopCapExceeded, "per_request.max_repeated_tool_calls", req, in_request, tool=name)
        if ses is not None and new_to_session and in_session > ses:
            self.violate(LoopCapExceeded, "per_session.max_repeated_tool_calls", ses, in_session, tool=name)

    def tool_result(
        self,
        kind: str,
        name: str | None,
        response_bytes: int,
        latency_ms: int | None,
        trace_id: str | None,
        agent: str | None,
        call_counted: bool = False,
    ) -> None:
        size = response_bytes
        t = self.totals
        t.tool_response_bytes += size
        if size > t.max_tool_response_bytes:
            t.max_tool_response_bytes = size
        if latency_ms:
            self.tool_latency_ms += latency_ms
        row = self._pending_tool_row(kind, name)
        if row is None:
            # An observation whose invocationInput never came: still a tool response to count.
            if not call_counted:
                t.tool_calls += 1
            row = self._new_tool_row(kind, name, agent)
        row.response_bytes = size
        row.latency_ms = latency_ms
        cap = self.per_request.max_tool_response_bytes
        if cap is not None and size > cap:
            self.violate(ResponseTooLarge, "per_request.max_tool_response_bytes", cap, size, tool=name, tool_kind=kind)
        cap = self.per_session.max_tool_response_bytes
        if cap is not None and size > cap:
            self.violate(ResponseTooLarge, "per_session.max_tool_response_bytes", cap, size, tool=name, tool_kind=kind)

    def _new_tool_row(self, kind: str, name: str | None, agent: str | None) -> ToolCallRecord:
        row = ToolCallRecord(
            self.request_id, self.binding.workflow, self.session_id, self.guard.now_ms(), kind, name, None, None, agent,
        )
        self.tool_rows.append(row)
        return row

    def _pending_tool_row(self, kind: str, name: str | None) -> ToolCallRecord | None:
        for row in reversed(self.tool_rows):
            if row.response_bytes is None and row.kind == kind and (name is None or row.name == name):
                return row
        return None

    # -- long requests: lease renewal and checkpoints ----------------------------------------------

    def _keep_alive(self) -> None:
        """Renew the lease of a request that is still producing events; checkpoint its usage.

        A request that stops producing events (a stream abandoned unread, a hung process) stops
        renewing: its lease expires and its hold is reclaimed, which is the idle timeout.
        """
        now = self._elapsed()
        reservation = self.reservation  # (batched mode: the writer renews the slice's lease)
        if reservation is not None and reservation.lease_id is not None and now >= self._renew_at:
            self._renew_at = now + self.guard.lease_ttl_ms / 2000
            ledger = self.guard.ledger
            self.guard.ledger_call(
                self.policy, "renewing a budget lease", lambda: ledger.renew_lease(reservation, self.guard.now_ms()), None
            )
        if self.settling:
            return
        calls = self.totals.model_calls - self.segment_start.model_calls
        if calls >= self.guard.checkpoint_calls or (calls and now - self.last_checkpoint >= self.guard.checkpoint_s):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the usage so far as a segment of a request still running (status ``running``),
        keeping the unspent hold: a crash from here on loses at most one interval."""
        if self.finished:
            return
        segment = self._segment("running", self.guard.now_ms())
        self.last_checkpoint = self.segment_started_monotonic = self._elapsed()
        segment.keep_reservation = True
        if self.guard.writer is not None:
            self._submit(segment, final=False)
        else:
            self._write(lambda: self.guard.ledger.record(segment), "checkpointing usage", quiet=False)
        self.guard.publish_metrics(lambda sink: record_segment(sink, segment))
        self.segment_start = self.totals.copy()
        self.model_rows, self.tool_rows, self.violation_rows = [], [], []
        self.model_latency_ms = self.tool_latency_ms = self.unknown_events = self.unpriced_calls = 0

    # -- violations -----------------------------------------------------------------------------

    def violate(
        self,
        cls: type[PolicyViolation],
        rule: str,
        limit: Any,
        observed: Any,
        *,
        enforce: bool = True,
        **detail: Any,
    ) -> None:
        """Record a violation once per rule per request; raise it unless shadow or non-enforcing."""
        enforced = enforce and not self.shadow
        if rule in self.violated and not enforced:
            return
        self.violated.add(rule)
        violation = cls(
            rule=rule,
            limit=limit,
            observed=observed,
            workflow=self.binding.workflow,
            session_id=self.session_id,
            request_id=self.request_id,
            enforced=enforced,
            detail=detail,
        )
        self.violation_rows.append(
            ViolationRecord(
                self.guard.now_ms(),
                self.binding.workflow,
                self.session_id,
                self.request_id,
                violation.kind,
                rule,
                _text(limit),
                _text(observed),
                enforced,
                {k: _text(v) for k, v in detail.items()},
            )
        )
        if enforced:
            raise violation
        logger.warning("shadow violation: %s", violation.message)

    # -- the end --------------------------------------------------------------------------------

    def finish(self, status: str, *, write_usage: bool = True) -> None:
        """Write this segment (usage, violations, settlement) once; safe to call again."""
        if self.finished:
            return
        self.finished = True
        guard = self.guard
        if status == "ok" and self.return_control_id:
            status = "return_control"
            guard.remember_return_control(self.session_id, self.return_control_id, self)
        ended_ms = guard.now_ms()
        if status == "throttled":
            guard.publish_metrics(self._record_throttle)
        if not write_usage:
            try:
                self._finish_without_usage()
            finally:
                guard.publish_metrics(self._record_violations)
            return
        if status == "ok":
            guard.learn_cost(self.binding.workflow, self.totals.cost_nanos - self.request_start_cost)
        segment = self._segment(status, ended_ms)
        quiet = status not in ("ok", "return_control")
        try:
            if guard.writer is not None:
                self._submit(segment, final=True)
            else:
                self._write(lambda: guard.ledger.record(segment), "recording usage", quiet=quiet)
            self._write_repeats(quiet)
        finally:
            # Recorded or not (ledger down), the segment happened: its metrics are published.
            guard.publish_metrics(lambda sink: record_segment(sink, segment))

    def _submit(self, segment: RequestSegment, *, final: bool) -> None:
        """Batched mode: settle against the slice and hand the segment to the writer."""
        guard = self.guard
        assert guard.slices is not None and guard.writer is not None
        segment.reservation = None
        segment.lease_settle, self.held = guard.slices.settle(
            self.slice, self.binding.workflow, self.periods, self.held, segment.delta.cost_nanos, final=final
        )
        guard.writer.submit(segment, deny=self.policy.on_ledger_error == "deny")
        guard.note_session_usage(self.session_id, segment.delta)

    def _ttft_ms(self) -> int | None:
        first = self.first_output_monotonic
        return None if first is None else int((first - self.started_monotonic) * 1000)

    def _write_repeats(self, quiet: bool) -> None:
        """The session's repeat counters grow by this request's new calls (when capped per session)."""
        repeats = self._repeats
        if repeats is None or not repeats.added or self.per_session.max_repeated_tool_calls is None:
            return
        added, ledger, session_id = dict(repeats.added), self.guard.ledger, self.session_id
        repeats.added.clear()
        if self.guard.writer is not None:
            self.guard.note_repeats(session_id, added)
            self.guard.writer.submit_action(
                lambda: ledger.add_tool_repeats(session_id, added, self.guard.now_ms()), "counting tool repeats",
                deny=self.policy.on_ledger_error == "deny",
            )
            return
        self._write(
            lambda: ledger.add_tool_repeats(session_id, added, self.guard.now_ms()), "counting tool repeats", quiet=quiet
        )


    def _segment(self, status: str, ended_ms: int) -> RequestSegment:
        delta = self.totals.minus(self.segment_start)
        return RequestSegment(
            request_id=self.request_id,
            workflow=self.binding.workflow,
            session_id=self.session_id,
            user_id=self.binding.user_id,
            operation=self.operation,
            agent_id=self.agent_id,
            agent_alias_id=self.agent_alias_id,
            started_ms=self.started_ms,
            ended_ms=ended_ms,
            status=status,
            totals=self.totals.copy(),
            delta=delta,
            latency_ms=int((self._elapsed() - self.segment_started_monotonic) * 1000),
            model_latency_ms=self.model_latency_ms,
            tool_latency_ms=self.tool_latency_ms,
            unknown_events=self.unknown_events,
            unpriced_calls=self.unpriced_calls,
            return_control_id=self.return_control_id,
            model_calls=self.model_rows,
            tool_calls=self.tool_rows,
            violations=self.violation_rows,
            reservation=self.reservation,
            ttft_ms=self._ttft_ms(),
            resumed=self.resumed,
        )

    def _record_violations(self, sink: MetricsSink) -> None:
        for violation in self.violation_rows:
            record_violation(sink, violation)

    def _record_throttle(self, sink: MetricsSink) -> None:
        # The model is known for Converse/InvokeModel; an agent's throttle is the workflow's.
        model = self.requested_model
        base = self.guard.rate_card(model, self.region).base_model_id if model else None
        record_throttle(sink, self.binding.workflow, base)

    def _finish_without_usage(self) -> None:
        ledger, writer = self.guard.ledger, self.guard.writer
        if writer is not None and self.guard.slices is not None:
            self.guard.slices.give_back(self.slice, self.held)
            self.held = 0
            for violation in self.violation_rows:
                writer.submit_action(lambda v=violation: ledger.record_violation(v), "recording a violation")
            return
        if self.reservation is not None and self.reservation.amount_nanos:
            reservation = self.reservation
            self._write(lambda: ledger.release(reservation), "releasing a reservation", quiet=True)
        for violation in self.violation_rows:
            self._write(
                lambda v=violation: ledger.record_violation(v), "recording a violation", quiet=True
            )

    def _write(self, fn: Callable[[], None], what: str, *, quiet: bool) -> None:
        """A ledger write under ``on_ledger_error``; ``quiet`` while another error propagates."""
        try:
            self.guard.ledger_call(self.policy, what, fn, None)
        except LedgerError:
            if not quiet:
                raise
            # Under on_ledger_error: deny a failed write is an error, but not one that may hide
            # the violation or AWS error already on its way to the caller.
            logger.error("ledger write failed (%s) while another error was being raised", what)


def _nanos_or_none(usd: Decimal | None) -> int | None:
    return None if usd is None else usd_to_nanos(usd)


def _usd(nanos: int) -> Decimal:
    return nanos_to_usd(nanos)


def _text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


@functools.lru_cache(maxsize=256)
def _flags_text(flags: frozenset[str]) -> str:
    """A row's flags column: sorted, comma-separated (a process sees a handful of flag sets)."""
    return ",".join(sorted(flags))
