"""reconcile --lambda: Cost Explorer's AWS Lambda spend for tagged functions beside what
action_guard metered (moto Cost Explorer and CloudWatch, a real SQLite ledger)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from costguard.ledger.sqlite import SQLiteLedger
from costguard.reconcile import Reconciler
from costguard.usage import ActionRecord
from tests.functional.test_reconcile_aws import (
    NOW,
    POLICIES,
    TAG,
    WINDOW,
    answer_dimension_values,
    capture,
    ce_day,
    ce_group,
    ms,
    seed_ce,
)


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(tmp_path / "l.db")
    yield led
    led.close()


def action(workflow: str, day: str, nanos: int) -> ActionRecord:
    return ActionRecord(ms(day), workflow, "claims get_claim", "s-1", None, 10, 10, 0, 0, 0, "passed",
                        cost_nanos=nanos, billed_ms=250, memory_mb=1024, architecture="arm64")


def test_lambda_spend_of_tagged_functions_beside_the_metered_figure(ledger: SQLiteLedger) -> None:
    # GIVEN action group invocations metered on the 20th (two) and the 21st (one), one before the window
    for day, nanos in (("2026-11-19", 9_999), ("2026-11-20", 3_533), ("2026-11-20", 3_533), ("2026-11-21", 6_867)):
        ledger.record_action(action("claims-intake", day, nanos))
    with mock_aws():
        # AND Cost Explorer: the Bedrock queries' pages (per model, per workflow tag), then the AWS Lambda query's page
        seed_ce([
            {"ResultsByTime": [ce_day("2026-11-20", []), ce_day("2026-11-21", [])]},
            {"ResultsByTime": [ce_day("2026-11-20", []), ce_day("2026-11-21", [])]},
            {"ResultsByTime": [
                ce_day("2026-11-20", [ce_group("claims-intake", "USE1-Lambda-GB-Second-ARM", "0.0000068"),
                                      ce_group("claims-intake", "USE1-Request", "0.0000004")]),
                ce_day("2026-11-21", [ce_group("", "USE1-Request", "0.0000002")], estimated=True),
            ]},
        ])
        ce = boto3.client("ce", region_name="us-east-1")
        answer_dimension_values(ce, ["Amazon Bedrock"])
        seen = capture(ce, "GetCostAndUsage")
        reconciler = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch", region_name="us-east-1"),
                                clock=lambda: NOW, include_lambda=True)
        result = reconciler.run(WINDOW)
    # THEN after the two Bedrock queries, the third asks for AWS Lambda, grouped by the workflow tag
    assert len(seen) == 3 and all("Amazon Bedrock" in str(q["Filter"]) for q in seen[:2])
    assert seen[2]["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": ["AWS Lambda"]}}
    assert seen[2]["GroupBy"][0] == {"Type": "TAG", "Key": TAG}
    assert result.api_calls["ce:GetCostAndUsage"] == 3
    # AND each workflow-day has metered and billed Lambda spend side by side
    assert result.lambda_spend is not None
    rows = {(r["workflow"], r["day"]): r for r in result.lambda_spend.to_dict("records")}
    assert set(rows) == {("claims-intake", "2026-11-20"), ("claims-intake", "2026-11-21"), ("(untagged)", "2026-11-21")}
    day20 = rows[("claims-intake", "2026-11-20")]
    assert (day20["metered_lambda_usd"], day20["billed_lambda_usd"], day20["invocations"]) == (
        Decimal("0.000007066"), Decimal("0.0000072"), 2)
    assert day20["drift_usd"] == Decimal("0.0000072") - Decimal("0.000007066")
    day21 = rows[("claims-intake", "2026-11-21")]
    assert (day21["metered_lambda_usd"], day21["billed_lambda_usd"]) == (Decimal("0.000006867"), Decimal(0))
    assert rows[("(untagged)", "2026-11-21")]["billed_lambda_usd"] == Decimal("0.0000002")


def test_lambda_spend_is_not_queried_unless_asked(ledger: SQLiteLedger) -> None:
    with mock_aws():
        seed_ce([{"ResultsByTime": [ce_day("2026-11-20", [])]}] * 2)
        ce = boto3.client("ce", region_name="us-east-1")
        answer_dimension_values(ce, ["Amazon Bedrock"])
        result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch", region_name="us-east-1"),
                            clock=lambda: NOW).run(WINDOW)
    assert result.api_calls["ce:GetCostAndUsage"] == 2 and result.lambda_spend is None  # Bedrock per model and per tag
