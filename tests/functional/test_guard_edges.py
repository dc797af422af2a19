"""Edge cases of the Guard: unpriced models, failing ledgers, agent configs read through moto."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import costguard
from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet
from tests.support.traces import Loop, agent_loop
from tests.support.wire import FakeBedrock

NOVA_PRO = "amazon.nova-pro-v1:0"


def policy(body: str) -> PolicySet:
    return PolicySet.from_yaml("version: 1\nworkflows:\n  wf:\n" + "\n".join("    " + line for line in body.strip().splitlines()))


def invoke(agents: Any, session: str = "s-1") -> list[dict[str, Any]]:
    response = agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId=session, inputText="hi")
    return list(response["completion"])


class BrokenLedger(SQLiteLedger):
    """A ledger whose every hot-path call fails, as an unreachable store would."""

    def kill_switch(self, workflow: str, now_ms: int) -> Any:
        raise LedgerError("ledger unreachable")

    def session_totals(self, session_id: str) -> Any:
        raise LedgerError("ledger unreachable")

    def record(self, segment: Any) -> None:
        raise LedgerError("ledger unreachable")


def test_unpriced_model_alert_prices_at_fallback_and_records(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(Loop().model_call("acme.mystery-model-v1:0", 1000, 100, "t").answer().events)
    guard = costguard.Guard(policy("unpriced: alert"), ledger=f"sqlite:///{tmp_path}/l.db")
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    usage = guard.session_usage("s-1")
    # The fallback is the catalog's dearest prices (Claude Mythos Preview: $27.50 in, $137.50 out per 1M)
    assert usage.cost_usd == 1000 * Decimal("27.50") / 10**6 + 100 * Decimal("137.50") / 10**6 == Decimal("0.04125")
    assert [(v.rule, v.enforced) for v in usage.violations] == [("unpriced", False)]


def test_unpriced_model_block_stops_the_stream(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(agent_loop(3, model="acme.mystery-model-v1:0").events)
    guard = costguard.Guard(policy("unpriced: block"), ledger=f"sqlite:///{tmp_path}/l.db")
    with pytest.raises(costguard.ModelNotAllowed) as caught:
        invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    assert caught.value.rule == "unpriced"


def test_ledger_down_fails_open_or_closed_per_policy(fake: FakeBedrock, tmp_path: Path) -> None:
    ledger = BrokenLedger(tmp_path / "l.db")
    fake.queue_agent_response(agent_loop(1).events)
    # Synchronous writes (write_interval_s=0): each failure is met on the caller's path; the
    # batched writer's failures are tested in tests/faults/test_writer.py.
    open_guard = costguard.Guard(policy("on_ledger_error: allow"), ledger=ledger, write_interval_s=0)
    assert invoke(open_guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))[-1] == {"chunk": {"bytes": b"done"}}
    # Three gaps: the kill-switch read and the session read before the call, the final write after
    assert open_guard.ledger_gaps == 3
    closed_guard = costguard.Guard(policy("on_ledger_error: deny"), ledger=ledger, write_interval_s=0)
    with pytest.raises(LedgerError):
        invoke(closed_guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    assert len(fake.requests) == 1  # denied before anything was sent


def test_model_from_agent_configuration_when_traces_name_none(fake: FakeBedrock, tmp_path: Path) -> None:
    with mock_aws():
        control = boto3.client("bedrock-agent", region_name="us-east-1")
        role = "arn:aws:iam::123456789012:role/AmazonBedrockExecutionRoleForAgents_test"
        agent_id = control.create_agent(agentName="claims", foundationModel=NOVA_PRO, agentResourceRoleArn=role)["agent"]["agentId"]
        events = Loop().model_call(None, 2000, 100, "t").answer().events
        for event in events:
            if "trace" in event:
                event["trace"]["agentId"] = agent_id
                event["trace"]["agentVersion"] = "DRAFT"
        fake.queue_agent_response(events)
        guard = costguard.Guard(policy("mode: enforce"), ledger=f"sqlite:///{tmp_path}/l.db", agent_client=control)
        invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    guard.flush()
    row = guard.ledger.connection().execute("SELECT model_id, cost_nanos FROM model_calls").fetchone()  # type: ignore[attr-defined]
    assert row == (NOVA_PRO, 2000 * 800 + 100 * 3200)
    assert guard.session_usage("s-1").cost_usd == Decimal("0.00192")


def test_default_model_when_nothing_names_one(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(Loop().model_call(None, 1000, 0, "t").answer().events)
    guard = costguard.Guard(policy(f"default_model: {NOVA_PRO}"), ledger=f"sqlite:///{tmp_path}/l.db")
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    assert guard.session_usage("s-1").cost_usd == Decimal("0.0008")


def test_user_ids_stored_as_keyed_hashes(fake: FakeBedrock, tmp_path: Path) -> None:
    fake.queue_agent_response(agent_loop(1).events)
    guard = costguard.Guard(None, ledger=f"sqlite:///{tmp_path}/l.db", user_id_key="k")
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", user_id="alice@example.com"))
    stored = guard.session_usage("s-1").user_id
    assert stored is not None and stored.startswith("h:") and "alice" not in stored


def test_guard_accepts_a_policy_path_and_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("version: 1\nworkflows:\n  wf:\n    per_request: {max_model_calls: -1}\n")
    with pytest.raises(costguard.PolicyError) as caught:
        costguard.Guard(str(bad), ledger=f"sqlite:///{tmp_path}/l.db")
    assert caught.value.errors[0].line == 4


def test_no_prompt_output_or_tool_text_is_persisted(fake: FakeBedrock, tmp_path: Path) -> None:
    marker = "SECRET-CLAIMANT-4411"
    loop = Loop().model_call(NOVA_PRO, 10, 10, "t").action_group('{"ssn": "' + marker + '"}', "t").answer(marker)
    loop.events.insert(0, {"trace": {"agentId": "AGENT1", "sessionId": "s-1", "trace": {"orchestrationTrace": {"rationale": {"traceId": "t", "text": marker}}}}})
    fake.queue_agent_response(loop.events)
    guard = costguard.Guard(policy("per_request: {max_tool_response_bytes: 5}\nmode: shadow"), ledger=f"sqlite:///{tmp_path}/l.db")
    invoke(guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf"))
    guard.close()
    dump = "\n".join(SQLiteLedger(tmp_path / "l.db").connection().iterdump())
    assert "ACTION_GROUP" in dump and marker not in dump
