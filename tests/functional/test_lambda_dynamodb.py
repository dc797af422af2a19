"""The scheduled Lambda end to end on what it is deployed with: the real Reconciler, a DynamoDB
ledger, Cost Explorer, CloudWatch, SNS and S3, all moto; kill switches checked in DynamoDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from costguard.ledger import open_ledger
from costguard.ledger.dynamodb import create_table
from costguard.usage import PeriodLimit, Reservation
from tests.functional import test_lambda_handler as lambda_tests
from tests.functional.test_lambda_handler import BUCKET, FakeContext, drain, load_handler, objects
from tests.functional.test_reconcile_aws import answer_dimension_values
from tests.support.ledger_data import segment

TAG = "costguard:workflow"
aws = lambda_tests.aws  # the moto S3/SNS/SQS fixture, shared


@pytest.fixture()
def deployed(aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    create_table("costguard", client=aws["session"].client("dynamodb"))
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(
        "version: 1\nworkflows:\n  claims:\n"
        "    budget: {daily_usd: 10, monthly_usd: 1000, alert_at_pct: [50, 100], on_exhausted: block}\n"
    )
    for key, value in {
        "COSTGUARD_LEDGER": "dynamodb://costguard?region=us-east-1",
        "COSTGUARD_POLICIES": str(policy_file),
        "COSTGUARD_TOPIC_ARN": aws["topic"],
        "COSTGUARD_REPORT_BUCKET": BUCKET,
        "COSTGUARD_REPORT_PREFIX": "reports",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    module = load_handler()
    real = module._make_reconciler

    def make_reconciler(ledger: Any, policies: Any, session: Any, tag_key: str) -> Any:
        reconciler = real(ledger, policies, session, tag_key)
        # moto lacks GetDimensionValues: answer it on the reconciler's own Cost Explorer client.
        answer_dimension_values(reconciler.ce, ["Amazon Bedrock"])
        return reconciler

    monkeypatch.setattr(module, "_make_reconciler", make_reconciler)
    yield {"module": module, **aws}
    module.reset_dependencies()


def test_scheduled_run_blocks_alerts_and_reports_once(deployed: dict[str, Any]) -> None:
    # GIVEN $12 metered today against a $10 daily hard budget, in the shared DynamoDB ledger
    today = datetime.now(UTC).date()
    ledger = open_ledger("dynamodb://costguard?region=us-east-1")
    periods = (PeriodLimit(f"day:{today.isoformat()}", None), PeriodLimit(f"month:{today:%Y-%m}", None))
    noon = int(datetime.combine(today, datetime.min.time(), UTC).timestamp() * 1000) + 1_000
    ledger.record(segment("r-1", 12_000_000_000, workflow="claims", ts_ms=noon, reservation=Reservation("claims", periods, 0)))
    # AND Cost Explorer bills yesterday for the workflow
    yesterday = (today - timedelta(days=1)).isoformat()
    page = {"ResultsByTime": [{"TimePeriod": {"Start": yesterday, "End": today.isoformat()}, "Total": {}, "Estimated": True,
                               "Groups": [{"Keys": [f"{TAG}$claims", "USE1-Claude3Haiku-input-tokens"],
                                           "Metrics": {"UnblendedCost": {"Amount": "3.50", "Unit": "USD"},
                                                       "UsageQuantity": {"Amount": "1", "Unit": "N/A"}}}]}]}
    assert requests.post("http://motoapi.amazonaws.com/moto-api/static/ce/cost-and-usage-results",
                         json={"results": [page, page]}, timeout=5).status_code == 201
    # WHEN the schedule fires twice (the second time as a re-run after a timeout would)
    first = deployed["module"].handler({}, FakeContext())
    second = deployed["module"].handler({}, FakeContext())
    # THEN the workflow is blocked in DynamoDB until the end of the UTC day
    assert first["status"] == "ok", first
    [switch] = ledger.kill_switches(int(datetime.now(UTC).timestamp() * 1000))
    assert switch.workflow == "claims" and switch.set_by == "costguard-reconciler"
    end_of_day = int(datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).timestamp() * 1000)
    assert switch.expires_at_ms == end_of_day
    # AND the budget alert was published exactly once across both runs
    notes = drain(deployed)
    keys = [json.loads(n["Message"])["key"] for n in notes]
    assert keys and len(keys) == len(set(keys)) and second["alerts"]["sent"] == 0
    assert any("budget_threshold" in k and "claims" in k for k in keys)
    # AND the reports exist once, under the window's last day
    stored = objects(deployed)
    assert {key.rsplit("/", 1)[-1] for key in stored} == {"reconcile.csv", "reconcile.parquet", "report.html", "focus.csv"}
    assert all(key.startswith((f"reports/date={today.isoformat()}/", f"reports/parquet/date={today.isoformat()}/"))
               for key in stored)
    assert f"reports/parquet/date={today.isoformat()}/reconcile.parquet" in stored
    assert first["reports"] == second["reports"]
    ledger.close()
