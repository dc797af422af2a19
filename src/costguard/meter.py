"""The meter: ``Guard`` wraps boto3 Bedrock clients, counts every step and enforces the policies.

``guard.wrap(client, workflow=...)`` returns a proxy with the client's own methods. For
``bedrock-agent-runtime`` it meters ``invoke_agent`` and ``invoke_inline_agent``; for
``bedrock-runtime`` ``converse``, ``converse_stream`` and ``invoke_model``. Everything else
passes straight through to the client.

Per request the meter checks the kill switch and the session's caps and reserves budget before
the call is sent, then follows the response event by event. A cap is checked on the event that
crosses it; in ``enforce`` mode the stream is closed, usage so far recorded and the matching
:class:`~costguard.errors.PolicyViolation` raised. In ``shadow`` mode the violation is recorded
with ``enforced: false`` and nothing is blocked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from costguard.errors import (
    BudgetExceeded,
    CostCapExceeded,
    LedgerError,
    LoopCapExceeded,
    ModelNotAllowed,
    PolicyError,
    PolicyViolation,
    PricingError,
    ResponseTooLarge,
    TokenCapExceeded,
    ToolCapExceeded,
    WorkflowBlocked,
)
from costguard.ledger import Ledger, open_ledger
from costguard.metrics import (
    MetricsSink,
    NullMetricsSink,
    record_ledger_error,
    record_segment,
    record_throttle,
    record_violation,
)
from costguard.policy import Limits, PolicySet, WorkflowPolicy, load_policies
from costguard.pricing import InferenceProfileResolver, ModelPrice, PriceCatalog
from costguard.trace import (
    AgentTraceNormalizer,
    ModelCall,
    ModelCallStarted,
    ReturnControl,
    ToolCall,
    ToolResult,
    converse_model_call,
    invoke_model_call,
)
from costguard.usage import (
    KillSwitch,
    ModelCallRecord,
    PeriodLimit,
    RequestSegment,
    Reservation,
    SessionUsage,
    ToolCallRecord,
    Totals,
    ViolationRecord,
    nanos_to_usd,
    usd_to_nanos,
)

logger = logging.getLogger("costguard")

_UNKNOWN_MODEL = "unknown"

#: Methods metered per boto3 service; every other attribute passes through.
_METERED_METHODS: dict[str, frozenset[str]] = {
    "bedrock-agent-runtime": frozenset({"invoke_agent", "invoke_inline_agent"}),
    "bedrock-runtime": frozenset({"converse", "converse_stream", "invoke_model"}),
}


@dataclass(frozen=True, slots=True)
class _Binding:
    workflow: str
    user_id: str | None
    session_id: str | None


@dataclass(frozen=True, slots=True)
class _PricedModel:
    base_model_id: str
    price: ModelPrice
    priced: bool
    #: Nano-dollars per token (input, output, cache read, cache write) when every price is a
    #: whole number of nano-dollars per token, as all Bedrock list prices are: the hot path then
    #: adds integers. None means "use the exact Decimal arithmetic".
    nanos_per_token: tuple[int, int, int, int] | None = None

    def cost_nanos(self, i: int, o: int, cache_read: int, cache_write: int) -> int:
        per = self.nanos_per_token
        if per is not None:
            return i * per[0] + o * per[1] + cache_read * per[2] + cache_write * per[3]
        return usd_to_nanos(self.price.cost(i, o, cache_read, cache_write))


def _nanos_per_token(price: ModelPrice) -> tuple[int, int, int, int] | None:
    # USD per 1M tokens x 1000 = nano-dollars per token.
    per_million = (
        price.input,
        price.output,
        price.cache_read if price.cache_read is not None else price.input,
        price.cache_write if price.cache_write is not None else price.input,
    )
    scaled = [value * 1000 for value in per_million]
    if all(value == value.to_integral_value() for value in scaled):
        return tuple(int(value) for value in scaled)  # type: ignore[return-value]
    return None


class AgentModelResolver:
    """The model an agent is configured with, from bedrock-agent ``GetAgent``/``GetAgentVersion``.

    Used only when traces name no model. Answers (and failures) are cached per agent and version,
    so a missing permission costs one call, not one per step.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._cache: dict[tuple[str, str | None], str | None] = {}
        self._lock = threading.Lock()

    def __call__(self, agent_id: str, version: str | None) -> str | None:
        key = (agent_id, version)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        model: str | None = None
        try:
            if version and version != "DRAFT":
                answer = self._client.get_agent_version(agentId=agent_id, agentVersion=version)
                model = answer.get("agentVersion", {}).get("foundationModel")
            else:
                answer = self._client.get_agent(agentId=agent_id)
                model = answer.get("agent", {}).get("foundationModel")
        except (ClientError, BotoCoreError) as exc:
            logger.warning("cannot read the model of agent %s version %s: %s", agent_id, version, exc)
        with self._lock:
            self._cache[key] = model
        return model


