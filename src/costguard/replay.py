"""What-if replay: recorded Bedrock traffic run through the meter in-process.

Two recording kinds, both JSON Lines, told apart by their first record:

- an InvokeAgent response: one boto3 ``completion`` event per line, with ``chunk.bytes``
  base64-encoded (how JSON carries bytes). :class:`ReplayAgentClient` stands in for a
  ``bedrock-agent-runtime`` client and yields those events, so the replay goes through exactly the
  code path a live call takes: ``Guard.wrap(...).invoke_agent(...)``.
- Bedrock model-invocation-log records (``schemaType: ModelInvocationLog``, as delivered to
  CloudWatch Logs or S3): each record is one model call, replayed as a ``converse`` call through
  :class:`ReplayRuntimeClient`, answering with the record's token counts. Only the counts are
  read; the logged prompt and output bodies are ignored and never stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from costguard.errors import CostguardError, PolicyViolation
from costguard.ledger.base import Ledger
from costguard.ledger.sqlite import SQLiteLedger
from costguard.meter import Guard
from costguard.policy import PolicySet
from costguard.pricing import PriceCatalog
from costguard.usage import BudgetCounter, SessionUsage, nanos_to_usd


class ReplayError(CostguardError):
    """A recording cannot be read (missing file, a line that is not JSON)."""


def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    records: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise ReplayError(f"{path}:{number}: a record is a JSON object, got {type(record).__name__}")
        records.append((number, record))
    if not records:
        raise ReplayError(f"{path}: no events")
    return records


def _epoch_s(value: Any, path: Path, number: int, name: str) -> float | None:
    """An ISO-8601 timestamp as epoch seconds; None when absent (the replay keeps the last time)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ReplayError(f"{path}:{number}: {name}: not an ISO-8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise ReplayError(f"{path}:{number}: {name}: {value!r} has no time zone")
    return moment.timestamp()


def _event_time(path: Path, number: int, event: dict[str, Any]) -> float | None:
    trace = event.get("trace")
    return _epoch_s(trace.get("eventTime"), path, number, "trace.eventTime") if isinstance(trace, dict) else None


def is_invocation_log(record: dict[str, Any]) -> bool:
    return record.get("schemaType") == "ModelInvocationLog" or (
        "modelId" in record and isinstance(record.get("input"), dict) and "inputTokenCount" in record["input"]
    )


def read_recording(path: Path) -> list[dict[str, Any]]:
    """The events of one InvokeAgent recording, ``chunk.bytes`` decoded back to bytes."""
    return _agent_events(path, _json_lines(path))


class RecordedClock:
    """The replay's clock: the recorded time of the event being replayed.

    Until a recording names a time, it reads the wall clock. A Guard given this clock books usage,
    budget periods and violations at the recorded times, so a replay of 2026-11-20 traffic lands
    on 2026-11-20 and two replays of the same files write the same rows.
    """

    def __init__(self) -> None:
        self.now_s: float | None = None

    def __call__(self) -> float:
        return time.time() if self.now_s is None else self.now_s

    def at(self, when_s: float | None) -> None:
        if when_s is not None:
            self.now_s = when_s


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording file, parsed and checked, not yet replayed."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)  # InvokeAgent events
    times: list[float | None] = field(default_factory=list)  # per event
    calls: list[LoggedCall] | None = None  # model-invocation-log records

    @property
    def is_log(self) -> bool:
        return self.calls is not None


def load_recording(path: Path) -> Recording:
    """Parse one recording; any malformed line raises ``ReplayError`` naming file and line."""
    records = _json_lines(path)
    if is_invocation_log(records[0][1]):
        return Recording(path, calls=_logged_calls(path, records))
    times = [_event_time(path, number, event) for number, event in records]
    return Recording(path, events=_agent_events(path, records), times=times)


def _agent_events(path: Path, records: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for number, event in records:
        chunk = event.get("chunk")
        if isinstance(chunk, dict) and isinstance(chunk.get("bytes"), str):
            try:
                chunk["bytes"] = base64.b64decode(chunk["bytes"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ReplayError(f"{path}:{number}: chunk.bytes is not base64") from exc
        events.append(event)
    return events


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """The counts of one model-invocation-log record; nothing of its bodies."""

    line: int
    model_id: str
    operation: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    session_id: str | None
    at_s: float | None = None  # the record's timestamp, epoch seconds


def read_invocation_log(path: Path) -> list[LoggedCall]:
    """Model calls from Bedrock model-invocation-log records; errors name the file and line."""
    return _logged_calls(path, _json_lines(path))


def _logged_calls(path: Path, records: list[tuple[int, dict[str, Any]]]) -> list[LoggedCall]:
    calls: list[LoggedCall] = []
    for number, record in records:
        if not is_invocation_log(record):
            raise ReplayError(f"{path}:{number}: not a ModelInvocationLog record (the file mixes kinds)")
        model_id = record.get("modelId")
        if not isinstance(model_id, str) or not model_id:
            raise ReplayError(f"{path}:{number}: modelId: missing")
        source_in = record.get("input") or {}
        source_out = record.get("output") or {}

        def count(section: dict[str, Any], key: str, *, required: bool = False) -> int:
            value = section.get(key)
            if value is None and not required:
                return 0
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReplayError(f"{path}:{number}: {key}: expected a token count, got {value!r}")
            return value

        metadata = record.get("requestMetadata")
        if not isinstance(metadata, dict):
            metadata = {}
        session = metadata.get("sessionId") or metadata.get("session_id")
        calls.append(
            LoggedCall(
                line=number,
                model_id=model_id,
                operation=str(record.get("operation") or "Converse"),
                input_tokens=count(source_in, "inputTokenCount", required=True),
                output_tokens=count(source_out, "outputTokenCount"),
                cache_read_tokens=count(source_in, "cacheReadInputTokenCount"),
                cache_write_tokens=count(source_in, "cacheWriteInputTokenCount"),
                session_id=str(session) if session else None,
                at_s=_epoch_s(record.get("timestamp"), path, number, "timestamp"),
            )
        )
    return calls


class _ReplayStream:
    def __init__(self, events: list[dict[str, Any]], times: Sequence[float | None], clock: RecordedClock | None) -> None:
        self._events = events
        self._times = times
        self._clock = clock
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, event in enumerate(self._events):
            if self.closed:
                return
            if self._clock is not None and index < len(self._times):
                self._clock.at(self._times[index])
            self.read += 1
            yield event

    def close(self) -> None:
        self.closed = True


def _client_meta(service: str) -> Any:
    """What ``Guard.wrap`` reads of a botocore client: ``meta.service_model.service_name``."""
    return SimpleNamespace(service_model=SimpleNamespace(service_name=service), region_name="replay")


class ReplayAgentClient:
    """A bedrock-agent-runtime stand-in whose ``invoke_agent`` answers with a recording."""

    meta = _client_meta("bedrock-agent-runtime")

    def __init__(
        self, events: list[dict[str, Any]], times: Sequence[float | None] = (), clock: RecordedClock | None = None
    ) -> None:
        self._events = events
        self._times = times
        self._clock = clock
        self.stream: _ReplayStream | None = None

    def invoke_agent(self, **_: Any) -> dict[str, Any]:
        self.stream = _ReplayStream(self._events, self._times, self._clock)
        return {"completion": self.stream, "sessionId": _.get("sessionId"), "contentType": "text/plain"}


class ReplayRuntimeClient:
    """A bedrock-runtime stand-in whose ``converse`` answers with one logged call's usage."""

    meta = _client_meta("bedrock-runtime")

    def __init__(self) -> None:
        self.next_call: LoggedCall | None = None
        self.sent = 0

    def converse(self, **_: Any) -> dict[str, Any]:
        call = self.next_call
        if call is None:
            raise ReplayError("replay client called without a logged call")
        self.sent += 1
        return {
            "output": {"message": {"role": "assistant", "content": []}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": call.input_tokens,
                "outputTokens": call.output_tokens,
                "totalTokens": call.input_tokens + call.output_tokens + call.cache_read_tokens + call.cache_write_tokens,
                "cacheReadInputTokens": call.cache_read_tokens,
                "cacheWriteInputTokens": call.cache_write_tokens,
            },
            "metrics": {"latencyMs": 0},
        }


@dataclass(frozen=True, slots=True)
class CapHit:
    """One cap that stopped (or, replayed in shadow mode, would have stopped) work in a file."""

    rule: str
    file: str
    at_event: int
    model_calls_avoided: int
    cost_avoided: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "file": self.file,
            "at_event": self.at_event,
            "model_calls_avoided": self.model_calls_avoided,
            "cost_avoided_usd": format(self.cost_avoided, "f"),
        }


@dataclass(slots=True)
class ReplayResult:
    file: str
    session_id: str
    events: int
    model_calls_full: int
    cost_full: Decimal
    model_calls_kept: int
    cost_kept: Decimal
    capped_by: str | None
    capped_at_event: int | None
    violations: list[dict[str, Any]]
    caps: list[CapHit] = field(default_factory=list)

    @property
    def cost_avoided(self) -> Decimal:
        return self.cost_full - self.cost_kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "session_id": self.session_id,
            "events": self.events,
            "model_calls_full": self.model_calls_full,
            "cost_full_usd": format(self.cost_full, "f"),
            "model_calls_kept": self.model_calls_kept,
            "cost_kept_usd": format(self.cost_kept, "f"),
            "cost_avoided_usd": format(self.cost_avoided, "f"),
            "capped_by": self.capped_by,
            "capped_at_event": self.capped_at_event,
            "caps": [c.to_dict() for c in self.caps],
            "violations": self.violations,
        }


def _run(
    guard: Guard, workflow: str, session_id: str, recording: Recording, clock: RecordedClock | None
) -> tuple[SessionUsage, str | None, int]:
    client = ReplayAgentClient(recording.events, recording.times, clock)
    agents = guard.wrap(client, workflow=workflow)
    capped: str | None = None
    if clock is not None and recording.times:
        clock.at(next((t for t in recording.times if t is not None), None))
    agent_id, alias_id = _recorded_agent(recording.events)
    try:
        # A budget or kill switch refuses the request before it is sent: nothing is read.
        response = agents.invoke_agent(agentId=agent_id, agentAliasId=alias_id, sessionId=session_id, inputText="", enableTrace=True)
        for _ in response["completion"]:
            pass
    except PolicyViolation as violation:
        capped = violation.rule
    read = client.stream.read if client.stream else 0
    return guard.session_usage(session_id), capped, read


def _recorded_agent(events: list[dict[str, Any]]) -> tuple[str, str]:
    """The agent and alias ids the recording's traces name (``replay`` when none does)."""
    for event in events:
        trace = event.get("trace")
        if isinstance(trace, dict) and trace.get("agentId"):
            return str(trace["agentId"]), str(trace.get("agentAliasId") or "replay")
    return "replay", "replay"


@dataclass(slots=True)
class _LogRun:
    kept_calls: int
    kept_cost: Decimal
    call_costs: list[int]  # nano-dollars each call cost; 0 for a blocked one
    blocked: list[tuple[str, int, int]]  # (rule, record line, index into the calls)


def _run_log(
    guard: Guard, workflow: str, default_session: str, calls: list[LoggedCall], clock: RecordedClock | None
) -> _LogRun:
    """Replay logged calls one converse each; a blocked call is skipped and the replay goes on,
    as a caller that catches the violation would."""
    client = ReplayRuntimeClient()
    runtime: dict[str, Any] = {}
    blocked: list[tuple[str, int, int]] = []
    call_costs: list[int] = []
    sessions: dict[str, SessionUsage] = {}
    for index, call in enumerate(calls):
        session_id = call.session_id or default_session
        if session_id not in sessions:
            sessions[session_id] = guard.session_usage(session_id)
        wrapped = runtime.get(session_id)
        if wrapped is None:
            wrapped = runtime[session_id] = guard.wrap(client, workflow=workflow, session_id=session_id)
        if clock is not None:
            clock.at(call.at_s)
        client.next_call = call
        before = guard.ledger.session_totals(session_id).cost_nanos
        try:
            wrapped.converse(modelId=call.model_id, messages=[])
        except PolicyViolation as violation:
            blocked.append((violation.rule, call.line, index))
        call_costs.append(guard.ledger.session_totals(session_id).cost_nanos - before)
    kept_calls = 0
    kept_cost = Decimal(0)
    for session_id, start in sessions.items():
        after = guard.session_usage(session_id)
        kept_calls += after.model_calls - start.model_calls
        kept_cost += after.cost_usd - start.cost_usd
    return _LogRun(kept_calls, kept_cost, call_costs, blocked)


def _baseline_guard(scratch: str, pricing: PriceCatalog, clock: RecordedClock | None) -> Guard:
    return Guard(PolicySet.empty(), ledger=f"sqlite:///{scratch}/full.db", pricing=pricing, write_interval_s=0,
                 clock=clock if clock is not None else time.time)


def _replay_log(recording: Recording, guard: Guard, workflow: str, pricing: PriceCatalog, clock: RecordedClock | None) -> ReplayResult:
    path = recording.path
    calls = recording.calls or []
    default_session = f"replay-{path.stem}"
    with tempfile.TemporaryDirectory(prefix="costguard-replay-") as scratch:
        baseline_guard = _baseline_guard(scratch, pricing, clock)
        try:
            full = _run_log(baseline_guard, workflow, default_session, calls, clock)
        finally:
            baseline_guard.close()
    violations_before = len(guard.ledger.violations(workflow=workflow))
    kept = _run_log(guard, workflow, default_session, calls, clock)
    new = guard.ledger.violations(workflow=workflow)
    new = new[: max(0, len(new) - violations_before)]
    caps = [CapHit(rule, str(path), line, 1, nanos_to_usd(full.call_costs[index])) for rule, line, index in kept.blocked]
    return ReplayResult(
        file=str(path),
        session_id=calls[0].session_id or default_session,
        events=len(calls),
        model_calls_full=full.kept_calls,
        cost_full=full.kept_cost,
        model_calls_kept=kept.kept_calls,
        cost_kept=kept.kept_cost,
        capped_by=caps[0].rule if caps else None,
        capped_at_event=caps[0].at_event if caps else None,
        violations=[v.to_dict() for v in reversed(new)],
        caps=caps,
    )


def replay_file(
    path: Path | Recording,
    guard: Guard,
    workflow: str,
    *,
    pricing: PriceCatalog,
    clock: RecordedClock | None = None,
) -> ReplayResult:
    """Replay one recording twice: unlimited (what it cost) and under ``guard``'s policies.

    ``clock``: the ``RecordedClock`` that ``guard`` was built with, to book the replay at the
    recorded times; None replays at the guard's own clock.
    """
    recording = path if isinstance(path, Recording) else load_recording(path)
    if recording.is_log:
        return _replay_log(recording, guard, workflow, pricing, clock)
    session_id = f"replay-{recording.path.stem}"
    for event in recording.events:
        trace = event.get("trace")
        if isinstance(trace, dict) and trace.get("sessionId"):
            session_id = str(trace["sessionId"])
            break
    with tempfile.TemporaryDirectory(prefix="costguard-replay-") as scratch:
        baseline_guard = _baseline_guard(scratch, pricing, clock)
        try:
            full, _, _ = _run(baseline_guard, workflow, session_id, recording, clock)
        finally:
            baseline_guard.close()
    before = guard.session_usage(session_id)
    kept, capped, read = _run(guard, workflow, session_id, recording, clock)
    new_violations = kept.violations[: len(kept.violations) - len(before.violations)]
    kept_calls = kept.model_calls - before.model_calls
    kept_cost = kept.cost_usd - before.cost_usd
    caps = []
    if capped:
        caps.append(CapHit(capped, str(recording.path), read, full.model_calls - kept_calls, full.cost_usd - kept_cost))
    return ReplayResult(
        file=str(recording.path),
        session_id=session_id,
        events=len(recording.events),
        model_calls_full=full.model_calls,
        cost_full=full.cost_usd,
        model_calls_kept=kept_calls,
        cost_kept=kept_cost,
        capped_by=capped,
        capped_at_event=read if capped else None,
        violations=[v.to_dict() for v in new_violations],
        caps=caps,
    )


# -- a whole simulation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSummary:
    """Every hit of one rule across the replayed files, and what those hits avoided."""

    rule: str
    hits: int
    files: int
    model_calls_avoided: int
    cost_avoided: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "hits": self.hits,
            "files": self.files,
            "model_calls_avoided": self.model_calls_avoided,
            "cost_avoided_usd": format(self.cost_avoided, "f"),
        }


def summarize_caps(results: Sequence[ReplayResult]) -> list[RuleSummary]:
    """Cap hits grouped by rule, the rule that avoided the most cost first."""
    grouped: dict[str, list[CapHit]] = {}
    for result in results:
        for hit in result.caps:
            grouped.setdefault(hit.rule, []).append(hit)
    summaries = [
        RuleSummary(
            rule,
            len(hits),
            len({h.file for h in hits}),
            sum(h.model_calls_avoided for h in hits),
            sum((h.cost_avoided for h in hits), Decimal(0)),
        )
        for rule, hits in grouped.items()
    ]
    return sorted(summaries, key=lambda s: (-s.cost_avoided, s.rule))


@dataclass(slots=True)
class Simulation:
    """The replay of every file under the policies; in shadow mode also what enforcing would cap."""

    workflow: str
    mode: str
    results: list[ReplayResult]
    would: list[ReplayResult] | None = None  # shadow mode: the same files with the workflow enforced

    @property
    def rules(self) -> list[RuleSummary]:
        return summarize_caps(self.results)

    @property
    def would_rules(self) -> list[RuleSummary]:
        return summarize_caps(self.would or [])

    def to_dict(self) -> dict[str, Any]:
        total_full = sum((r.cost_full for r in self.results), Decimal(0))
        total_avoided = sum((r.cost_avoided for r in self.results), Decimal(0))
        doc: dict[str, Any] = {
            "workflow": self.workflow,
            "mode": self.mode,
            "files": [r.to_dict() for r in self.results],
            "caps_by_rule": [s.to_dict() for s in self.rules],
            "total": {"cost_full_usd": format(total_full, "f"), "cost_avoided_usd": format(total_avoided, "f")},
        }
        if self.would is not None:
            doc["would_have_capped"] = {
                "files": [r.to_dict() for r in self.would],
                "caps_by_rule": [s.to_dict() for s in self.would_rules],
                "cost_avoided_usd": format(sum((r.cost_avoided for r in self.would), Decimal(0)), "f"),
            }
        return doc


def enforced(policies: PolicySet, workflow: str) -> PolicySet:
    """``policies`` with ``workflow`` switched from shadow to enforce (for "would have capped")."""
    policy = policies.for_workflow(workflow).model_copy(update={"mode": "enforce"})
    others = {name: p for name, p in policies.workflows.items() if name != workflow}
    return PolicySet({**others, workflow: policy}, policies.defaults, policies.sources)


def simulate(
    paths: Sequence[Path | Recording],
    policies: PolicySet,
    workflow: str,
    *,
    ledger: Ledger,
    pricing: PriceCatalog,
    recorded_time: bool = True,
    seed: Sequence[BudgetCounter] = (),
    on_file: Callable[[], None] | None = None,
) -> Simulation:
    """Replay ``paths`` into ``ledger`` under ``policies`` as ``workflow``.

    Every file is parsed before anything is replayed, so a malformed file leaves the ledger
    untouched. ``recorded_time`` books the usage at the recorded times (else now). A workflow in
    shadow mode is replayed a second time, enforced, into a scratch ledger whose budget counters
    start at ``seed`` (else where ``ledger``'s stood), for the "would have capped" figures.
    """
    recordings = [path if isinstance(path, Recording) else load_recording(path) for path in paths]
    mode = policies.for_workflow(workflow).mode
    if mode == "shadow" and not seed:
        seed = ledger.budget_counters()  # the enforced replay starts where the target stood
    results = _replay_all(recordings, policies, workflow, ledger, pricing, recorded_time, on_file)
    would = None
    if mode == "shadow":
        with tempfile.TemporaryDirectory(prefix="costguard-would-") as scratch:
            scratch_ledger = SQLiteLedger(Path(scratch) / "would.db")
            try:
                scratch_ledger.seed_budget_counters(seed)
                would = _replay_all(recordings, enforced(policies, workflow), workflow, scratch_ledger, pricing, recorded_time, None)
            finally:
                scratch_ledger.close()
    return Simulation(workflow, mode, results, would)


def _replay_all(
    recordings: Sequence[Recording],
    policies: PolicySet,
    workflow: str,
    ledger: Ledger,
    pricing: PriceCatalog,
    recorded_time: bool,
    on_file: Callable[[], None] | None,
) -> list[ReplayResult]:
    clock = RecordedClock() if recorded_time else None
    # A replay reads the ledger between calls and runs on a recorded clock: synchronous writes.
    guard = Guard(policies, ledger=ledger, pricing=pricing, clock=clock if clock is not None else time.time,
                  write_interval_s=0)
    try:
        results = []
        for recording in recordings:
            results.append(replay_file(recording, guard, workflow, pricing=pricing, clock=clock))
            if on_file is not None:
                on_file()
        return results
    finally:
        guard.flush_metrics()  # the ledger stays open: it belongs to the caller
