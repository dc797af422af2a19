"""The action group Lambda's own cost: billed duration x memory at the published GB-second price,
plus the request price, recorded by action_guard and counted in the session and the budgets.

Expected figures are computed here from AWS's published Lambda prices (us-east-1, first duration
tier: x86_64 $0.0000166667 and arm64 $0.0000133334 per GB-second, $0.20 per 1M requests), never
by calling the code under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

import costguard
from costguard.action_guard import action_guard
from costguard.ledger import Ledger, SQLiteLedger
from costguard.ledger.dynamodb import DynamoDBLedger, create_table
from costguard.policy import PolicySet
from tests.support.wire import FakeBedrock

GB_SECOND = {"x86_64": Decimal("0.0000166667"), "arm64": Decimal("0.0000133334")}
PER_REQUEST = Decimal("0.20") / 1_000_000
T0_MS = 1_764_590_400_000  # 2025-12-01T12:00:00Z


def published_cost(memory_mb: int, billed_ms: int, architecture: str) -> Decimal:
    exact = Decimal(memory_mb) / 1024 * Decimal(billed_ms) / 1000 * GB_SECOND[architecture] + PER_REQUEST
    return exact.quantize(Decimal("1e-9"), rounding=ROUND_HALF_EVEN).normalize()


def event(session: str = "sess-1") -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "agent": {"name": "claims-agent", "id": "AGENT1", "alias": "ALIAS1", "version": "3"},
        "sessionId": session,
        "actionGroup": "claims",
        "function": "get_claim",
        "parameters": [{"name": "id", "type": "string", "value": "C-1"}],
        "sessionAttributes": {},
    }


def guarded(ledger: Ledger, seconds: float, *, policies: PolicySet | None = None) -> Any:
    """A handler that runs ``seconds`` on a fake monotonic timer."""
    now = {"t": 100.0}

    def handler(evt: dict[str, Any], context: Any) -> dict[str, Any]:
        now["t"] += seconds
        return {"messageVersion": "1.0", "response": {"actionGroup": "claims", "function": "get_claim",
                "functionResponse": {"responseBody": {"TEXT": {"body": "claim C-1: open"}}}}}

    policy_set = policies or PolicySet.from_dict({"version": 1, "workflows": {"claims-intake": {}}})
    return action_guard(policy_set, workflow="claims-intake", ledger=ledger, clock=lambda: T0_MS / 1000,
                        timer=lambda: now["t"])(handler)


@pytest.fixture()
def sqlite(tmp_path: Path) -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


@pytest.mark.parametrize("memory_mb", [1024, 512])
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_recorded_cost_is_duration_times_memory_times_price_plus_the_request(
    sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch, memory_mb: int, architecture: str
) -> None:
    # GIVEN an action group Lambda of memory_mb on architecture in us-east-1
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", architecture)
    context = SimpleNamespace(aws_request_id="req-1", memory_limit_in_mb=str(memory_mb))
    # WHEN its handler runs 250.4 ms (billed as 251 ms: Lambda rounds up to the millisecond)
    guarded(sqlite, 0.2504)(event(), context)
    # THEN the action row carries the billed duration, memory, architecture and exact cost
    (record,) = sqlite.actions()
    expected = published_cost(memory_mb, 251, architecture)
    assert (record.billed_ms, record.memory_mb, record.architecture) == (251, memory_mb, architecture)
    assert record.cost_usd == expected
    # AND the cost counts in the session and in the workflow's day and month budget counters
    usage = sqlite.session_usage("sess-1")
    assert usage is not None and usage.cost_usd == expected and usage.workflow == "claims-intake"
    counters = {c.period: c.spent_usd for c in sqlite.budget_counters("claims-intake")}
    assert counters == {"day:2025-12-01": expected, "month:2025-12": expected}


def test_exact_figures_for_the_four_configurations(sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 s at 1024 MB is one GB-second; at 512 MB half of one (the published price, exactly).
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    figures = {}
    for architecture in ("x86_64", "arm64"):
        monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", architecture)
        for mb in (1024, 512):
            guarded(sqlite, 1.0)(event(f"s-{architecture}-{mb}"), SimpleNamespace(memory_limit_in_mb=mb))
            figures[(architecture, mb)] = sqlite.actions()[-1].cost_usd
    assert figures == {
        ("x86_64", 1024): Decimal("0.000016867"),  # 0.0000166667 + 0.0000002 = 0.0000168667 -> 16866.7 n$
        ("x86_64", 512): Decimal("0.000008533"),   # 0.00000833335 + 0.0000002 -> 8533.35 n$
        ("arm64", 1024): Decimal("0.000013533"),   # 0.0000133334 + 0.0000002 -> 13533.4 n$
        ("arm64", 512): Decimal("0.000006867"),    # 0.0000066667 + 0.0000002 -> 6866.7 n$
    }


def test_outside_lambda_nothing_is_priced(sqlite: SQLiteLedger) -> None:
    guarded(sqlite, 0.1)(event(), SimpleNamespace(aws_request_id="req-1"))
    (record,) = sqlite.actions()
    assert (record.cost_nanos, record.billed_ms, record.memory_mb) == (0, None, None)
    assert sqlite.session_usage("sess-1") is None and sqlite.budget_counters() == []


def test_unknown_region_is_priced_at_the_fallback_region_not_at_zero(sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "xx-nowhere-1")
    monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", "arm64")
    guarded(sqlite, 1.0)(event(), SimpleNamespace(memory_limit_in_mb=1024))
    assert sqlite.actions()[0].cost_usd == published_cost(1024, 1000, "arm64")


def test_lambda_cost_counts_toward_per_session_max_cost(
    sqlite: SQLiteLedger, fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a session whose only spend so far is its action group Lambda
    monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", "x86_64")
    guarded(sqlite, 60.0)(event("s-9"), SimpleNamespace(memory_limit_in_mb=10240))
    spent = published_cost(10240, 60_000, "x86_64")
    assert sqlite.session_totals("s-9").cost_nanos == int(spent * 1_000_000_000)
    # THEN the meter's pre-call check sees it against per_session.max_cost_usd
    policies = PolicySet.from_dict({"version": 1, "workflows": {"claims-intake": {"per_session": {"max_cost_usd": "0.001"}}}})
    guard = costguard.Guard(policies, ledger=sqlite)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="claims-intake", session_id="s-9")
    with pytest.raises(costguard.CostCapExceeded) as info:
        runtime.converse(modelId="amazon.nova-micro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert fake.requests == []
    assert info.value.rule == "per_session.max_cost_usd" and info.value.observed == spent


def test_dynamodb_ledger_counts_the_cost_in_session_and_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_REGION": "us-east-1", "COSTGUARD_LAMBDA_ARCHITECTURE": "arm64"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        create_table("t", client=boto3.client("dynamodb", region_name="us-east-1"))
        ledger = DynamoDBLedger("t", client=boto3.client("dynamodb", region_name="us-east-1"))
        guarded(ledger, 0.5)(event(), SimpleNamespace(memory_limit_in_mb="512"))
        expected = published_cost(512, 500, "arm64")
        (record,) = ledger.actions()
        assert (record.cost_usd, record.billed_ms, record.memory_mb, record.architecture) == (expected, 500, 512, "arm64")
        usage = ledger.session_usage("sess-1")
        assert usage is not None and usage.cost_usd == expected
        assert {c.period: c.spent_usd for c in ledger.budget_counters("claims-intake")} == {
            "day:2025-12-01": expected, "month:2025-12": expected}


def test_an_invocation_whose_handler_raises_is_still_billed(sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", "arm64")
    now = {"t": 5.0}

    def handler(evt: dict[str, Any], context: Any) -> dict[str, Any]:
        now["t"] += 0.0301  # 30.1 ms: billed as 31 ms
        raise RuntimeError("backend down")

    guarded_handler = action_guard(PolicySet.empty(), workflow="claims-intake", ledger=sqlite, timer=lambda: now["t"])(handler)
    with pytest.raises(RuntimeError):
        guarded_handler(event(), SimpleNamespace(memory_limit_in_mb=512))
    (record,) = sqlite.actions()
    assert (record.outcome, record.billed_ms, record.cost_usd) == ("error", 31, published_cost(512, 31, "arm64"))


@pytest.mark.parametrize("memory", ["lots", "-1", None, 0])
def test_a_context_without_a_usable_memory_size_prices_nothing(
    sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch, memory: object
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    guarded(sqlite, 0.1)(event(), SimpleNamespace(memory_limit_in_mb=memory))
    assert sqlite.actions()[0].cost_nanos == 0


def test_the_memory_size_falls_back_to_the_runtime_variable(sqlite: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    monkeypatch.setenv("COSTGUARD_LAMBDA_ARCHITECTURE", "x86_64")
    guarded(sqlite, 0.1)(event(), SimpleNamespace())
    assert sqlite.actions()[0].cost_usd == published_cost(512, 100, "x86_64")
