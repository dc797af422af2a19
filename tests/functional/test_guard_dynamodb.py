"""Two hosts (two Guards) sharing one DynamoDB ledger: per-session caps and budgets hold across them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

import costguard
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.policy import PolicySet
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        create_table("shared", client=boto3.client("dynamodb", region_name="us-east-1"))
        yield "shared"
        while HOSTS:
            HOSTS.pop().close()


HOSTS: list[costguard.Guard] = []


def host(policies: PolicySet) -> costguard.Guard:
    """A Guard as a separate host would build it: its own client, its own in-process caches."""
    ledger = DynamoDBLedger("shared", client=boto3.client("dynamodb", region_name="us-east-1"))
    HOSTS.append(costguard.Guard(policies, ledger=ledger))
    return HOSTS[-1]


def test_session_cap_and_kill_switch_are_shared_between_hosts(fake: FakeBedrock, table: Any, tmp_path: Path) -> None:
    policies = PolicySet.from_dict({"version": 1, "workflows": {"wf": {"per_session": {"max_model_calls": 3}}}})
    a, b = host(policies), host(policies)
    on_a = a.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    on_b = b.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    # GIVEN two calls of session s-1 on host A and one on host B
    for _ in range(3):
        fake.queue_converse(100, 10)
    on_a.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    on_a.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    # (the session moves to B after A's writer has written: within a second, or at A's flush;
    # B reads the session once, then counts its own calls: docs/ledgers.md states the bound)
    a.flush()
    on_b.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    # WHEN host B tries a fourth call of the session
    # THEN it is refused before it is sent: B saw A's calls through the shared table
    with pytest.raises(costguard.LoopCapExceeded) as info:
        on_b.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert info.value.rule == "per_session.max_model_calls" and len(fake.requests) == 3
    b.flush()
    usage = a.session_usage("s-1")
    assert (usage.model_calls, usage.input_tokens) == (3, 300)
    # AND a kill switch set through host A stops host B (after its 2 s cache)
    a.ledger.set_kill_switch("wf", "runaway", "test", 0)
    fresh = host(policies).wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-2")
    with pytest.raises(costguard.WorkflowBlocked):
        fresh.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert len(fake.requests) == 3


def test_shared_daily_budget_refuses_the_host_that_would_overspend(fake: FakeBedrock, table: Any) -> None:
    # A $0.0001 daily budget: Nova Micro at 1000 in / 100 out costs $0.000049 a call.
    policies = PolicySet.from_dict({"version": 1, "workflows": {"wf": {"budget": {"daily_usd": "0.0001", "on_exhausted": "block"}}}})
    a, b = host(policies), host(policies)
    sent = 0
    refused = 0
    for guard in (a, b, a, b):
        fake.queue_converse(1000, 100)
        try:
            guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-b").converse(modelId=NOVA_MICRO, messages=MESSAGES)
            sent += 1
        except costguard.BudgetExceeded:
            refused += 1
    # THEN A's first call holds the whole room (nothing learned yet) and B's first the rest; once
    # each host knows a call costs $0.000049, neither sends one into the $0.000002 left
    for guard in (a, b):  # the hosts' slices go back (at close, idle, or lease expiry)
        guard.flush(release_slices=True)
    [day] = [c for c in a.ledger.budget_counters("wf") if c.period.startswith("day:")]
    assert (sent, refused) == (2, 2) and len(fake.requests) == 2
    assert day.spent_nanos == 2 * 49_000 and day.reserved_nanos == 0
    assert day.spent_nanos <= 100_000
