from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from costguard.alerts import ACCOUNT, AlertPublisher, evaluate_alerts
from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)

POLICIES = PolicySet.from_yaml(
    """
version: 1
workflows:
  claims-intake:
    budget: {daily_usd: 100, monthly_usd: 1000, alert_at_pct: [50, 80, 100]}
  triage:
    budget: {monthly_usd: 500, alert_at_pct: [80], on_exhausted: alert}
  free:
    per_request: {max_model_calls: 5}
"""
)


# -- a reconciliation result built by hand (the reconciler's frame contract) ---------------------


@dataclass(frozen=True)
class FakeWindow:
    start: date
    end: date


@dataclass
class FakeResult:
    window: FakeWindow
    frame: pd.DataFrame
    models: pd.DataFrame
    unpriced_models: list[str] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    estimated_days: list[str] = field(default_factory=list)


FRAME_COLUMNS = [
    "workflow", "day", "metered_cost_usd", "billed_cost_usd", "estimated", "drift_usd", "drift_pct",
    "metered_model_calls", "metered_input_tokens", "metered_output_tokens", "metered_cache_read_tokens",
    "metered_cache_write_tokens", "costguard_model_calls", "throttles", "budget_daily_usd",
    "budget_monthly_usd", "month_to_date_usd", "burn_rate_usd_per_day", "forecast_month_end_usd",
]
MODEL_COLUMNS = [
    "day", "model_id", "bedrock_invocations", "bedrock_input_tokens", "bedrock_output_tokens",
    "bedrock_throttles", "metered_input_tokens", "metered_output_tokens", "unmetered_input_tokens",
    "unmetered_output_tokens",
]


def row(workflow: str, day: str, metered: str, *, billed: str | None = None, estimated: bool = False,
        mtd: str | None = None, forecast: str | None = None, throttles: int = 0,
        budget_daily: str | None = None, budget_monthly: str | None = None) -> dict[str, Any]:
    m = Decimal(metered)
    b = None if billed is None else Decimal(billed)
    drift = None if b is None else b - m
    pct = None if b is None or not m else (drift * 100 / m).quantize(Decimal("0.01"))
    return {
        "workflow": workflow, "day": day, "metered_cost_usd": m, "billed_cost_usd": b, "estimated": estimated,
        "drift_usd": drift, "drift_pct": pct, "metered_model_calls": 10, "metered_input_tokens": 1000,
        "metered_output_tokens": 200, "metered_cache_read_tokens": 0, "metered_cache_write_tokens": 0,
        "costguard_model_calls": 10, "throttles": throttles,
        "budget_daily_usd": None if budget_daily is None else Decimal(budget_daily),
        "budget_monthly_usd": None if budget_monthly is None else Decimal(budget_monthly),
        "month_to_date_usd": Decimal(mtd if mtd is not None else metered),
        "burn_rate_usd_per_day": Decimal(mtd if mtd is not None else metered) / 22,
        "forecast_month_end_usd": Decimal(forecast if forecast is not None else metered),
    }


def model_row(day: str, model: str, *, unmetered_in: int = 0, unmetered_out: int = 0, throttles: int = 0) -> dict[str, Any]:
    return {
        "day": day, "model_id": model, "bedrock_invocations": 100, "bedrock_input_tokens": 5000 + unmetered_in,
        "bedrock_output_tokens": 900 + unmetered_out, "bedrock_throttles": throttles, "metered_input_tokens": 5000,
        "metered_output_tokens": 900, "unmetered_input_tokens": unmetered_in, "unmetered_output_tokens": unmetered_out,
    }


def make_result(rows: list[dict[str, Any]], models: list[dict[str, Any]] | None = None, *,
                unpriced: list[str] | None = None, start: date = date(2026, 11, 21),
                end: date = date(2026, 11, 24)) -> FakeResult:
    return FakeResult(
        window=FakeWindow(start, end),
        frame=pd.DataFrame(rows, columns=FRAME_COLUMNS),
        models=pd.DataFrame(models or [], columns=MODEL_COLUMNS),
        unpriced_models=list(unpriced or []),
        api_calls={"ce:GetCostAndUsage": 1},
        estimated_days=sorted({r["day"] for r in rows if r["estimated"]}),
    )


