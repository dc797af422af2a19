"""simulate replays show stuck loops and pin violations like every other cap."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

from costguard.meter import Guard
from costguard.policy import PolicySet
from costguard.pricing import PriceCatalog
from costguard.replay import replay_file
from tests.support.traces import SONNET, Loop

NOVA_MICRO = "amazon.nova-micro-v1:0"


def write_agent_recording(path: Path, loop: Loop) -> Path:
    lines = []
    for event in loop.events:
        if "chunk" in event:
            event = {"chunk": {"bytes": base64.b64encode(event["chunk"]["bytes"]).decode()}}
        lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n")
    return path


def log_record(model: str, session: str) -> dict[str, object]:
    return {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "operation": "Converse", "modelId": model,
            "input": {"inputTokenCount": 1000}, "output": {"outputTokenCount": 100},
            "requestMetadata": {"sessionId": session}}


def guard_for(tmp_path: Path, section: dict[str, object], pricing: PriceCatalog) -> Guard:
    policies = PolicySet.from_dict({"version": 1, "workflows": {"wf": section}})
    return Guard(policies, ledger=f"sqlite:///{tmp_path}/l.db", pricing=pricing)


def test_replay_of_a_stuck_agent_shows_the_repeat_cap(tmp_path: Path) -> None:
    # GIVEN a recorded agent asking for page 1 eight times
    loop = Loop().model_call(SONNET, 800, 40, "pre", kind="preProcessingTrace")
    for step in range(8):
        loop.model_call(SONNET, 1000, 50, f"t-{step}")
        loop.action_group("[]", f"t-{step}", function="search", parameters=[{"name": "page", "type": "integer", "value": "1"}])
    path = write_agent_recording(tmp_path / "stuck.jsonl", loop.answer())
    pricing = PriceCatalog.shipped()
    guard = guard_for(tmp_path, {"per_request": {"max_repeated_tool_calls": 2}}, pricing)
    # WHEN it is replayed under max_repeated_tool_calls: 2
    result = replay_file(path, guard, "wf", pricing=pricing)
    guard.close()
    # THEN the replay is capped at the third identical call: 4 model calls kept of 9
    assert result.capped_by == "per_request.max_repeated_tool_calls"
    assert (result.model_calls_full, result.model_calls_kept) == (9, 4)
    kept = Decimal(800 * 3 + 3 * 1000 * 3) / 1_000_000 + Decimal(40 * 15 + 3 * 50 * 15) / 1_000_000
    assert result.cost_kept == kept
    (violation,) = result.violations
    assert (violation["rule"], violation["observed"], violation["detail"]["tool"]) == (
        "per_request.max_repeated_tool_calls", "3", "claims::search")


def test_replay_of_invocation_logs_shows_pin_violations(tmp_path: Path) -> None:
    # GIVEN logged calls of session s-1 that switch from Nova Micro to Claude, and of s-2 on Claude
    records = [log_record(NOVA_MICRO, "s-1"), log_record("us." + NOVA_MICRO, "s-1"), log_record(SONNET, "s-1"),
               log_record(SONNET, "s-2")]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    pricing = PriceCatalog.shipped()
    guard = guard_for(tmp_path, {"models": {"pin": "session"}}, pricing)
    # WHEN replayed under models.pin: session
    result = replay_file(path, guard, "wf", pricing=pricing)
    guard.close()
    # THEN the switch is refused (record 3), the other calls kept
    assert (result.capped_by, result.capped_at_event) == ("models.pin", 3)
    assert (result.model_calls_full, result.model_calls_kept) == (4, 3)
    (violation,) = result.violations
    assert (violation["limit"], violation["observed"], violation["session_id"]) == (NOVA_MICRO, SONNET, "s-1")
