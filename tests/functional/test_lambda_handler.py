"""The scheduled job end to end against moto: S3 reports, SNS alerts, kill switches, the handler."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pandas as pd
import pytest
from moto import mock_aws

from costguard.jobs import make_window, parse_window, run_reconciliation
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet
from costguard.s3reports import FOCUS_COLUMNS, write_reports
from costguard.usage import PeriodLimit, Reservation
from tests.unit.test_alerts import POLICIES, SAMPLE_ALERT_KEYS, make_result, sample_result

HANDLER_PATH = Path(__file__).resolve().parents[2] / "lambdas" / "reconcile_handler.py"
BUCKET = "costguard-reports"


@pytest.fixture()
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        s3, sns, sqs = session.client("s3"), session.client("sns"), session.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        topic = sns.create_topic(Name="costguard-alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        yield {"session": session, "s3": s3, "sns": sns, "sqs": sqs, "topic": topic, "queue": queue_url}


def drain(aws: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", []):
        for message in batch:
            out.append(json.loads(message["Body"]))
            aws["sqs"].delete_message(QueueUrl=aws["queue"], ReceiptHandle=message["ReceiptHandle"])
    return out


def objects(aws: dict[str, Any]) -> dict[str, tuple[bytes, str, str]]:
    """key -> (body, content type, version id) of every object in the bucket."""
    out = {}
    for item in aws["s3"].list_objects_v2(Bucket=BUCKET).get("Contents", []):
        got = aws["s3"].get_object(Bucket=BUCKET, Key=item["Key"])
        out[item["Key"]] = (got["Body"].read(), got["ContentType"], got.get("VersionId", ""))
    return out


def spend(ledger: SQLiteLedger, usd: int, day: str, workflow: str) -> None:
    periods = (PeriodLimit(f"day:{day}", None), PeriodLimit(f"month:{day[:7]}", None))
    ledger._settle(ledger.connection(), Reservation(workflow, periods, 0), usd * 1_000_000_000)  # noqa: SLF001


# -- S3 reports -----------------------------------------------------------------------------------------


def test_reports_land_in_the_window_folder_and_read_back(aws: dict[str, Any], tmp_path: Path) -> None:
    result = sample_result()  # window 2026-11-21 .. 2026-11-24 (exclusive)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        keys = write_reports(result, ledger, POLICIES, BUCKET, "costguard/reports/", session=aws["session"])
    folder = "costguard/reports/date=2026-11-23/"
    parquet_key = "costguard/reports/parquet/date=2026-11-23/reconcile.parquet"  # alone: Athena's table reads it
    assert keys == [folder + "reconcile.csv", parquet_key, folder + "report.html", folder + "focus.csv"]
    stored = objects(aws)
    assert sorted(stored) == sorted(keys)
    assert stored[folder + "reconcile.csv"][1] == "text/csv; charset=utf-8"
    assert stored[parquet_key][1] == "application/vnd.apache.parquet"
    assert stored[folder + "report.html"][1] == "text/html; charset=utf-8"

    # CSV: exact money strings, rows sorted by workflow then day
    rows = list(csv.DictReader(io.StringIO(stored[folder + "reconcile.csv"][0].decode())))
    assert [(r["workflow"], r["day"]) for r in rows] == [
        ("claims-intake", "2026-11-21"), ("claims-intake", "2026-11-22"), ("free", "2026-11-22"), ("triage", "2026-11-22")]
    assert rows[0]["metered_cost_usd"] == "85" and rows[0]["billed_cost_usd"] == "86" and rows[0]["estimated"] == "false"

    # Parquet: same rows; money as strings, counts as int64, the flag as bool
    frame = pd.read_parquet(io.BytesIO(stored[parquet_key][0]))
    assert list(frame["workflow"]) == [r["workflow"] for r in rows]
    assert frame["metered_cost_usd"].tolist() == [r["metered_cost_usd"] for r in rows]
    assert str(frame["metered_model_calls"].dtype) == "int64" and str(frame["estimated"].dtype) == "bool"
    assert frame["billed_cost_usd"].tolist()[1] == "60"

    # HTML: the usage report page of the window
    page = stored[folder + "report.html"][0].decode()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page

    # FOCUS: the standard's column names, custom ones prefixed x_
    focus = list(csv.DictReader(io.StringIO(stored[folder + "focus.csv"][0].decode())))
    assert list(focus[0]) == list(FOCUS_COLUMNS)
    assert all(c.startswith("x_") or c[0].isupper() for c in FOCUS_COLUMNS)
    first = focus[0]
    assert first["BilledCost"] == "86" and first["ListCost"] == "85" and first["x_CostSource"] == "billed"
    assert first["ChargePeriodStart"] == "2026-11-21T00:00:00Z" and first["ChargePeriodEnd"] == "2026-11-22T00:00:00Z"
    assert first["BillingPeriodStart"] == "2026-11-01T00:00:00Z" and first["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
    assert first["ServiceCategory"] == "AI and Machine Learning" and first["ProviderName"] == "AWS"
    assert json.loads(first["Tags"]) == {"costguard:workflow": "claims-intake"}


def test_reports_are_byte_identical_on_rerun_and_not_rewritten(aws: dict[str, Any], tmp_path: Path) -> None:
    aws["s3"].put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        spend(ledger, 5, "2026-11-22", "triage")
        write_reports(sample_result(), ledger, POLICIES, BUCKET, "r", s3_client=aws["s3"])
        first = objects(aws)
        write_reports(sample_result(), ledger, POLICIES, BUCKET, "r", s3_client=aws["s3"])
        second = objects(aws)
    assert {k: v[0] for k, v in first.items()} == {k: v[0] for k, v in second.items()}
    # Unchanged bytes are not uploaded again: no new versions pile up in a versioned bucket.
    assert {k: v[2] for k, v in first.items()} == {k: v[2] for k, v in second.items()}
    versions = aws["s3"].list_object_versions(Bucket=BUCKET)["Versions"]
    assert len(versions) == 4


def test_reports_without_sql_ledger_build_html_from_the_frame(aws: dict[str, Any], tmp_path: Path) -> None:
    class NoSqlLedger(SQLiteLedger):
        connection = None  # type: ignore[assignment]  # like DynamoDB: no SQL behind it

    with NoSqlLedger(tmp_path / "l.db") as ledger:
        keys = write_reports(sample_result(), ledger, POLICIES, BUCKET, "", s3_client=aws["s3"])
    html = objects(aws)[keys[2]][0].decode()
    assert keys[2] == "date=2026-11-23/report.html"
    assert "costguard reconciliation 2026-11-21 to 2026-11-23" in html and "claims-intake" in html


def test_dry_run_writes_no_report(aws: dict[str, Any], tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        keys = write_reports(sample_result(), ledger, POLICIES, BUCKET, "r", s3_client=aws["s3"], dry_run=True)
    assert len(keys) == 4 and objects(aws) == {}


# -- the job ------------------------------------------------------------------------------------------------


class StubReconciler:
    """Stands in for costguard.reconcile.Reconciler: returns a prepared result for any window."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.windows: list[Any] = []

    def run(self, window: Any) -> Any:
        self.windows.append(window)
        return self.result


