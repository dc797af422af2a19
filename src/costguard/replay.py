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
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from costguard.errors import CostguardError, PolicyViolation
from costguard.meter import Guard
from costguard.policy import PolicySet
from costguard.pricing import PriceCatalog
from costguard.usage import SessionUsage


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


def is_invocation_log(record: dict[str, Any]) -> bool:
    return record.get("schemaType") == "ModelInvocationLog" or (
        "modelId" in record and isinstance(record.get("input"), dict) and "inputTokenCount" in record["input"]
    )


def read_recording(path: Path) -> list[dict[str, Any]]:
    """The events of one InvokeAgent recording, ``chunk.bytes`` decoded back to bytes."""
    return _agent_events(path, _json_lines(path))


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

        metadata = record.get("requestMetadata") if isinstance(record.get("requestMetadata"), dict) else {}
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
            )
        )
    return calls


class _ReplayStream:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events
        self.read = 0
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._events:
            if self.closed:
                return
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

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events
        self.stream: _ReplayStream | None = None

    def invoke_agent(self, **_: Any) -> dict[str, Any]:
        self.stream = _ReplayStream(self._events)
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
            "violations": self.violations,
        }


def _run(guard: Guard, workflow: str, session_id: str, events: list[dict[str, Any]]) -> tuple[SessionUsage, str | None, int]:
    client = ReplayAgentClient(events)
    agents = guard.wrap(client, workflow=workflow)
    capped: str | None = None
    response = agents.invoke_agent(agentId="replay", agentAliasId="replay", sessionId=session_id, inputText="", enableTrace=True)
    try:
        for _ in response["completion"]:
            pass
    except PolicyViolation as violation:
        capped = violation.rule
    read = client.stream.read if client.stream else 0
    return guard.session_usage(session_id), capped, read


def _run_log(guard: Guard, workflow: str, default_session: str, calls: list[LoggedCall]) -> tuple[int, Decimal, str | None, int | None, int]:
    """Replay logged calls one converse each; a blocked call is skipped and the replay goes on,
    as a caller that catches the violation would. Returns calls kept, their cost, the first cap
    and its record number, and the number of violations raised."""
    client = ReplayRuntimeClient()
    runtime = {}
    first_rule: str | None = None
    first_line: int | None = None
    raised = 0
    sessions: dict[str, SessionUsage] = {}
    for call in calls:
        session_id = call.session_id or default_session
        if session_id not in sessions:
            sessions[session_id] = guard.session_usage(session_id)
        wrapped = runtime.get(session_id)
        if wrapped is None:
            wrapped = runtime[session_id] = guard.wrap(client, workflow=workflow, session_id=session_id)
        client.next_call = call
        try:
            wrapped.converse(modelId=call.model_id, messages=[])
        except PolicyViolation as violation:
            raised += 1
            if first_rule is None:
                first_rule, first_line = violation.rule, call.line
    kept_calls = 0
    kept_cost = Decimal(0)
    for session_id, before in sessions.items():
        after = guard.session_usage(session_id)
        kept_calls += after.model_calls - before.model_calls
        kept_cost += after.cost_usd - before.cost_usd
    return kept_calls, kept_cost, first_rule, first_line, raised


def _replay_log(path: Path, calls: list[LoggedCall], guard: Guard, workflow: str, pricing: PriceCatalog) -> ReplayResult:
    default_session = f"replay-{path.stem}"
    with tempfile.TemporaryDirectory(prefix="costguard-replay-") as scratch:
        baseline_guard = Guard(PolicySet.empty(), ledger=f"sqlite:///{scratch}/full.db", pricing=pricing)
        try:
            full_calls, full_cost, _, _, _ = _run_log(baseline_guard, workflow, default_session, calls)
        finally:
            baseline_guard.close()
    violations_before = len(guard.ledger.violations(workflow=workflow))
    kept_calls, kept_cost, rule, line, _ = _run_log(guard, workflow, default_session, calls)
    new = guard.ledger.violations(workflow=workflow)
    new = new[: max(0, len(new) - violations_before)]
    return ReplayResult(
        file=str(path),
        session_id=calls[0].session_id or default_session,
        events=len(calls),
        model_calls_full=full_calls,
        cost_full=full_cost,
        model_calls_kept=kept_calls,
        cost_kept=kept_cost,
        capped_by=rule,
        capped_at_event=line,
        violations=[v.to_dict() for v in reversed(new)],
    )


def replay_file(
    path: Path,
    guard: Guard,
    workflow: str,
    *,
    pricing: PriceCatalog,
) -> ReplayResult:
    """Replay one recording twice: unlimited (what it cost) and under ``guard``'s policies."""
    records = _json_lines(path)
    if is_invocation_log(records[0][1]):
        return _replay_log(path, _logged_calls(path, records), guard, workflow, pricing)
    events = _agent_events(path, records)
    session_id = f"replay-{path.stem}"
    for event in events:
        trace = event.get("trace")
        if isinstance(trace, dict) and trace.get("sessionId"):
            session_id = str(trace["sessionId"])
            break
    with tempfile.TemporaryDirectory(prefix="costguard-replay-") as scratch:
        baseline_guard = Guard(PolicySet.empty(), ledger=f"sqlite:///{scratch}/full.db", pricing=pricing)
        try:
            full, _, _ = _run(baseline_guard, workflow, session_id, events)
        finally:
            baseline_guard.close()
    before = guard.session_usage(session_id)
    kept, capped, read = _run(guard, workflow, session_id, events)
    new_violations = kept.violations[: len(kept.violations) - len(before.violations)]
    return ReplayResult(
        file=str(path),
        session_id=session_id,
        events=len(events),
        model_calls_full=full.model_calls,
        cost_full=full.cost_usd,
        model_calls_kept=kept.model_calls - before.model_calls,
        cost_kept=kept.cost_usd - before.cost_usd,
        capped_by=capped,
        capped_at_event=read if capped else None,
        violations=[v.to_dict() for v in new_violations],
    )