# What sample_result() raises under POLICIES, in evaluation order (see the comments in sample_result)
SAMPLE_ALERT_KEYS = [
    "claims-intake|budget_threshold|80|day:2026-11-21",
    "claims-intake|budget_threshold|100|day:2026-11-22",
    "triage|drift|10|day:2026-11-22",  # final CE figure 50 is 25% over the metered 40
    "triage|throttling|10|day:2026-11-22",
    "claims-intake|budget_threshold|80|month:2026-11",  # 820 of 1000
    "claims-intake|forecast_over_budget|1000|month:2026-11",  # 1130 > 1000
    "triage|budget_threshold|80|month:2026-11",  # 420 of 500 = 84%
    "triage|forecast_over_budget|500|month:2026-11",
    f"{ACCOUNT}|throttling|10|day:2026-11-22|amazon.nova-lite-v1:0",
    f"{ACCOUNT}|unmetered_usage|1000|day:2026-11-22|anthropic.claude-3-haiku-20240307-v1:0",
    f"{ACCOUNT}|unpriced_model|any|month:2026-11|acme.mystery-v1",
]


def sample_result() -> FakeResult:
    return make_result(
        [
            # 85 of a 100/day budget: the 80% threshold (not 50% as well).
            row("claims-intake", "2026-11-21", "85", billed="86", mtd="700", forecast="950"),
            # 120 of 100: 100%; billed far off but the day is estimated: no drift alert.
            row("claims-intake", "2026-11-22", "120", billed="60", estimated=True, mtd="820", forecast="1130"),
            # triage: final CE figure 25% over metered: drift; month to date 420 of 500 = 84%.
            row("triage", "2026-11-22", "40", billed="50", mtd="420", forecast="590", throttles=12),
            row("free", "2026-11-22", "3", billed="3"),
        ],
        [
            model_row("2026-11-22", "anthropic.claude-3-haiku-20240307-v1:0", unmetered_in=4000, unmetered_out=100),
            model_row("2026-11-22", "amazon.nova-lite-v1:0", unmetered_in=10, throttles=30),
        ],
        unpriced=["acme.mystery-v1"],
    )


# -- evaluation -------------------------------------------------------------------------------------


def test_evaluate_finds_every_kind_with_stable_keys() -> None:
    # GIVEN a frame with budget crossings, a forecast overrun, drift, throttles and unmetered use
    # WHEN alerts are evaluated
    alerts = evaluate_alerts(sample_result(), POLICIES)
    keys = [a.key for a in alerts]
    # THEN each condition is one alert with a stable key, highest crossed threshold only (80, not
    # 50 as well, for 85 of 100), in a stable order; and nothing for the estimated day's drift, the
    # small unmetered Nova Lite count, or the budget-less workflow "free"
    assert keys == SAMPLE_ALERT_KEYS
    # AND the evaluation is deterministic
    assert [a.key for a in evaluate_alerts(sample_result(), POLICIES)] == keys


def test_subjects_fit_sns_and_messages_are_json() -> None:
    long_name = "w" + "x" * 120
    policies = PolicySet.from_yaml(f"version: 1\nworkflows:\n  {long_name}:\n    budget: {{daily_usd: 1}}\n")
    result = make_result([row(long_name, "2026-11-22", "5")])
    alerts = evaluate_alerts(result, policies) + evaluate_alerts(sample_result(), POLICIES)
    for alert in alerts:
        assert len(alert.subject) <= 99 and alert.subject.isascii()
        assert "\n" not in alert.subject and "\r" not in alert.subject
        body = json.loads(json.dumps(alert.message))
        assert body["key"] == alert.key and body["kind"] == alert.kind
    budget = next(a for a in alerts if a.key == "claims-intake|budget_threshold|100|day:2026-11-22")
    assert budget.message["detail"]["spent_usd"] == "120" and budget.message["detail"]["budget_usd"] == "100"
    assert budget.subject == "costguard: claims-intake at 120.0% of daily budget $100.00 (2026-11-22)"


