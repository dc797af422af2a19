"""The ``Guard``: policies, ledger, prices and metrics shared by every client it wraps."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from costguard.errors import LedgerError, PolicyError, PolicyViolation, PricingError
from costguard.identity import UserIdHasher
from costguard.ledger import Ledger, open_ledger
from costguard.ledger.base import DEFAULT_LEASE_TTL_MS, check_storable_id
from costguard.meter.request import Binding, RequestMeter
from costguard.meter.session_cache import SessionCache
from costguard.meter.slices import BudgetSlices
from costguard.meter.writer import DEFAULT_BATCH_ROWS, UsageWriter
from costguard.meter.tools import ToolUseMemory
from costguard.metrics import MetricsSink, NullMetricsSink, record_ledger_error
from costguard.policy import PolicySet, WorkflowPolicy, load_policies
from costguard.pricing import InferenceProfileResolver, PriceCatalog
from costguard.usage import KillSwitch, PeriodLimit, SessionUsage, Totals, usd_to_nanos

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient
    from costguard.meter.session import GuardedSession
    from costguard.pricing.catalog import RateCard

logger = logging.getLogger("costguard")


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
    the key user ids are stored hashed with (HMAC-SHA256); by default ``$COSTGUARD_USER_KEY``, else
    a key generated once and kept with the ledger; ``False`` stores raw ids (an explicit opt-in).
    ``lease_ttl_s``: how long a budget hold outlives its last renewal (a running request renews
    it; a crashed one's hold comes back after this). ``checkpoint_every_calls`` /
    ``checkpoint_every_s``: a long agent stream writes its usage so far at least this often, so a
    crash loses at most one interval. ``write_interval_s``: usage is written by a background
    writer in batches at least this often (and every ``write_batch_rows`` model and tool calls,
    at :meth:`flush`, :meth:`close` and interpreter exit), budgets are spent from per-process
    slices and a session's totals are read once per ``session_cache_s`` of idleness; ``0``
    writes every request synchronously with per-request holds (see docs/ledgers.md). ``metrics``: a
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
        user_id_key: str | bytes | Literal[False] | None = None,
        reserve_usd: Decimal | str = Decimal("0.05"),
        kill_switch_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        metrics: MetricsSink | None = None,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_MS / 1000,
        checkpoint_every_calls: int = 20,
        checkpoint_every_s: float = 5.0,
        write_interval_s: float = 1.0,
        write_batch_rows: int = DEFAULT_BATCH_ROWS,
        session_cache_s: float = 300.0,
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
        self.agent_models = AgentModelResolver(agent_client) if agent_client is not None else None
        self._profiles = (
            InferenceProfileResolver(client=bedrock_client) if bedrock_client is not None else None
        )
        self._user_id_key = user_id_key
        self._users: UserIdHasher | None = None
        self.reserve_nanos = usd_to_nanos(Decimal(reserve_usd))
        if lease_ttl_s <= 0 or checkpoint_every_calls < 1 or checkpoint_every_s <= 0:
            raise PolicyError("lease_ttl_s, checkpoint_every_calls and checkpoint_every_s must be positive")
        #: Budget holds are leases: they expire this long after their last renewal.
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        #: Who holds this process's leases (shown by ``costguard budget status``).
        self.lease_owner = _new_lease_owner()
        #: A long stream writes its usage every this many model calls or seconds.
        self.checkpoint_calls = checkpoint_every_calls
        self.checkpoint_s = checkpoint_every_s
        self.kill_switch_ttl_s = kill_switch_ttl_s
        self._clock = clock
        #: What durations are measured on: the monotonic clock, unless a clock was given (a
        #: replay's recorded clock: simulated requests then take their recorded durations).
        self.duration_clock: Callable[[], float] = time.monotonic if clock is time.time else clock
        self._cards: dict[tuple[str, str, str, bool], RateCard] = {}
        self._typical_cost: dict[str, float] = {}
        self._id_prefix = secrets.token_hex(10)
        self._id_counter = itertools.count()
        self._periods: dict[tuple[str, int], tuple[WorkflowPolicy, tuple[PeriodLimit, ...]]] = {}
        self._kill_cache: dict[str, tuple[float, KillSwitch | None]] = {}
        self._open_requests: dict[tuple[str, str], RequestMeter] = {}
        #: The toolUseIds each session's Converse loop has shown (see :mod:`costguard.meter.tools`).
        self.tool_uses = ToolUseMemory()
        self._lock = threading.Lock()
        #: Ledger operations that failed under ``on_ledger_error: allow`` (usage not recorded).
        self.ledger_gaps = 0
        self.metrics: MetricsSink = metrics if metrics is not None else NullMetricsSink()
        #: Metrics that could not be recorded because the sink raised (the calls went on).
        self.metrics_errors = 0
        #: Calls to cost-bearing methods costguard does not meter (see ``unmetered`` policy).
        self.unmetered_calls = 0
        #: Errors inside costguard's own code that were contained (the caller's call went on).
        self.internal_errors = 0
        if write_interval_s < 0 or write_batch_rows < 1 or session_cache_s < 0:
            raise PolicyError("write_interval_s and session_cache_s must be >= 0, write_batch_rows >= 1")
        self.session_cache_s = session_cache_s
        self._session_totals: SessionCache[Totals] = SessionCache(session_cache_s, Totals.copy)
        self._session_repeats: SessionCache[dict[str, int]] = SessionCache(session_cache_s, dict)
        self.writer: UsageWriter | None = None
        self.slices: BudgetSlices | None = None
        if write_interval_s > 0:
            self.slices = BudgetSlices(self.lease_owner, self.lease_ttl_ms)
            self.writer = UsageWriter(
                self.ledger,
                interval_s=write_interval_s,
                max_rows=write_batch_rows,
                on_tick=self._upkeep,
                on_dropped=self._count_dropped,
                on_failure=self._writer_failed,
            )
        _forget_at_fork(self)

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
        from costguard.meter.client import GuardedClient
        from costguard.meter.operations import METERED_SERVICES

        if not workflow or not isinstance(workflow, str):
            raise PolicyError("wrap() needs a workflow name")
        # An id no ledger can store is refused now, before any call is sent and not recorded.
        check_storable_id("workflow", workflow)
        if session_id is not None:
            check_storable_id("session", session_id)
        check_storable_id("user", user_id)
        service = _service_name(client)
        if service not in METERED_SERVICES:
            raise PolicyError(
                f"cannot wrap a {service!r} client: costguard meters "
                + " and ".join(sorted(METERED_SERVICES))
            )
        region = _region_name(client)
        binding = Binding(workflow, self._user_ref(user_id), session_id, region)
        return GuardedClient(self, client, service, binding)

    def wrap_session(
        self,
        session: Any,
        *,
        workflow: str,
        user_id: str | None = None,
        session_id: str | None = None,
    ) -> GuardedSession:
        """A proxy of a ``boto3.Session`` whose Bedrock runtime clients come out wrapped."""
        from costguard.meter.session import GuardedSession

        if not workflow or not isinstance(workflow, str):
            raise PolicyError("wrap_session() needs a workflow name")
        return GuardedSession(self, session, workflow=workflow, user_id=user_id, session_id=session_id)

    def session_usage(self, session_id: str) -> SessionUsage:
        """What the ledger holds for ``session_id`` (zeros for a session never seen), after
        writing this guard's pending usage (so it includes every call made through it)."""
        if self.writer is not None:
            self.writer.flush()
        usage = self.ledger.session_usage(session_id)
        return usage if usage is not None else SessionUsage.empty(session_id)

    def policy_for(self, workflow: str) -> WorkflowPolicy:
        return self.policies.for_workflow(workflow)

    def flush_metrics(self) -> None:
        """Publish buffered metrics now (a Lambda handler calls this before it returns)."""
        self.publish_metrics(lambda sink: sink.flush())

    def flush(self, timeout: float | None = 10.0, *, release_slices: bool = False) -> None:
        """Write every pending usage row and metric now.

        A Lambda handler calls this before it returns: a frozen sandbox runs no background
        thread, so what is pending would wait for the next invocation (or be lost with the
        sandbox). Raises :class:`~costguard.errors.LedgerError` only when rows of a workflow
        whose policy says ``on_ledger_error: deny`` could not be written; otherwise a failure is
        logged and the rows stay queued for the next attempt. ``release_slices``: also give
        back the unspent part of this process's budget slices (no request may be running).
        """
        writer = self.writer
        if release_slices:
            self._return_slices(everything=True)
        try:
            if writer is not None and not writer.flush(timeout):
                if writer.failing_deny:
                    raise LedgerError(f"usage not written ({writer.pending} pending): {writer.last_error}")
                logger.error("costguard: %d usage entries not written yet: %s", writer.pending, writer.last_error)
        finally:
            self.flush_metrics()

    def close(self) -> None:
        """Return this process's budget slices, write everything pending, close the ledger."""
        try:
            if self.writer is not None:
                self._return_slices(everything=True)
                if not self.writer.close():
                    logger.error("costguard: %d usage entries could not be written before close: %s",
                                 self.writer.pending, self.writer.last_error)
        finally:
            self.flush_metrics()
            self.ledger.close()

    # -- batched writes: slices, sessions, upkeep --------------------------------------------------

    def _writer_failed(self, error: LedgerError, workflows: set[str]) -> None:
        for workflow in sorted(workflows) or ["-"]:
            self.publish_metrics(lambda sink, w=workflow: record_ledger_error(sink, w))

    def _count_dropped(self, entries: int) -> None:
        self.ledger_gaps += entries

    def _return_slices(self, *, everything: bool = False) -> None:
        slices, writer = self.slices, self.writer
        if slices is None or writer is None:
            return
        ledger = self.ledger
        for lease in slices.retire_idle(time.monotonic(), everything=everything):
            writer.submit_action(lambda lease=lease: ledger.release(lease), "returning a budget slice")

    def _upkeep(self) -> None:
        """Run by the writer thread about once a second: renew live slices, return idle ones."""
        slices = self.slices
        if slices is None:
            return
        now_ms = self.now_ms()
        for s in slices.live():
            lease = s.lease
            if lease.lease_id is None or lease.expires_at_ms - now_ms > self.lease_ttl_ms * 2 // 3:
                continue
            with s.lock:
                try:
                    self.ledger.renew_lease(lease, now_ms)
                except LedgerError as exc:
                    logger.error("cannot renew a budget slice lease of %s: %s", s.workflow, exc)
        self._return_slices()

    def session_base(self, policy: WorkflowPolicy, session_id: str) -> Totals:
        """A session's totals before a request: read from the ledger once, then kept here.

        Kept per process and updated with this process's own usage; an entry idle for
        ``session_cache_s`` is read again. So a session served by several processes at once sees
        the others' usage as of its last read here (docs/ledgers.md states the bound).
        """
        def read() -> Totals | None:
            return self._ledger_read(policy, "session counters", lambda: self.ledger.session_totals(session_id))

        totals = read() if self.writer is None else self._session_totals.get(session_id, read)
        return totals if totals is not None else Totals()

    def session_repeats(self, policy: WorkflowPolicy, session_id: str) -> dict[str, int]:
        """The session's tool-call repeat counters, kept here like :meth:`session_base`."""
        def read() -> dict[str, int] | None:
            return self._ledger_read(policy, "tool repeat counters", lambda: self.ledger.tool_repeats(session_id))

        counts = read() if self.writer is None else self._session_repeats.get(session_id, read)
        return counts if counts is not None else {}

    def note_repeats(self, session_id: str, added: Mapping[str, int]) -> None:
        def apply(counts: dict[str, int]) -> None:
            for key, n in added.items():
                counts[key] = counts.get(key, 0) + n

        self._session_repeats.update(session_id, apply)

    def note_session_usage(self, session_id: str, delta: Totals) -> None:
        self._session_totals.update(session_id, lambda totals: totals.add(delta))

    def _ledger_read(self, policy: WorkflowPolicy, what: str, read: Callable[[], Any]) -> Any:
        """``read()`` under ``on_ledger_error``; None when the ledger failed open."""
        failed = object()
        value = self.ledger_call(policy, what, read, failed)
        return None if value is failed else value

    def publish_metrics(self, publish: Callable[[MetricsSink], None]) -> None:
        """Hand ``publish`` the metrics sink; whatever the sink does, the agent call goes on."""
        sink = self.metrics
        if type(sink) is NullMetricsSink:
            return
        try:
            publish(sink)
        except Exception:  # noqa: BLE001 - a sink is pluggable code doing I/O, and telemetry must
            # never break (or change the outcome of) an agent call, including one already raising
            # a violation or an AWS error.
            self.metrics_errors += 1
            logger.warning("metrics sink %s failed; metrics lost, call unaffected", type(sink).__name__, exc_info=True)

    def contain(self, where: str, exc: BaseException) -> None:
        """Count and log an error inside costguard's own code that must not reach the caller."""
        self.internal_errors += 1
        logger.error("costguard internal error in %s (the call goes on): %r", where, exc, exc_info=exc)

    # -- pricing and models ---------------------------------------------------------------------

    def rate_card(
        self, model_id: str, region: str, tier: str = "standard", latency_optimized: bool = False
    ) -> RateCard:
        """How calls to ``model_id`` from ``region`` are priced (memoised: the meter's hot path)."""
        key = (model_id, region, tier, latency_optimized)
        card = self._cards.get(key)
        if card is not None:
            return card
        lookup_id = model_id
        if ":application-inference-profile/" in model_id and self._profiles is not None:
            try:
                lookup_id = self._profiles.resolve(model_id)
            except PricingError as exc:
                logger.warning("%s", exc)
        card = self.pricing.rate_card(lookup_id, region=region, tier=tier, latency_optimized=latency_optimized)
        self._cards[key] = card
        return card

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

    def learn_cost(self, workflow: str, cost_nanos: int) -> None:
        previous = self._typical_cost.get(workflow)
        self._typical_cost[workflow] = cost_nanos if previous is None else 0.8 * previous + 0.2 * cost_nanos

    def _user_ref(self, user_id: str | None) -> str | None:
        """What is stored for ``user_id``: its keyed hash unless raw ids were opted into."""
        if user_id is None:
            return None
        if self._users is None:
            try:
                self._users = UserIdHasher.configured(self._user_id_key, self.ledger)
            except LedgerError as exc:
                # No key, no raw id either: the user stays unattributed until the ledger answers.
                logger.error("cannot read the ledger's user id key (%s): user ids are not recorded", exc)
                return None
        return self._users.ref(user_id)

    # -- ledger access that honours on_ledger_error ---------------------------------------------

    def ledger_call(self, policy: WorkflowPolicy, what: str, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except LedgerError as exc:
            self.publish_metrics(lambda sink: record_ledger_error(sink, policy.name))
            if policy.on_ledger_error == "deny":
                raise
            self.ledger_gaps += 1
            logger.error("ledger unavailable (%s), failing open for workflow %s: %s", what, policy.name, exc)
            return default

    def kill_switch(self, policy: WorkflowPolicy, workflow: str) -> KillSwitch | None:
        now = self._clock()
        cached = self._kill_cache.get(workflow)
        if cached is not None and now - cached[0] < self.kill_switch_ttl_s:
            switch = cached[1]
        else:
            switch = self.ledger_call(
                policy, "kill switch", lambda: self.ledger.kill_switch(workflow, int(now * 1000)), None
            )
            self._kill_cache[workflow] = (now, switch)
        if switch is not None and switch.expires_at_ms is not None and switch.expires_at_ms <= now * 1000:
            return None
        return switch

    def period_limits(self, policy: WorkflowPolicy, ts_ms: int) -> tuple[PeriodLimit, ...]:
        """The day and month budget periods ``ts_ms`` falls in, with the policy's limits
        (memoised per policy and UTC day: asked before every request)."""
        key = (policy.name, ts_ms // 86_400_000)
        cached = self._periods.get(key)
        if cached is not None and cached[0] is policy:
            return cached[1]
        periods = self._period_limits(policy, ts_ms)
        if len(self._periods) > 1024:
            self._periods.clear()
        self._periods[key] = (policy, periods)
        return periods

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

    def start_request(
        self,
        binding: Binding,
        operation: str,
        session_id: str,
        *,
        agent_id: str | None = None,
        agent_alias_id: str | None = None,
        model_id: str | None = None,
        continuation_of: str | None = None,
        previous: Totals | None = None,
    ) -> RequestMeter:
        """Pre-call checks; returns the request's meter or raises before anything is sent."""
        policy = self.policies.for_workflow(binding.workflow)
        started_ms = self.now_ms()
        request_id = continuation_of or self._new_request_id()
        if continuation_of is not None and previous is None:
            previous = self.ledger_call(
                policy, "request totals", lambda: self.ledger.request_totals(continuation_of), None
            )
        writer = self.writer
        if writer is not None and writer.failing and policy.on_ledger_error == "deny":
            raise LedgerError(f"the ledger refuses usage writes ({writer.pending} pending): {writer.last_error}")
        session_base = self.session_base(policy, session_id)
        meter = RequestMeter(
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
            resumed=continuation_of is not None,
        )
        try:
            meter.check_before_call(model_id)
        except PolicyViolation:
            meter.finish("blocked", write_usage=False)
            raise
        return meter

    def _new_request_id(self) -> str:
        """32 hex digits, unique across processes: a random per-guard prefix (new in a forked
        child) and a counter (``uuid4`` reads the OS's random source on every call: a syscall
        per request)."""
        return f"{self._id_prefix}{next(self._id_counter):012x}"

    def remember_return_control(self, session_id: str, invocation_id: str, meter: RequestMeter) -> None:
        with self._lock:
            self._open_requests[(session_id, invocation_id)] = meter

    def continued_request(
        self, session_id: str, session_state: Any
    ) -> tuple[str | None, Totals | None]:
        """The request a returnControl continuation belongs to (and its totals when known here).

        ``(None, None)`` for a new request. A request paused in this process is continued from
        memory; one paused elsewhere is found in the ledger, and its totals read from there.
        """
        if not isinstance(session_state, Mapping) or not session_state.get("returnControlInvocationResults"):
            return None, None
        invocation_id = session_state.get("invocationId")
        if not invocation_id or not isinstance(invocation_id, str):
            return None, None
        with self._lock:
            paused = self._open_requests.pop((session_id, invocation_id), None)
        if paused is not None:
            return paused.request_id, paused.totals.copy()
        request_id = self.ledger_call(
            self.policies.defaults,
            "return-control lookup",
            lambda: self.ledger.find_return_control(session_id, invocation_id),
            None,
        )
        return request_id, None


def _new_lease_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _forget_at_fork(guard: Guard) -> None:
    """A forked child must not repeat its parent's request ids, spend from its parent's slices
    (one lease, two spenders) nor trust its parent's cached session state."""
    ref = weakref.ref(guard)

    def after_in_child() -> None:
        child = ref()
        if child is None:
            return
        child._id_prefix = secrets.token_hex(10)
        child._lock = threading.Lock()  # another thread of the parent may have held it
        child.lease_owner = _new_lease_owner()
        if child.slices is not None:
            child.slices = BudgetSlices(child.lease_owner, child.lease_ttl_ms)
        child._session_totals = SessionCache(child.session_cache_s, Totals.copy)
        child._session_repeats = SessionCache(child.session_cache_s, dict)

    os.register_at_fork(after_in_child=after_in_child)


def _service_name(client: Any) -> str:
    try:
        return str(client.meta.service_model.service_name)
    except AttributeError as exc:
        raise PolicyError(f"guard.wrap() needs a boto3 client, not {type(client).__name__}") from exc


def _region_name(client: Any) -> str:
    region = getattr(getattr(client, "meta", None), "region_name", None)
    return region if isinstance(region, str) and region else "us-east-1"