class Guard:
    """Meters and caps Bedrock calls made through the clients it wraps.

    ``policies``: a :class:`PolicySet`, or a path to a policy file or directory (None = no limits,
    metering only). ``ledger``: a URL (``sqlite:///costguard.db``) or a :class:`Ledger` (None =
    ``$COSTGUARD_LEDGER`` or the embedded default). ``agent_client``: a bedrock-agent client, used
    to look up an agent's model when traces name none. ``bedrock_client``: a bedrock client, used
    to resolve application inference profile ARNs to their model for pricing. ``user_id_key``:
    when set (or ``$COSTGUARD_USER_KEY``), user ids are stored as keyed hashes. ``metrics``: a
    :class:`~costguard.metrics.MetricsSink` for costguard's own CloudWatch metrics (None = off;
    :func:`~costguard.metrics.metrics_sink_from_env` picks one from the environment).
    """

    def __init__(
        self,
        policies: PolicySet | str | os.PathLike[str] | None = None,
        ledger: Ledger | str | None = None,
        *,
        pricing: PriceCatalog | None = None,
        agent_client: Any = None,
        bedrock_client: Any = None,
        user_id_key: str | bytes | None = None,
        reserve_usd: Decimal | str = Decimal("0.05"),
        kill_switch_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        metrics: MetricsSink | None = None,
    ) -> None:
        if policies is None:
            policies = PolicySet.empty()
        elif isinstance(policies, (str, Path, os.PathLike)):
            policies = load_policies(policies)
        elif not isinstance(policies, PolicySet):
            raise PolicyError(
                f"policies must be a PolicySet or a path, not {type(policies).__name__}"
            )
        self.policies: PolicySet = policies
        self.ledger: Ledger = open_ledger(ledger)
        self.pricing: PriceCatalog = pricing if pricing is not None else PriceCatalog.load()
        self._agent_models = AgentModelResolver(agent_client) if agent_client is not None else None
        self._profiles = (
            InferenceProfileResolver(client=bedrock_client) if bedrock_client is not None else None
        )
        key = user_id_key if user_id_key is not None else os.environ.get("COSTGUARD_USER_KEY")
        self._user_key: bytes | None = key.encode() if isinstance(key, str) else key
        self.reserve_nanos = usd_to_nanos(Decimal(reserve_usd))
        self.kill_switch_ttl_s = kill_switch_ttl_s
        self._clock = clock
        self._priced: dict[str, _PricedModel] = {}
        self._typical_cost: dict[str, float] = {}
        self._kill_cache: dict[str, tuple[float, KillSwitch | None]] = {}
        self._open_requests: dict[tuple[str, str], _RequestMeter] = {}
        self._lock = threading.Lock()
        #: Ledger operations that failed under ``on_ledger_error: allow`` (usage not recorded).
        self.ledger_gaps = 0
        self.metrics: MetricsSink = metrics if metrics is not None else NullMetricsSink()
        #: Metrics that could not be recorded because the sink raised (the calls went on).
        self.metrics_errors = 0

    # -- public API -----------------------------------------------------------------------------

    def wrap(
        self,
        client: Any,
        *,
        workflow: str,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> GuardedClient:
        """A proxy of ``client`` whose Bedrock calls are metered and capped for ``workflow``."""
        if not workflow or not isinstance(workflow, str):
            raise PolicyError("wrap() needs a workflow name")
        service = _service_name(client)
        if service not in _METERED_METHODS:
            raise PolicyError(
                f"cannot wrap a {service!r} client: costguard meters "
                + " and ".join(sorted(_METERED_METHODS))
            )
        stored_user = self._user_ref(user_id)
        return GuardedClient(self, client, service, _Binding(workflow, stored_user, session_id))

    def session_usage(self, session_id: str) -> SessionUsage:
        """What the ledger holds for ``session_id`` (zeros for a session never seen)."""
        usage = self.ledger.session_usage(session_id)
        return usage if usage is not None else SessionUsage.empty(session_id)

    def policy_for(self, workflow: str) -> WorkflowPolicy:
        return self.policies.for_workflow(workflow)

    def flush_metrics(self) -> None:
        """Publish buffered metrics now (a Lambda handler calls this before it returns)."""
        self._publish_metrics(lambda sink: sink.flush())

    def close(self) -> None:
        self.flush_metrics()
        self.ledger.close()

    def _publish_metrics(self, publish: Callable[[MetricsSink], None]) -> None:
        """Hand ``publish`` the metrics sink; whatever the sink does, the agent call goes on."""
        sink = self.metrics
        if type(sink) is NullMetricsSink:
            return
        try:
            publish(sink)
        except Exception:  # noqa: BLE001 - the only catch-all of the meter, on purpose: a sink is
            # pluggable code doing I/O, and telemetry must never break (or change the outcome of)
            # an agent call, including one already raising a violation or an AWS error.
            self.metrics_errors += 1
            logger.warning("metrics sink %s failed; metrics lost, call unaffected", type(sink).__name__, exc_info=True)

    # -- pricing and models ---------------------------------------------------------------------

    def price_model(self, model_id: str) -> _PricedModel:
        cached = self._priced.get(model_id)
        if cached is not None:
            return cached
        lookup_id = model_id
        if ":application-inference-profile/" in model_id and self._profiles is not None:
            try:
                lookup_id = self._profiles.resolve(model_id)
            except PricingError as exc:
                logger.warning("%s", exc)
        quote = self.pricing.quote(lookup_id)
        priced = _PricedModel(quote.base_model_id, quote.price, quote.priced, _nanos_per_token(quote.price))
        self._priced[model_id] = priced
        return priced

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def reservation_estimate(self, workflow: str) -> int:
        """What to hold before a request: the workflow's typical request cost, learned here.

        Starting from ``reserve_usd`` and following a moving average of what requests really
        cost means a long agent loop usually settles within its first hold instead of extending
        it step after step.
        """
        typical = self._typical_cost.get(workflow)
        return max(self.reserve_nanos, int(typical * 1.25)) if typical else self.reserve_nanos

    def smallest_useful_hold(self, workflow: str) -> int:
        """The least room worth sending a request into: its learned typical cost (0 before any).

        Shrinking a hold to the budget's last sliver is right while nothing is known, but once a
        typical request is known to cost more than the room left, sending it would overspend by
        almost a whole request: better refuse it before it costs anything.
        """
        typical = self._typical_cost.get(workflow)
        return int(typical) if typical else 0

    def _learn_cost(self, workflow: str, cost_nanos: int) -> None:
        previous = self._typical_cost.get(workflow)
        self._typical_cost[workflow] = cost_nanos if previous is None else 0.8 * previous + 0.2 * cost_nanos

    def _user_ref(self, user_id: str | None) -> str | None:
        if user_id is None or self._user_key is None:
            return user_id
        digest = hmac.new(self._user_key, user_id.encode(), hashlib.sha256).hexdigest()
        return "h:" + digest[:32]

    # -- ledger access that honours on_ledger_error ---------------------------------------------

    def _ledger_call(self, policy: WorkflowPolicy, what: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except LedgerError as exc:
            self._publish_metrics(lambda sink: record_ledger_error(sink, policy.name))
            if policy.on_ledger_error == "deny":
                raise
            self.ledger_gaps += 1
            logger.error("ledger unavailable (%s), failing open for workflow %s: %s", what, policy.name, exc)
            return default

    def _kill_switch(self, policy: WorkflowPolicy, workflow: str) -> KillSwitch | None:
        now = self._clock()
        cached = self._kill_cache.get(workflow)
        if cached is not None and now - cached[0] < self.kill_switch_ttl_s:
            switch = cached[1]
        else:
            switch = self._ledger_call(
                policy, "kill switch", lambda: self.ledger.kill_switch(workflow, int(now * 1000)), None
            )
            self._kill_cache[workflow] = (now, switch)
        if switch is not None and switch.expires_at_ms is not None and switch.expires_at_ms <= now * 1000:
            return None
        return switch

    def _period_limits(self, policy: WorkflowPolicy, ts_ms: int) -> tuple[PeriodLimit, ...]:
        moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
        budget = policy.budget
        daily = usd_to_nanos(budget.daily_usd) if budget and budget.daily_usd is not None else None
        monthly = usd_to_nanos(budget.monthly_usd) if budget and budget.monthly_usd is not None else None
        return (
            PeriodLimit("day:" + moment.strftime("%Y-%m-%d"), daily),
            PeriodLimit("month:" + moment.strftime("%Y-%m"), monthly),
        )

    # -- request lifecycle ----------------------------------------------------------------------

    def _start_request(
        self,
        binding: _Binding,
        operation: str,
        session_id: str,
        *,
        agent_id: str | None = None,
        agent_alias_id: str | None = None,
        model_id: str | None = None,
        continuation_of: str | None = None,
        previous: Totals | None = None,
    ) -> _RequestMeter:
        """Pre-call checks; returns the request's meter or raises before anything is sent."""
        policy = self.policies.for_workflow(binding.workflow)
        started_ms = self.now_ms()
        request_id = continuation_of or uuid.uuid4().hex
        if continuation_of is not None and previous is None:
            previous = self._ledger_call(
                policy, "request totals", lambda: self.ledger.request_totals(continuation_of), None
            )
        session_base = self._ledger_call(
            policy, "session counters", lambda: self.ledger.session_totals(session_id), Totals()
        )
        meter = _RequestMeter(
            self,
            policy,
            binding,
            operation,
            request_id,
            session_id,
            started_ms,
            previous or Totals(),
            session_base,
            agent_id,
            agent_alias_id,
        )
        try:
            meter.check_before_call(model_id)
        except PolicyViolation:
            meter.finish("blocked", write_usage=False)
            raise
        return meter

    def _remember_return_control(self, session_id: str, invocation_id: str, meter: _RequestMeter) -> None:
        with self._lock:
            self._open_requests[(session_id, invocation_id)] = meter

    def _continued_request(
        self, session_id: str, session_state: Any
    ) -> tuple[str | None, Totals | None]:
        """The request a returnControl continuation belongs to (and its totals when known here).

        ``(None, None)`` for a new request. A request paused in this process is continued from
        memory; one paused elsewhere is found in the ledger, and its totals read from there.
        """
        if not isinstance(session_state, Mapping) or not session_state.get("returnControlInvocationResults"):
            return None, None
        invocation_id = session_state.get("invocationId")
        if not invocation_id:
            return None, None
        with self._lock:
            paused = self._open_requests.pop((session_id, invocation_id), None)
        if paused is not None:
            return paused.request_id, paused.totals.copy()
        request_id = self._ledger_call(
            self.policies.defaults,
            "return-control lookup",
            lambda: self.ledger.find_return_control(session_id, invocation_id),
            None,
        )
        return request_id, None


class GuardedClient:
    """A boto3 client proxy: metered Bedrock methods, everything else passed through."""

    def __init__(self, guard: Guard, client: Any, service: str, binding: _Binding) -> None:
        self._guard = guard
        self._client = client
        self._service = service
        self._binding = binding
        self._metered = _METERED_METHODS[service]

    @property
    def unwrapped(self) -> Any:
        return self._client

    @property
    def workflow(self) -> str:
        return self._binding.workflow

    def __getattr__(self, name: str) -> Any:
        if name in self._metered:
            return getattr(self, "_" + name)
        return getattr(self._client, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._client)) | set(super().__dir__()))

    def __repr__(self) -> str:
        return f"<costguard guarded {self._service} client, workflow={self._binding.workflow!r}>"

    # -- bedrock-agent-runtime ------------------------------------------------------------------

    def _invoke_agent(self, **kwargs: Any) -> dict[str, Any]:
        return self._agent_call("InvokeAgent", self._client.invoke_agent, kwargs)

    def _invoke_inline_agent(self, **kwargs: Any) -> dict[str, Any]:
        return self._agent_call("InvokeInlineAgent", self._client.invoke_inline_agent, kwargs)

    def _agent_call(self, operation: str, call: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        guard = self._guard
        session_id = kwargs.get("sessionId") or self._binding.session_id or ""
        state_key = "sessionState" if operation == "InvokeAgent" else "inlineSessionState"
        continuation, previous = guard._continued_request(session_id, kwargs.get(state_key))
        inline_model = kwargs.get("foundationModel") if operation == "InvokeInlineAgent" else None
        meter = guard._start_request(
            self._binding,
            operation,
            session_id,
            agent_id=kwargs.get("agentId") or kwargs.get("agentName"),
            agent_alias_id=kwargs.get("agentAliasId"),
            model_id=inline_model,
            continuation_of=continuation,
            previous=previous,
        )
        # The meter needs the trace; a caller that did not ask for it does not see it.
        hide_traces = not kwargs.get("enableTrace")
        if hide_traces:
            kwargs = {**kwargs, "enableTrace": True}
        try:
            response = call(**kwargs)
        except BaseException as exc:
            meter.finish(_call_error_status(exc), write_usage=False)
            raise
        default_model = inline_model or meter.policy.default_model
        normalizer = AgentTraceNormalizer(default_model, guard._agent_models)
        response["completion"] = MeteredEventStream(response["completion"], meter, normalizer, hide_traces)
        return response

    # -- bedrock-runtime ------------------------------------------------------------------------

    def _converse(self, **kwargs: Any) -> dict[str, Any]:
        return self._single_call("Converse", self._client.converse, converse_model_call, kwargs)

    def _invoke_model(self, **kwargs: Any) -> dict[str, Any]:
        return self._single_call("InvokeModel", self._client.invoke_model, invoke_model_call, kwargs)

    def _single_call(
        self,
        operation: str,
        call: Callable[..., dict[str, Any]],
        usage_of: Callable[[str, Mapping[str, Any]], ModelCall],
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        model_id = kwargs.get("modelId") or ""
        meter = self._runtime_request(operation, model_id)
        try:
            response = call(**kwargs)
        except BaseException as exc:
            meter.finish(_call_error_status(exc), write_usage=False)
            raise
        meter.run_single(usage_of(model_id, response))
        return response

    def _converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        model_id = kwargs.get("modelId") or ""
        meter = self._runtime_request("ConverseStream", model_id)
        try:
            response = self._client.converse_stream(**kwargs)
        except BaseException as exc:
            meter.finish(_call_error_status(exc), write_usage=False)
            raise
        response["stream"] = MeteredConverseStream(response["stream"], meter, model_id)
        return response

    def _runtime_request(self, operation: str, model_id: str) -> _RequestMeter:
        session_id = self._binding.session_id or ""
        return self._guard._start_request(self._binding, operation, session_id, model_id=model_id)


class _MeteredStream:
    """A boto3 event stream, metered: yields exactly what boto3 yields, finishes its request once."""

    def __init__(self, raw: Any, meter: _RequestMeter) -> None:
        self._raw = raw
        self._meter = meter
        self._iterator: Iterator[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def close(self) -> None:
        """Stop reading: closes the HTTP stream and records what was metered so far."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        else:
            self._raw.close()
            self._meter.finish("abandoned")

    def __del__(self) -> None:
        # A stream dropped without being read still holds a budget reservation: give it back.
        if self._iterator is None and not self._meter.finished:
            try:
                self._meter.finish("abandoned")
            except Exception:  # noqa: BLE001 - nothing may escape a finalizer
                logger.exception("could not record an abandoned stream")

    def _events(self) -> Iterator[dict[str, Any]]:
        raise TypeError("a metered stream subclass defines _events")


class MeteredEventStream(_MeteredStream):
    """The InvokeAgent ``completion`` stream, metered from its trace events."""

    def __init__(
        self, raw: Any, meter: _RequestMeter, normalizer: AgentTraceNormalizer, hide_traces: bool
    ) -> None:
        super().__init__(raw, meter)
        self._normalizer = normalizer
        self._hide_traces = hide_traces

    def _events(self) -> Iterator[dict[str, Any]]:
        feed = self._normalizer.feed
        on_step = self._meter.on_step
        hide = self._hide_traces
        status = "abandoned"
        try:
            for event in self._raw:
                step = feed(event)
                if step is not None:
                    on_step(step)
                if hide and "trace" in event:
                    continue
                yield event
            status = "ok"
        except PolicyViolation:
            status = "violation"
            raise
        except ClientError as exc:
            # An exception event mid-stream (throttling, dependency failure...) still leaves
            # the usage metered so far to record.
            status = _error_status(exc)
            raise
        except BotoCoreError:
            status = "error"
            raise
        finally:
            if status != "ok":
                self._raw.close()
            self._meter.unknown_events = self._normalizer.unknown_events
            self._meter.finish(status)


class MeteredConverseStream(_MeteredStream):
    """The ConverseStream ``stream``, metered from its final ``metadata`` event."""

    def __init__(self, raw: Any, meter: _RequestMeter, model_id: str) -> None:
        super().__init__(raw, meter)
        self._model_id = model_id

    def _events(self) -> Iterator[dict[str, Any]]:
        status = "abandoned"
        seen_usage = False
        try:
            for event in self._raw:
                if "metadata" in event:
                    seen_usage = True
                    self._meter.on_step(converse_model_call(self._model_id, event["metadata"]))
                yield event
            status = "ok"
        except PolicyViolation:
            status = "violation"
            raise
        except ClientError as exc:
            status = _error_status(exc)
            raise
        except BotoCoreError:
            status = "error"
            raise
        finally:
            if not seen_usage:
                # The model was called even if its usage never arrived: count the call.
                try:
                    self._meter.on_step(ModelCall(self._model_id, "CONVERSE", usage_missing=True))
                except PolicyViolation:
                    pass  # the stream is over; the violation is already recorded
            if status != "ok":
                self._raw.close()
            self._meter.finish(status)


def _error_status(exc: ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", "error"))
    return "throttled" if "hrottl" in code else f"error:{code}"


def _call_error_status(exc: BaseException) -> str:
    """The status of a request whose call failed before a response: "throttled" or "error"."""
    return "throttled" if isinstance(exc, ClientError) and _error_status(exc) == "throttled" else "error"


class _RequestMeter:
    """One request's running counters and the checks made on every step."""

    def __init__(
        self,
        guard: Guard,
        policy: WorkflowPolicy,
        binding: _Binding,
        operation: str,
        request_id: str,
        session_id: str,
        started_ms: int,
        previous: Totals,
        session_base: Totals,
        agent_id: str | None,
        agent_alias_id: str | None,
    ) -> None:
        self.guard = guard
        self.policy = policy
        self.binding = binding
        self.operation = operation
        self.request_id = request_id
        self.session_id = session_id
        self.started_ms = started_ms
        self.started_monotonic = time.monotonic()
        self.agent_id = agent_id
        self.agent_alias_id = agent_alias_id
        self.totals = previous.copy()
        self.segment_start = previous.copy()
        self.session_base = session_base
        self.per_request: Limits = policy.per_request
        self.per_session: Limits = policy.per_session
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

    # -- before the call ------------------------------------------------------------------------

    def check_before_call(self, model_id: str | None) -> None:
        guard, policy = self.guard, self.policy
        self.requested_model = model_id
        switch = guard._kill_switch(policy, self.binding.workflow)
        if switch is not None:
            self.violate(
                WorkflowBlocked,
                "kill_switch",
                "set",
                "blocked",
                reason=switch.reason,
                set_by=switch.set_by,
            )
        if model_id:
            self._check_model(model_id)
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
        self.periods = self.guard._period_limits(self.policy, self.started_ms)
        if all(p.limit_nanos is None for p in self.periods):
            # Nothing limits spend: count it at settle time without a reservation round trip.
            self.reservation = Reservation(self.binding.workflow, self.periods, 0)
            return
        amount = self.guard.reservation_estimate(self.binding.workflow)
        cap = self.per_request.max_cost_usd
        if cap is not None:
            amount = min(amount, usd_to_nanos(cap))
        self.reservation = self._hold(None, amount)
        if self.reservation is None:
            # No room: the budget violation was recorded (shadow / alert) or raised; in the
            # non-enforcing case count spend without holding money.
            self.reservation = Reservation(self.binding.workflow, self.periods, 0)

    def _hold(self, existing: Reservation | None, amount: int) -> Reservation | None:
        """Reserve ``amount``, or what room is left when less than that; None when none is."""
        ledger = self.guard.ledger
        for _ in range(3):
            if existing is None:
                result = self.guard._ledger_call(
                    self.policy,
                    "budget reservation",
                    lambda: ledger.reserve(self.binding.workflow, self.periods, amount),
                    None,
                )
            else:
                result = self.guard._ledger_call(
                    self.policy,
                    "budget reservation",
                    lambda: ledger.extend_reservation(existing, amount),
                    None,
                )
            if result is None:
                return existing  # ledger down and failing open: go on unreserved
            if result.ok:
                return result.reservation
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
        enforce = budget is None or budget.on_exhausted == "block"
        self.violate(
            BudgetExceeded,
            rule,
            _usd(limit_nanos),
            _usd(observed_nanos),
            enforce=enforce,
            period=period.split(":", 1)[-1],
        )

    def _check_model(self, model_id: str) -> _PricedModel:
        priced = self.guard.price_model(model_id)
        models = self.policy.models
        if models.allow is not None and not models.allows(model_id, priced.base_model_id):
            self.violate(ModelNotAllowed, "models.allow", list(models.allow), model_id, model=model_id)
        if not priced.priced:
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
                    fallback_model=priced.price.model_id,
                )
        return priced

    # -- per step -------------------------------------------------------------------------------

    def on_step(self, step: object) -> None:
        kind = type(step)
        if kind is ModelCall:
            self._model_call(step)  # type: ignore[arg-type]
        elif kind is ModelCallStarted:
            self._model_started(step)  # type: ignore[arg-type]
        elif kind is ToolCall:
            self._tool_call(step)  # type: ignore[arg-type]
        elif kind is ToolResult:
            self._tool_result(step)  # type: ignore[arg-type]
        elif kind is ReturnControl:
            self.return_control_id = step.invocation_id  # type: ignore[attr-defined]

    def _model_started(self, step: ModelCallStarted) -> None:
        self.calls_started += 1
        if step.model_id:
            self._check_model(step.model_id)
        started = max(self.calls_started, self.totals.model_calls - self.segment_start.model_calls + 1)
        self._check_calls(self.segment_start.model_calls + started)

    def _check_calls(self, request_calls: int) -> None:
        cap = self.per_request.max_model_calls
        if cap is not None and request_calls > cap:
            self.violate(LoopCapExceeded, "per_request.max_model_calls", cap, request_calls)
        cap = self.per_session.max_model_calls
        if cap is not None:
            session_calls = self.session_base.model_calls + request_calls - self.segment_start.model_calls
            if session_calls > cap:
                self.violate(LoopCapExceeded, "per_session.max_model_calls", cap, session_calls)

    def _model_call(self, step: ModelCall) -> None:
        model_id = step.model_id or self.policy.default_model or _UNKNOWN_MODEL
        priced = self._check_model(model_id) if step.model_id is None else self.guard.price_model(model_id)
        cost_nanos = priced.cost_nanos(
            step.input_tokens, step.output_tokens, step.cache_read_tokens, step.cache_write_tokens
        )
        t = self.totals
        t.model_calls += 1
        t.input_tokens += step.input_tokens
        t.output_tokens += step.output_tokens
        t.cache_read_tokens += step.cache_read_tokens
        t.cache_write_tokens += step.cache_write_tokens
        t.cost_nanos += cost_nanos
        if not priced.priced:
            self.unpriced_calls += 1
        if step.latency_ms:
            self.model_latency_ms += step.latency_ms
        self.model_rows.append(
            ModelCallRecord(
                self.request_id,
                self.binding.workflow,
                self.session_id,
                self.guard.now_ms(),
                model_id,
                priced.base_model_id,
                step.step_type,
                step.input_tokens,
                step.output_tokens,
                step.cache_read_tokens,
                step.cache_write_tokens,
                cost_nanos,
                priced.priced,
                step.latency_ms,
                step.agent,
                self.binding.user_id,
            )
        )
        self._check_calls(t.model_calls)
        self._check_tokens_and_cost()
        self._check_budget()

    def _check_tokens_and_cost(self) -> None:
        t, start, base = self.totals, self.segment_start, self.session_base
        req, ses = self.per_request, self.per_session
        if req.max_tokens is not None and t.tokens > req.max_tokens:
            self.violate(TokenCapExceeded, "per_request.max_tokens", req.max_tokens, t.tokens)
        if ses.max_tokens is not None:
            tokens = base.tokens + t.tokens - start.tokens
            if tokens > ses.max_tokens:
                self.violate(TokenCapExceeded, "per_session.max_tokens", ses.max_tokens, tokens)
        if req.max_cost_usd is not None and t.cost_nanos > usd_to_nanos(req.max_cost_usd):
            self.violate(CostCapExceeded, "per_request.max_cost_usd", req.max_cost_usd, _usd(t.cost_nanos))
        if ses.max_cost_usd is not None:
            cost = base.cost_nanos + t.cost_nanos - start.cost_nanos
            if cost > usd_to_nanos(ses.max_cost_usd):
                self.violate(CostCapExceeded, "per_session.max_cost_usd", ses.max_cost_usd, _usd(cost))

    def _check_budget(self) -> None:
        reservation = self.reservation
        if reservation is None or all(p.limit_nanos is None for p in reservation.periods):
            return
        spent = self.totals.cost_nanos - self.segment_start.cost_nanos
        shortfall = spent - reservation.amount_nanos
        if shortfall <= 0 or "budget" in self.violated:
            return
        # Grow the hold geometrically (at least doubling it) so a long loop costs a handful of
        # ledger writes, not one per step; the surplus goes back when the request settles.
        held = self._hold(reservation, max(shortfall, self.guard.reserve_nanos, reservation.amount_nanos))
        if held is None:
            self.violated.add("budget")

    def _tool_call(self, step: ToolCall) -> None:
        t = self.totals
        t.tool_calls += 1
        self.tool_rows.append(
            ToolCallRecord(
                self.request_id,
                self.binding.workflow,
                self.session_id,
                self.guard.now_ms(),
                step.kind,
                step.name,
                None,
                None,
                step.agent,
            )
        )
        cap = self.per_request.max_tool_calls
        if cap is not None and t.tool_calls > cap:
            self.violate(ToolCapExceeded, "per_request.max_tool_calls", cap, t.tool_calls, tool=step.name)
        cap = self.per_session.max_tool_calls
        if cap is not None:
            calls = self.session_base.tool_calls + t.tool_calls - self.segment_start.tool_calls
            if calls > cap:
                self.violate(ToolCapExceeded, "per_session.max_tool_calls", cap, calls, tool=step.name)

    def _tool_result(self, step: ToolResult) -> None:
        size = step.response_bytes
        t = self.totals
        t.tool_response_bytes += size
        if size > t.max_tool_response_bytes:
            t.max_tool_response_bytes = size
        if step.latency_ms:
            self.tool_latency_ms += step.latency_ms
        row = self._pending_tool_row(step)
        if row is None:
            # An observation whose invocationInput never came: still a tool response to count.
            t.tool_calls += 1
            row = ToolCallRecord(
                self.request_id,
                self.binding.workflow,
                self.session_id,
                self.guard.now_ms(),
                step.kind,
                step.name,
                None,
                None,
                step.agent,
            )
            self.tool_rows.append(row)
        row.response_bytes = size
        row.latency_ms = step.latency_ms
        for scope, limits in (("per_request", self.per_request), ("per_session", self.per_session)):
            cap = limits.max_tool_response_bytes
            if cap is not None and size > cap:
                self.violate(
                    ResponseTooLarge,
                    f"{scope}.max_tool_response_bytes",
                    cap,
                    size,
                    tool=step.name,
                    tool_kind=step.kind,
                )

    def _pending_tool_row(self, step: ToolResult) -> ToolCallRecord | None:
        for row in reversed(self.tool_rows):
            if row.response_bytes is None and row.kind == step.kind and (
                step.name is None or row.name == step.name
            ):
                return row
        return None

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

    # -- single-response calls (Converse, InvokeModel) ------------------------------------------

    def run_single(self, step: ModelCall) -> None:
        status = "violation"
        try:
            self.on_step(step)
            status = "ok"
        finally:
            self.finish(status)

    # -- the end --------------------------------------------------------------------------------

    def finish(self, status: str, *, write_usage: bool = True) -> None:
        """Write this segment (usage, violations, settlement) once; safe to call again."""
        if self.finished:
            return
        self.finished = True
        guard = self.guard
        if status == "ok" and self.return_control_id:
            status = "return_control"
            guard._remember_return_control(self.session_id, self.return_control_id, self)
        ended_ms = guard.now_ms()
        if status == "throttled":
            guard._publish_metrics(self._record_throttle)
        if not write_usage:
            try:
                self._finish_without_usage()
            finally:
                guard._publish_metrics(self._record_violations)
            return
        delta = self.totals.minus(self.segment_start)
        if status == "ok":
            guard._learn_cost(self.binding.workflow, delta.cost_nanos)
        segment = RequestSegment(
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
            totals=self.totals,
            delta=delta,
            latency_ms=int((time.monotonic() - self.started_monotonic) * 1000),
            model_latency_ms=self.model_latency_ms,
            tool_latency_ms=self.tool_latency_ms,
            unknown_events=self.unknown_events,
            unpriced_calls=self.unpriced_calls,
            return_control_id=self.return_control_id,
            model_calls=self.model_rows,
            tool_calls=self.tool_rows,
            violations=self.violation_rows,
            reservation=self.reservation,
        )
        quiet = status not in ("ok", "return_control")
        try:
            self._write(lambda: guard.ledger.record(segment), "recording usage", quiet=quiet)
        finally:
            # Recorded or not (ledger down), the segment happened: its metrics are published.
            guard._publish_metrics(lambda sink: record_segment(sink, segment))

    def _record_violations(self, sink: MetricsSink) -> None:
        for violation in self.violation_rows:
            record_violation(sink, violation)

    def _record_throttle(self, sink: MetricsSink) -> None:
        # The model is known for Converse/InvokeModel; an agent's throttle is the workflow's.
        model = self.requested_model
        base = self.guard.price_model(model).base_model_id if model else None
        record_throttle(sink, self.binding.workflow, base)

    def _finish_without_usage(self) -> None:
        ledger = self.guard.ledger
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
            self.guard._ledger_call(self.policy, what, fn, None)
        except LedgerError:
            if not quiet:
                raise
            # Under on_ledger_error: deny a failed write is an error, but not one that may hide
            # the violation or AWS error already on its way to the caller.
            logger.error("ledger write failed (%s) while another error was being raised", what)


def _usd(nanos: int) -> Decimal:
    return nanos_to_usd(nanos)


def _text(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _service_name(client: Any) -> str:
    try:
        return str(client.meta.service_model.service_name)
    except AttributeError as exc:
        raise PolicyError(f"guard.wrap() needs a boto3 client, not {type(client).__name__}") from exc