def test_window_parsing() -> None:
    today = date(2026, 11, 23)
    recent = parse_window({}, today)
    assert (recent.start, recent.end) == (date(2026, 11, 22), date(2026, 11, 24))
    month = parse_window({"window": "month"}, today)
    assert (month.start, month.end) == (date(2026, 11, 1), date(2026, 11, 24))
    explicit = parse_window({"since": "2026-10-01", "until": "2026-10-31"}, today)
    assert (explicit.start, explicit.end) == (date(2026, 10, 1), date(2026, 11, 1))
    from costguard.errors import CostguardError

    with pytest.raises(CostguardError, match="since must be a date"):
        parse_window({"since": "yesterday"}, today)
    with pytest.raises(CostguardError, match="empty window"):
        make_window(date(2026, 11, 2), date(2026, 11, 1))


def test_job_blocks_alerts_and_reports_once(aws: dict[str, Any], tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        spend(ledger, 101, "2026-11-23", "claims-intake")  # over the 100/day hard budget today
        reconciler = StubReconciler(sample_result())
        kwargs = dict(topic_arn=aws["topic"], bucket=BUCKET, prefix="p", session=aws["session"], clock=lambda: now)
        first = run_reconciliation(reconciler, ledger, POLICIES, make_window(date(2026, 11, 21), date(2026, 11, 24)), **kwargs)
        second = run_reconciliation(reconciler, ledger, POLICIES, make_window(date(2026, 11, 21), date(2026, 11, 24)), **kwargs)
        switch = ledger.kill_switch("claims-intake", int(now.timestamp() * 1000))
    assert first.blocks == 1 and second.blocks == 0 and switch is not None
    assert first.publish.sent == SAMPLE_ALERT_KEYS and first.alerts_evaluated == 11 and second.publish.sent == []
    assert len(drain(aws)) == first.alerts_evaluated
    assert first.report_keys == second.report_keys and len(objects(aws)) == 4
    json.dumps(first.to_dict())  # JSON-ready


def test_job_dry_run_writes_nothing(aws: dict[str, Any], tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        spend(ledger, 101, "2026-11-23", "claims-intake")
        summary = run_reconciliation(
            StubReconciler(sample_result()), ledger, POLICIES, make_window(date(2026, 11, 21), date(2026, 11, 24)),
            topic_arn=aws["topic"], bucket=BUCKET, session=aws["session"], dry_run=True,
            clock=lambda: datetime(2026, 11, 23, 6, tzinfo=UTC),
        )
        assert ledger.kill_switches(0) == [] and ledger.alert_keys() == []
    assert summary.blocks == 1 and not summary.actions[0].applied
    assert len(summary.publish.sent) == summary.alerts_evaluated and len(summary.report_keys) == 4
    assert drain(aws) == [] and objects(aws) == {}


def test_job_keeps_going_when_a_step_fails(aws: dict[str, Any], tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        summary = run_reconciliation(
            StubReconciler(sample_result()), ledger, POLICIES, make_window(date(2026, 11, 21), date(2026, 11, 24)),
            topic_arn=aws["topic"], bucket="no-such-bucket", session=aws["session"],
        )
    assert [e.split(":")[0] for e in summary.errors] == ["reports"]
    assert len(drain(aws)) == summary.alerts_evaluated  # alerts still went out


# -- the handler ---------------------------------------------------------------------------------------------


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reconcile_handler_under_test", HANDLER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered as Lambda's import would (dataclasses look their module up in sys.modules).
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FakeContext:
    aws_request_id = "req-1"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture()
def handler_env(aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(
        "version: 1\nworkflows:\n  claims-intake:\n    budget: {daily_usd: 100, monthly_usd: 1000}\n"
        "  triage:\n    budget: {monthly_usd: 500, alert_at_pct: [80], on_exhausted: alert}\n"
    )
    db = tmp_path / "ledger.db"
    monkeypatch.setenv("COSTGUARD_LEDGER", f"sqlite:///{db}")
    monkeypatch.setenv("COSTGUARD_POLICIES", str(policy_file))
    monkeypatch.setenv("COSTGUARD_TOPIC_ARN", aws["topic"])
    monkeypatch.setenv("COSTGUARD_REPORT_BUCKET", BUCKET)
    monkeypatch.setenv("COSTGUARD_REPORT_PREFIX", "reports")
    module = load_handler()
    stub = StubReconciler(sample_result())
    built: list[tuple[Any, ...]] = []

    def make_reconciler(*args: Any) -> StubReconciler:
        built.append(args)
        return stub

    monkeypatch.setattr(module, "_make_reconciler", make_reconciler)
    yield {"module": module, "stub": stub, "built": built, "db": db, **aws}
    module.reset_dependencies()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_handler_end_to_end_is_idempotent(handler_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    module = handler_env["module"]
    root_handlers = list(logging.getLogger().handlers)
    event = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {},
             "since": "2026-11-21", "until": "2026-11-23"}
    # WHEN the scheduled event fires twice
    first = module.handler(event, FakeContext())
    second = module.handler(event, FakeContext())
    # THEN dependencies were built once, the window came from the event
    assert len(handler_env["built"]) == 1
    assert [(w.start, w.end) for w in handler_env["stub"].windows] == [(date(2026, 11, 21), date(2026, 11, 24))] * 2
    # AND alerts went out once, reports were written once and are identical
    assert first["status"] == "ok" and first["alerts"]["sent"] == 11 and second["alerts"]["sent"] == 0
    assert first["alerts"]["sent_keys"] == SAMPLE_ALERT_KEYS
    assert second["alerts"]["skipped_duplicates"] == first["alerts"]["sent"]
    notes = drain(handler_env)
    assert Counter(json.loads(n["Message"])["key"] for n in notes) == Counter(first["alerts"]["sent_keys"])
    assert first["reports"] == second["reports"] and first["reports"][0].startswith("reports/date=2026-11-23/")
    json.dumps(first)
    # AND stdout holds JSON log lines and one EMF line per run with the run metrics
    lines = json_lines(capsys.readouterr().out)
    emf = [line for line in lines if "_aws" in line]
    assert len(emf) == 2
    metric_names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Rows", "AlertsSent", "AlertsSkipped", "Blocks", "Unblocks", "ApiCalls"} <= metric_names
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Costguard"
    assert emf[0]["Rows"] == 4 and emf[0]["AlertsSent"] == first["alerts"]["sent"] and emf[1]["AlertsSent"] == 0
    # The template's alarms read these: AlertsFailed and Succeeded (dimension Job=reconcile)
    assert (emf[0]["AlertsFailed"], emf[0]["Succeeded"], emf[0]["Job"]) == (0, 1, "reconcile")
    logs = [line for line in lines if line.get("logger") == "costguard.lambda"]
    assert [line["message"] for line in logs] == ["reconciliation started", "reconciliation finished"] * 2
    assert logs[1]["summary"]["rows"] == 4 and logs[0]["request_id"] == "req-1"
    # AND the root logger was left alone
    assert logging.getLogger().handlers == root_handlers


def test_handler_dry_run_from_event_sends_and_writes_nothing(handler_env: dict[str, Any]) -> None:
    summary = handler_env["module"].handler({"dry_run": True}, FakeContext())
    assert summary["dry_run"] and summary["alerts"]["sent"] == 11 and summary["alerts"]["sent_keys"] == SAMPLE_ALERT_KEYS
    assert drain(handler_env) == [] and objects(handler_env) == {}
    with SQLiteLedger(handler_env["db"]) as ledger:
        assert ledger.alert_keys() == []


def test_handler_near_deadline_defers_alerts(handler_env: dict[str, Any]) -> None:
    summary = handler_env["module"].handler({}, FakeContext(remaining_ms=5_000))
    assert summary["alerts"]["sent"] == 0 and summary["alerts"]["deferred"] == 11
    later = handler_env["module"].handler({}, FakeContext())
    assert later["alerts"]["sent"] == summary["alerts"]["deferred"]


def test_handler_rejects_bad_input_without_raising(handler_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    summary = handler_env["module"].handler({"since": "last tuesday"}, FakeContext())
    assert summary["status"] == "invalid" and "since must be a date" in summary["error"]
    errors = [line for line in json_lines(capsys.readouterr().out) if line.get("level") == "ERROR"]
    assert errors and errors[0]["message"].startswith("reconciliation not started")


def test_handler_requires_a_ledger_url(handler_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTGUARD_LEDGER")
    summary = handler_env["module"].handler({}, FakeContext())
    assert summary["status"] == "invalid" and "COSTGUARD_LEDGER" in summary["error"]


def test_handler_imports_without_building_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3.session

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a client was built at import")

    monkeypatch.setattr(boto3.session.Session, "client", boom)
    module = load_handler()
    assert module._DEPENDENCIES is None  # noqa: SLF001


def test_result_with_no_rows_still_reports(aws: dict[str, Any], tmp_path: Path) -> None:
    empty = make_result([], start=date(2026, 11, 22), end=date(2026, 11, 23))
    with SQLiteLedger(tmp_path / "l.db") as ledger:
        summary = run_reconciliation(StubReconciler(empty), ledger, PolicySet.empty(), empty.window,
                                     topic_arn=aws["topic"], bucket=BUCKET, session=aws["session"])
    assert summary.rows == 0 and summary.alerts_evaluated == 0 and not summary.errors
    assert len(objects(aws)) == 4