def test_drift_needs_final_figures_and_a_material_amount() -> None:
    rows = [
        row("triage", "2026-11-20", "0.001", billed="0.002"),  # +100% but a tenth of a cent
        row("triage", "2026-11-21", "10", billed="10.5"),  # +5%: under the threshold
        row("triage", "2026-11-22", "10", billed="8"),  # -20%, final
        row("triage", "2026-11-23", "10", billed="2", estimated=True),  # estimated: skipped
        row("triage", "2026-11-19", "10", billed=None),  # nothing billed yet
    ]
    drift = [a for a in evaluate_alerts(make_result(rows), POLICIES) if a.kind == "drift"]
    assert [a.period for a in drift] == ["day:2026-11-22"]
    assert drift[0].observed == "-20" and "under" in drift[0].message["detail"]["direction"]
    # A lower threshold catches the +5% day too; the key carries the threshold used.
    lower = [a for a in evaluate_alerts(make_result(rows), POLICIES, drift_pct_threshold=Decimal("4.0")) if a.kind == "drift"]
    assert [a.key for a in lower] == ["triage|drift|4|day:2026-11-21", "triage|drift|4|day:2026-11-22"]


# -- publishing through SNS (moto) -------------------------------------------------------------------


@pytest.fixture()
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        sns = session.client("sns")
        sqs = session.client("sqs")
        topic = sns.create_topic(Name="costguard-alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        yield {"session": session, "sns": sns, "sqs": sqs, "topic": topic, "queue": queue_url}


def received(aws: dict[str, Any]) -> list[dict[str, Any]]:
    """Every SNS notification delivered to the queue so far (drains it)."""
    out: list[dict[str, Any]] = []
    while True:
        batch = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return out
        for message in batch:
            out.append(json.loads(message["Body"]))
            aws["sqs"].delete_message(QueueUrl=aws["queue"], ReceiptHandle=message["ReceiptHandle"])


class FlakySNS:
    """A real (moto) SNS client that fails the publish calls listed in ``fail_calls`` (1-based)."""

    def __init__(self, client: Any, fail_calls: set[int], error: BaseException | None = None) -> None:
        self.client = client
        self.fail_calls = fail_calls
        self.error = error
        self.calls = 0

    def publish(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_calls:
            raise self.error or ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "Publish")
        return self.client.publish(**kwargs)


def test_publish_delivers_subject_json_and_attributes(aws: dict[str, Any], tmp_path: Path) -> None:
    # GIVEN evaluated alerts and a topic with an SQS subscriber
    alerts = evaluate_alerts(sample_result(), POLICIES)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        publisher = AlertPublisher(ledger, aws["topic"], session=aws["session"], clock=lambda: NOW)
        # WHEN they are published
        report = publisher.publish(alerts)
        # THEN every alert arrives once, with its subject, JSON body and attributes
        assert len(report.sent) == len(alerts) and not report.failed and not report.skipped_duplicates
        notes = received(aws)
        assert sorted(json.loads(n["Message"])["key"] for n in notes) == sorted(a.key for a in alerts)
        by_key = {json.loads(n["Message"])["key"]: n for n in notes}
        drift = by_key["triage|drift|10|day:2026-11-22"]
        assert drift["Subject"].startswith("costguard: triage billed $50.00 vs metered $40.00")
        body = json.loads(drift["Message"])
        assert body["schema"] == "costguard.alert/v1" and body["detail"]["drift_pct"] == "25"
        assert drift["MessageAttributes"]["kind"]["Value"] == "drift"
        assert drift["MessageAttributes"]["workflow"]["Value"] == "triage"
        # AND the keys are in the ledger
        assert {k.key for k in ledger.alert_keys()} == {a.key for a in alerts}


def test_rerun_sends_nothing_twice(aws: dict[str, Any], tmp_path: Path) -> None:
    alerts = evaluate_alerts(sample_result(), POLICIES)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        AlertPublisher(ledger, aws["topic"], session=aws["session"]).publish(alerts)
        first = received(aws)
        # WHEN the same window is reconciled again (and evaluated again)
        again = AlertPublisher(ledger, aws["topic"], session=aws["session"]).publish(
            evaluate_alerts(sample_result(), POLICIES)
        )
    # THEN nothing new is sent
    assert len(first) == len(alerts)
    assert again.sent == [] and len(again.skipped_duplicates) == len(alerts)
    assert received(aws) == []


def test_failed_publish_is_released_and_sent_next_run(aws: dict[str, Any], tmp_path: Path) -> None:
    alerts = evaluate_alerts(sample_result(), POLICIES)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        flaky = FlakySNS(aws["sns"], fail_calls={2})
        # WHEN the second publish fails
        first = AlertPublisher(ledger, aws["topic"], sns_client=flaky).publish(alerts)
        # THEN it is reported (not raised), its key released, the others sent
        assert first.failed == [alerts[1].key] and "Throttling" in first.errors[alerts[1].key]
        assert len(first.sent) == len(alerts) - 1
        assert alerts[1].key not in {k.key for k in ledger.alert_keys()}
        # AND the next run sends exactly that one
        second = AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(alerts)
        assert second.sent == [alerts[1].key]
    counts = Counter(json.loads(n["Message"])["key"] for n in received(aws))
    assert counts == Counter({a.key: 1 for a in alerts})


class LambdaTimeout(BaseException):
    """Stands in for the runtime aborting the invocation inside a call."""


@pytest.mark.parametrize("error", [TimeoutError("read timed out"), LambdaTimeout("deadline")])
def test_abort_mid_run_then_rerun_sends_each_alert_exactly_once(
    aws: dict[str, Any], tmp_path: Path, error: BaseException
) -> None:
    # GIVEN N alerts and a publisher whose second publish blows up inside the SNS call
    alerts = evaluate_alerts(sample_result(), POLICIES)
    assert len(alerts) == len(SAMPLE_ALERT_KEYS) == 11
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        flaky = FlakySNS(aws["sns"], fail_calls={2}, error=error)
        if isinstance(error, Exception):
            AlertPublisher(ledger, aws["topic"], sns_client=flaky).publish(alerts)
        else:
            # An abort propagates (the run is over) but gives its key back first.
            with pytest.raises(LambdaTimeout):
                AlertPublisher(ledger, aws["topic"], sns_client=flaky).publish(alerts)
            assert {k.key for k in ledger.alert_keys()} == {alerts[0].key}
        # WHEN the run is repeated (twice, for good measure)
        AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(alerts)
        AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(alerts)
    # THEN every alert was delivered exactly once overall
    counts = Counter(json.loads(n["Message"])["key"] for n in received(aws))
    assert counts == Counter({a.key: 1 for a in alerts})


def test_dry_run_claims_and_sends_nothing(aws: dict[str, Any], tmp_path: Path) -> None:
    alerts = evaluate_alerts(sample_result(), POLICIES)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        ledger.claim_alert_key(alerts[0].key, 1, {})  # sent by an earlier run
        report = AlertPublisher(ledger, aws["topic"], session=aws["session"], dry_run=True).publish(alerts)
        assert report.dry_run and report.sent == [a.key for a in alerts[1:]]
        assert report.skipped_duplicates == [alerts[0].key]
        assert [k.key for k in ledger.alert_keys()] == [alerts[0].key]
    assert received(aws) == []


def test_should_stop_defers_unclaimed_alerts(aws: dict[str, Any], tmp_path: Path) -> None:
    alerts = evaluate_alerts(sample_result(), POLICIES)
    calls = iter(range(1000))
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        report = AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(
            alerts, should_stop=lambda: next(calls) >= 2
        )
        assert report.sent == [a.key for a in alerts[:2]]
        assert report.deferred == [a.key for a in alerts[2:]]
        rest = AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(alerts)
        assert rest.sent == [a.key for a in alerts[2:]]
    assert len(received(aws)) == len(alerts)


def test_ledger_failure_on_claim_is_reported_not_raised(aws: dict[str, Any], tmp_path: Path) -> None:
    class BrokenLedger(SQLiteLedger):
        def claim_alert_key(self, key: str, now_ms: int, detail: dict[str, Any]) -> bool:
            raise LedgerError("table unreachable")

    alerts = evaluate_alerts(sample_result(), POLICIES)[:2]
    with BrokenLedger(tmp_path / "l.db") as ledger:
        report = AlertPublisher(ledger, aws["topic"], sns_client=aws["sns"]).publish(alerts)
    assert report.failed == [a.key for a in alerts] and not report.sent
    assert received(aws) == []
