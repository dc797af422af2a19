"""The Guard's own metrics: stock boto3 clients on the local wire endpoint, an EMF sink on a StringIO."""

from __future__ import annotations

import io
import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EventStreamError

import costguard
from costguard.errors import LedgerError
from costguard.metrics import EMFMetricsSink
from costguard.policy import PolicySet
from tests.support.traces import SONNET, agent_loop
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


def guard_with_emf(tmp_path: Path, yaml_workflow: str = "mode: enforce", **options: Any) -> tuple[costguard.Guard, io.StringIO]:
    policies = PolicySet.from_yaml(
        "version: 1\nworkflows:\n  triage:\n" + "\n".join("    " + line for line in yaml_workflow.strip().splitlines())
    )
    stream = io.StringIO()
    guard = costguard.Guard(policies, ledger=f"sqlite:///{tmp_path}/ledger.db", metrics=EMFMetricsSink(stream=stream), **options)
    return guard, stream


def flushed(guard: costguard.Guard, stream: io.StringIO) -> list[dict[str, Any]]:
    guard.flush_metrics()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Costguard"
        assert all(isinstance(line[key], str) for key in directive["Dimensions"][0])
        assert all(isinstance(line[m["Name"]], (int, float)) for m in directive["Metrics"])
    return lines


def series(lines: list[dict[str, Any]], **dims: str) -> dict[str, Any]:
    """The metrics of one dimension set, merged across lines."""
    merged: dict[str, Any] = {}
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        if directive["Dimensions"] == [sorted(dims)] and all(line.get(k) == v for k, v in dims.items()):
            for metric in directive["Metrics"]:
                merged[metric["Name"]] = line[metric["Name"]]
    return merged


def test_converse_calls_emit_model_metrics_per_workflow_and_base_model(fake: FakeBedrock, tmp_path: Path) -> None:
    # GIVEN a guard with an EMF sink and two Converse calls on Nova Micro (one through a profile id)
    guard, stream = guard_with_emf(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="triage", session_id="c-1")
    fake.queue_converse(100, 10, cache_read=50)
    fake.queue_converse(200, 20, cache_write=7)
    runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    runtime.converse(modelId=f"us.{NOVA_MICRO}", messages=MESSAGES)
    # WHEN the metrics are flushed
    lines = flushed(guard, stream)
    # THEN one line carries both calls under Workflow=triage, ModelId=<base model>
    nova = series(lines, Workflow="triage", ModelId=NOVA_MICRO)
    assert (nova["ModelCalls"], nova["InputTokens"], nova["OutputTokens"]) == (2, 300, 30)
    assert (nova["CacheReadTokens"], nova["CacheWriteTokens"]) == (50, 7)
    # AND the cost is Nova Micro's published prices ($0.035 in and cache write, $0.14 out,
    # $0.00875 cache read per 1M), each call stored in whole nano-dollars (half-even)
    first = (100 * Decimal("0.035") + 10 * Decimal("0.14") + 50 * Decimal("0.00875")) / 10**6
    second = (200 * Decimal("0.035") + 20 * Decimal("0.14") + 7 * Decimal("0.035")) / 10**6
    assert (first, second) == (Decimal("0.0000053375"), Decimal("0.000010045"))
    expected = first.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN) + second
    assert guard.session_usage("c-1").cost_usd == expected == Decimal("0.000015383")
    assert nova["CostUSD"] == float(expected)
    units = {m["Name"]: m["Unit"] for line in lines for m in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["CostUSD"] == "None" and units["ModelCalls"] == "Count"
    assert guard.metrics_errors == 0


def test_an_agent_loop_emits_model_tool_and_violation_metrics(fake: FakeBedrock, tmp_path: Path) -> None:
    loop = agent_loop(3, tool_bytes=700)
    fake.queue_agent_response(loop.events)
    guard, stream = guard_with_emf(tmp_path, "mode: shadow\nper_request: {max_tool_response_bytes: 512}")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="triage")
    list(agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-1", inputText="hi")["completion"])
    lines = flushed(guard, stream)
    sonnet = series(lines, Workflow="triage", ModelId=SONNET)
    assert (sonnet["ModelCalls"], sonnet["InputTokens"], sonnet["OutputTokens"]) == (
        loop.model_calls, loop.input_tokens, loop.output_tokens
    )
    tools = series(lines, Workflow="triage")
    assert (tools["ToolCalls"], tools["ToolResponseBytes"]) == (loop.tool_calls, sum(loop.tool_bytes)) == (3, 2100)
    # The shadow violation is recorded once per rule per request.
    assert series(lines, Workflow="triage", Rule="per_request.max_tool_response_bytes") == {"Violations": 1}


def test_a_call_blocked_before_sending_still_counts_its_violation(fake: FakeBedrock, tmp_path: Path) -> None:
    guard, stream = guard_with_emf(tmp_path, "per_session: {max_model_calls: 1}")
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="triage", session_id="c-1")
    fake.queue_converse(10, 1)
    runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    with pytest.raises(costguard.LoopCapExceeded):
        runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    lines = flushed(guard, stream)
    assert series(lines, Workflow="triage", Rule="per_session.max_model_calls") == {"Violations": 1}
    assert series(lines, Workflow="triage", ModelId=NOVA_MICRO)["ModelCalls"] == 1


