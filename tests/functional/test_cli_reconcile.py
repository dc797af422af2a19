"""`costguard reconcile` end to end against moto: the same job the Lambda runs, printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws
from typer.testing import CliRunner

from costguard import cli
from costguard.cli import app
from costguard.ledger.sqlite import SQLiteLedger
from costguard.usage import ActionRecord, PeriodLimit, Reservation
from tests.functional.test_reconcile_aws import answer_dimension_values
from tests.support.ledger_data import segment

TAG = "costguard:workflow"


def day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp() * 1000)


class _Session:
    """A real boto3 session whose Cost Explorer clients answer GetDimensionValues, which moto
    lacks (AWS lists the Bedrock service names there)."""

    def __init__(self) -> None:
        self._session = boto3.session.Session()

    def client(self, name: str, **kwargs: Any) -> Any:
        client = self._session.client(name, **kwargs)
        if name == "ce":
            answer_dimension_values(client, ["Amazon Bedrock", "Claude 3 Haiku (Amazon Bedrock Edition)"])
        return client

    def __getattr__(self, item: str) -> Any:
        return getattr(self._session, item)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        monkeypatch.setattr(cli, "_aws_session", lambda profile: _Session())
        yield


def yesterday_over_budget(tmp_path: Path, metered_nanos: int, runs: int = 1) -> tuple[str, Path, Path]:
    """A ledger holding ``metered_nanos`` of workflow ``claims`` yesterday, against a $10 daily
    hard budget, and Cost Explorer (moto) primed to bill $15.00 for it ``runs`` times; the day,
    the ledger file and the policy file.

    The monthly budget ($1,000) is above any month-end forecast a single day of up to $32 can
    make (the forecast is the month-to-date spend per elapsed day times the month's days): when
    yesterday is the 1st of a month, $12 over one day forecasts $372, so a lower budget would
    add a ``forecast_over_budget`` alert on those days only."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    path = tmp_path / "l.db"
    ledger = SQLiteLedger(path)
    periods = (PeriodLimit(f"day:{yesterday}", None), PeriodLimit(f"month:{yesterday[:7]}", None))
    ledger.record(segment("r-1", metered_nanos, workflow="claims", ts_ms=day_ms(yesterday),
                          reservation=Reservation("claims", periods, 0)))
    ledger.close()
    policies = tmp_path / "p.yaml"
    policies.write_text("version: 1\nworkflows:\n  claims:\n    budget: {daily_usd: 10, monthly_usd: 1000, alert_at_pct: [50, 100], on_exhausted: block}\n")

    def page(group: str) -> dict[str, Any]:
        return {"ResultsByTime": [{"TimePeriod": {"Start": yesterday, "End": yesterday}, "Total": {}, "Estimated": False,
                                   "Groups": [{"Keys": [group, "USE1-Claude3Haiku-input-tokens"],
                                               "Metrics": {"UnblendedCost": {"Amount": "15.00", "Unit": "USD"},
                                                           "UsageQuantity": {"Amount": "1", "Unit": "N/A"}}}]}]}

    # each run asks Cost Explorer per model (grouped by SERVICE) first, then per workflow tag
    assert requests.post("http://motoapi.amazonaws.com/moto-api/static/ce/cost-and-usage-results",
                         json={"results": [page("Amazon Bedrock"), page(f"{TAG}$claims")] * runs}, timeout=5).status_code == 201
    return yesterday, path, policies


def test_reconcile_prints_frame_and_alerts_and_dry_run_changes_nothing(tmp_path: Path, aws: Any) -> None:
    # GIVEN yesterday's metered spend of $12 against a $10 daily hard budget, and a billed figure
    yesterday, path, policies = yesterday_over_budget(tmp_path, 12_000_000_000)
    # WHEN reconcile runs as a dry run
    result = CliRunner().invoke(app, ["reconcile", "--since", yesterday, "--until", yesterday, "--dry-run",
                                      "--format", "json", "--policies", str(policies), "--ledger", f"sqlite:///{path}"])
    # THEN the frame joins billed and metered, the alerts are listed, and nothing was set
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    row = next(r for r in doc["frame"] if r["workflow"] == "claims" and r["day"] == yesterday)
    assert row["metered_cost_usd"] == "12" and row["billed_cost_usd"] == "15.00"
    kinds = {a["kind"] for a in doc["alert_list"]}
    assert "budget_threshold" in kinds and "drift" in kinds
    assert doc["dry_run"] is True
    check = SQLiteLedger(path)
    assert check.kill_switches(0) == [] and check.alert_keys() == []
    check.close()


def test_reconcile_bad_dates_are_invalid_input(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["reconcile", "--since", "2026-13-01", "--ledger", f"sqlite:///{tmp_path}/l.db"]).exit_code == 2
    assert runner.invoke(app, ["reconcile", "--since", "2026-11-05", "--until", "2026-11-01", "--ledger", f"sqlite:///{tmp_path}/l.db"]).exit_code == 2
    assert runner.invoke(app, ["reconcile", "--format", "xml"]).exit_code == 2
    bad_key = runner.invoke(app, ["reconcile", "--tag-key", "team$x", "--ledger", f"sqlite:///{tmp_path}/l.db"])
    assert bad_key.exit_code == 2 and "invalid cost allocation tag key 'team$x'" in bad_key.output
    assert "Traceback" not in bad_key.output
    twice = runner.invoke(app, ["reconcile", "--tag-key", "a", "--tag-key", "a", "--ledger", f"sqlite:///{tmp_path}/l.db"])
    assert twice.exit_code == 2 and "repeat" in twice.output


def test_reconcile_table_and_csv(tmp_path: Path, aws: Any) -> None:
    runner = CliRunner()
    ledger = f"sqlite:///{tmp_path}/l.db"
    SQLiteLedger(tmp_path / "l.db").close()  # a dry run reads an existing ledger; it creates none
    for fmt, expected in (("table", "Reconciliation"), ("csv", "workflow,day,metered_cost_usd")):
        result = runner.invoke(app, ["reconcile", "--window", "month", "--dry-run", "--format", fmt, "--ledger", ledger])
        assert result.exit_code == 0, result.output
        assert expected in result.stdout


def test_ledger_create_table_then_use_it_from_the_cli(aws: Any) -> None:
    runner = CliRunner()
    # GIVEN a new table made by the CLI (twice: the second run only checks TTL and PITR)
    for _ in range(2):
        made = runner.invoke(app, ["ledger", "create-table", "costguard-ledger", "--region", "us-east-1"])
        assert made.exit_code == 0, made.output
        assert "dynamodb://costguard-ledger" in made.stdout
    client = boto3.client("dynamodb", region_name="us-east-1")
    assert client.describe_time_to_live(TableName="costguard-ledger")["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    backups = client.describe_continuous_backups(TableName="costguard-ledger")["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert client.describe_table(TableName="costguard-ledger")["Table"]["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # WHEN a workflow is blocked through the global --ledger, THEN budget status reads it back
    url = "dynamodb://costguard-ledger?region=us-east-1"
    assert runner.invoke(app, ["--ledger", url, "budget", "block", "claims", "--reason", "runaway", "--force"]).exit_code == 0
    status = runner.invoke(app, ["--ledger", url, "budget", "status", "--format", "json"])
    assert status.exit_code == 0
    assert json.loads(status.stdout)["budgets"][0]["block_reason"] == "runaway"
    # AND a report on the DynamoDB ledger reads it (no usage yet: an empty report, not an error)
    report = runner.invoke(app, ["--ledger", url, "report"])
    assert report.exit_code == 0 and "no usage" in report.stdout


def test_reconcile_with_lambda_prints_the_action_group_lambda_spend(tmp_path: Path, aws: Any) -> None:
    # GIVEN yesterday's metered action group Lambda cost, and Cost Explorer's AWS Lambda bill
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    path = tmp_path / "l.db"
    ledger = SQLiteLedger(path)
    ledger.record_action(ActionRecord(day_ms(yesterday), "claims", "claims get_claim", "s-1", None, 1, 1, 0, 0, 0,
                                      "passed", cost_nanos=16_867, billed_ms=1000, memory_mb=1024, architecture="x86_64"))
    ledger.close()
    bedrock = {"ResultsByTime": [{"TimePeriod": {"Start": yesterday, "End": yesterday}, "Total": {}, "Estimated": False,
                                  "Groups": []}]}
    lambda_bill = {"ResultsByTime": [{"TimePeriod": {"Start": yesterday, "End": yesterday}, "Total": {}, "Estimated": False,
                                      "Groups": [{"Keys": [f"{TAG}$claims", "USE1-Lambda-GB-Second"],
                                                  "Metrics": {"UnblendedCost": {"Amount": "0.00002", "Unit": "USD"},
                                                              "UsageQuantity": {"Amount": "1", "Unit": "N/A"}}}]}]}
    assert requests.post("http://motoapi.amazonaws.com/moto-api/static/ce/cost-and-usage-results",
                         json={"results": [bedrock, bedrock, lambda_bill]}, timeout=5).status_code == 201  # Bedrock per model, per tag; Lambda
    # WHEN reconcile runs with --lambda
    result = CliRunner().invoke(app, ["reconcile", "--since", yesterday, "--until", yesterday, "--dry-run", "--lambda",
                                      "--format", "json", "--ledger", f"sqlite:///{path}"])
    # THEN the JSON carries the metered and billed Lambda spend of the workflow's day
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["lambda_spend"]
    assert (row["workflow"], row["day"], row["metered_lambda_usd"], row["billed_lambda_usd"], row["invocations"]) == (
        "claims", yesterday, "0.000016867", "0.00002", 1)
