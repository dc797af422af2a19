"""What-if replay: recorded InvokeAgent responses run through the meter in-process.

A recording is a JSON Lines file, one boto3 ``completion`` event per line, with ``chunk.bytes``
base64-encoded (how JSON carries bytes). :class:`ReplayAgentClient` stands in for a
``bedrock-agent-runtime`` client and yields those events, so the replay goes through exactly the
code path a live call takes: ``Guard.wrap(...).invoke_agent(...)``.
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
from typing import Any

from costguard.errors import CostguardError, PolicyViolation
from costguard.meter import Guard
from costguard.policy import PolicySet
from costguard.pricing import PriceCatalog
from costguard.usage import SessionUsage


class ReplayError(CostguardError):
    """A recording cannot be read (missing file, a line that is not JSON)."""


def read_recording(path: Path) -> list[dict[str, Any]]:
    """The events of one recording, ``chunk.bytes`` decoded back to bytes."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(event, dict):
            raise ReplayError(f"{path}:{number}: an event is a JSON object, got {type(event).__name__}")
        chunk = event.get("chunk")
        if isinstance(chunk, dict) and isinstance(chunk.get("bytes"), str):
            try:
                chunk["bytes"] = base64.b64decode(chunk["bytes"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ReplayError(f"{path}:{number}: chunk.bytes is not base64") from exc
        events.append(event)
    if not events:
        raise ReplayError(f"{path}: no events")
    return events


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


class _Meta:
    class service_model:  # noqa: N801 - mirrors botocore's attribute name
        service_name = "bedrock-agent-runtime"

    region_name = "replay"


class ReplayAgentClient:
    """A bedrock-agent-runtime stand-in whose ``invoke_agent`` answers with a recording."""

    meta = _Meta()

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events
        self.stream: _ReplayStream | None = None

    def invoke_agent(self, **_: Any) -> dict[str, Any]:
        self.stream = _ReplayStream(self._events)
        return {"completion": self.stream, "sessionId": _.get("sessionId"), "contentType": "text/plain"}


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


def replay_file(
    path: Path,
    guard: Guard,
    workflow: str,
    *,
    pricing: PriceCatalog,
) -> ReplayResult:
    """Replay one recording twice: unlimited (what it cost) and under ``guard``'s policies."""
    events = read_recording(path)
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