def test_throttles_are_counted_for_converse_and_agent_streams(fake: FakeBedrock, tmp_path: Path) -> None:
    guard, stream = guard_with_emf(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="triage", session_id="c-1")
    fake.queue_error(429, "ThrottlingException", "slow down", operation="Converse")
    with pytest.raises(ClientError) as info:
        runtime.converse(modelId=f"us.{NOVA_MICRO}", messages=MESSAGES)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    loop = agent_loop(4)
    fake.queue_agent_response(loop.events, exception_after=6)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="triage")
    with pytest.raises(EventStreamError):
        list(agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-1", inputText="hi")["completion"])
    lines = flushed(guard, stream)
    assert series(lines, Workflow="triage", ModelId=NOVA_MICRO) == {"Throttles": 1}
    workflow = series(lines, Workflow="triage")
    assert workflow["Throttles"] == 1  # the agent's: its stream names no throttled model
    # The usage before the throttle is still metered.
    assert series(lines, Workflow="triage", ModelId=SONNET)["ModelCalls"] == 2 and workflow["ToolCalls"] == 1


def test_a_ledger_failure_still_emits_the_segment_and_a_ledger_error(
    fake: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Synchronous writes: the failure meets the call (the writer's own: tests/faults/test_writer.py)
    guard, stream = guard_with_emf(tmp_path, "on_ledger_error: allow", write_interval_s=0)

    def down(*args: Any, **kwargs: Any) -> None:
        raise LedgerError("ledger unreachable")

    monkeypatch.setattr(guard.ledger, "record", down)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="triage", session_id="c-1")
    fake.queue_converse(100, 10)
    runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    lines = flushed(guard, stream)
    assert series(lines, Workflow="triage", ModelId=NOVA_MICRO)["ModelCalls"] == 1
    workflow = series(lines, Workflow="triage")
    # The call's own time to first token (a duration, so not an exact figure) and the ledger error.
    assert set(workflow) == {"LedgerErrors", "TimeToFirstTokenMs"} and workflow["LedgerErrors"] == 1
    assert guard.ledger_gaps == 1


def test_close_flushes_the_sink(fake: FakeBedrock, tmp_path: Path) -> None:
    guard, stream = guard_with_emf(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="triage", session_id="c-1")
    fake.queue_converse(1, 1)
    runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert stream.getvalue() == ""  # buffered, not written per call
    guard.close()
    assert '"ModelCalls":1' in stream.getvalue()
