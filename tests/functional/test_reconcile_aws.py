"""The Reconciler against moto (Cost Explorer, CloudWatch) and a real SQLite ledger.

moto 5.2 notes (see the report in the PR):

* ``get_cost_and_usage`` answers from a queue seeded through the moto API. moto keys each queued
  result by the raw request body, so pages work: the first request (no token) takes the first
  result, the request carrying ``NextPageToken`` p2 takes the next, and so on; a repeated
  identical request gets the same page again.
* ``get_dimension_values`` is not implemented (the client raises ``NotImplementedError``). The
  tests answer it with a ``before-call`` handler on the test's own client (what ``Stubber`` does,
  for one operation only); production code treats a failed discovery as "Amazon Bedrock only"
  plus a warning, which is tested with a ``Stubber`` error.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws

from costguard.alerts import evaluate_alerts
from costguard.jobs import run_reconciliation
from costguard.ledger.sqlite import SQLiteLedger
from costguard.policy import PolicySet
from costguard.reconcile import UNTAGGED, Reconciler, ReconcileError, Window
from costguard.usage import ModelCallRecord, PeriodLimit, RequestSegment, Totals
from tests.support.ledger_data import segment

TAG = "costguard:workflow"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"
WINDOW = Window(date(2026, 11, 20), date(2026, 11, 22))  # the 20th and the 21st
NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
MARKETPLACE = "Claude 3 Haiku (Amazon Bedrock Edition)"
POLICIES = PolicySet.from_yaml(
    """
version: 1
workflows:
  claims-intake:
    budget: {daily_usd: 10, monthly_usd: 100}
"""
)


def ms(day: str, hour: int = 12) -> int:
    return int(datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC).timestamp() * 1000)


def ce_group(workflow: str, usage_type: str, amount: str) -> dict[str, Any]:
    return {
        "Keys": [f"{TAG}${workflow}", usage_type],
        "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}, "UsageQuantity": {"Amount": "1", "Unit": "N/A"}},
    }


def service_group(service: str, usage_type: str, amount: str, quantity: str = "1") -> dict[str, Any]:
    return {
        "Keys": [service, usage_type],
        "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"},
                    "UsageQuantity": {"Amount": quantity, "Unit": "N/A"}},
    }


def ce_day(day: str, groups: list[dict[str, Any]], estimated: bool = False) -> dict[str, Any]:
    return {"TimePeriod": {"Start": day, "End": day}, "Total": {}, "Groups": groups, "Estimated": estimated}


def seed_ce(pages: list[dict[str, Any]]) -> None:
    r = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/ce/cost-and-usage-results", json={"results": pages}, timeout=5
    )
    assert r.status_code == 201


def answer_dimension_values(client: Any, values: list[str]) -> list[dict[str, Any]]:
    """Answer GetDimensionValues on ``client`` (moto lacks it); returns the params seen."""
    seen = capture(client, "GetDimensionValues")

    def handler(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        body = {"DimensionValues": [{"Value": v, "Attributes": {}} for v in values], "ReturnSize": len(values),
                "TotalSize": len(values)}
        return AWSResponse("https://ce", 200, {}, None), body  # type: ignore[arg-type]

    client.meta.events.register("before-call.ce.GetDimensionValues", handler)
    return seen


def capture(client: Any, operation: str) -> list[dict[str, Any]]:
    """The API parameters of every ``operation`` call made on ``client``."""
    seen: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == operation:
            seen.append(dict(params))

    client.meta.events.register("before-parameter-build.*.*", handler)
    return seen


def put(cw: Any, namespace: str, metric: str, dims: dict[str, str], day: str, value: float, hour: int = 10) -> None:
    cw.put_metric_data(
        Namespace=namespace,
        MetricData=[{
            "MetricName": metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
            "Timestamp": datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC),
            "Value": value,
            "Unit": "Count",
        }],
    )


@pytest.fixture()
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(tmp_path / "l.db")
    yield led
    led.close()


_ids = itertools.count()


def record(ledger: SQLiteLedger, workflow: str, day: str, nanos: int, *, model: str = HAIKU, calls: int = 1,
           priced: bool = True, budget: bool = False) -> None:
    reservation = None
    if budget:
        periods = [PeriodLimit(f"day:{day}", None), PeriodLimit(f"month:{day[:7]}", None)]
        result = ledger.reserve(workflow, periods, nanos)
        assert result.ok
        reservation = result.reservation
    ledger.record(segment(f"r{next(_ids)}", nanos, session=f"s{next(_ids)}", workflow=workflow, ts_ms=ms(day),
                          model=model, model_calls=calls, priced=priced, reservation=reservation))


def test_reconcile_joins_cost_explorer_cloudwatch_and_the_ledger(aws: None, ledger: SQLiteLedger) -> None:
    # GIVEN metered usage: claims-intake on both days (with budget counters), an unpriced model
    record(ledger, "claims-intake", "2026-11-05", 2_000_000_000, budget=True)  # earlier this month
    record(ledger, "claims-intake", "2026-11-20", 1_000_000_000, calls=2, budget=True)
    record(ledger, "claims-intake", "2026-11-21", 500_000_000, budget=True)
    record(ledger, "triage", "2026-11-21", 250_000_000, model="mistral.unknown-v9:0", priced=False)

    # AND Cost Explorer's bill: the query per model (one page), then the one per workflow tag
    # (three pages); the 21st is still estimated
    seed_ce([
        {"ResultsByTime": [
            ce_day("2026-11-20", [service_group(MARKETPLACE, "USE1-MP:USE1_InputTokenCount-Units", "0.70"),
                                  service_group(MARKETPLACE, "USE1-MP:USE1_OutputTokenCount-Units", "0.4"),
                                  service_group("Amazon Bedrock", "USE1-NovaLite-input-tokens", "0.05")]),
            ce_day("2026-11-21", [service_group(MARKETPLACE, "USE1-MP:USE1_InputTokenCount-Units", "0.45")],
                   estimated=True)]},
        {"ResultsByTime": [ce_day("2026-11-20", [ce_group("claims-intake", "USE1-MP:USE1_InputTokenCount-Units",
                                                          "0.70")])],
         "NextPageToken": "p2"},
        {"ResultsByTime": [ce_day("2026-11-20", [ce_group("claims-intake", "USE1-MP:USE1_OutputTokenCount-Units", "0.4"),
                                                 ce_group("", "USE1-NovaLite-input-tokens", "0.05")])],
         "NextPageToken": "p3"},
        {"ResultsByTime": [ce_day("2026-11-21", [ce_group("claims-intake", "USE1-MP:USE1_InputTokenCount-Units",
                                                          "0.45")], estimated=True)]},
    ])
    ce = boto3.client("ce", region_name="us-east-1")
    discovery = answer_dimension_values(ce, ["Amazon Bedrock", MARKETPLACE, "Amazon Bedrock Edition of nothing",
                                             "Amazon EC2"])
    ce_requests = capture(ce, "GetCostAndUsage")

    # AND what CloudWatch saw: Bedrock counted more Haiku tokens than costguard metered (calls
    # that bypassed the wrapper, through a cross-region profile) and a model costguard never saw
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    put(cw, "AWS/Bedrock", "InputTokenCount", {"ModelId": HAIKU}, "2026-11-20", 200)
    put(cw, "AWS/Bedrock", "InputTokenCount", {"ModelId": f"us.{HAIKU}"}, "2026-11-20", 5000)
    put(cw, "AWS/Bedrock", "OutputTokenCount", {"ModelId": HAIKU}, "2026-11-20", 20)
    put(cw, "AWS/Bedrock", "Invocations", {"ModelId": HAIKU}, "2026-11-20", 2)
    put(cw, "AWS/Bedrock", "Invocations", {"ModelId": f"us.{HAIKU}"}, "2026-11-20", 7)
    put(cw, "AWS/Bedrock", "InvocationThrottles", {"ModelId": HAIKU}, "2026-11-21", 3)
    put(cw, "AWS/Bedrock", "InputTokenCount", {"ModelId": f"us.{NOVA_LITE}"}, "2026-11-21", 1234)
    put(cw, "AWS/Bedrock", "InputTokenCount", {"ModelId": HAIKU}, "2026-11-25", 99)  # outside the window
    put(cw, "Costguard", "ModelCalls", {"Workflow": "claims-intake", "ModelId": HAIKU}, "2026-11-20", 2)
    put(cw, "Costguard", "ModelCalls", {"Workflow": "claims-intake", "ModelId": NOVA_LITE}, "2026-11-20", 1)
    put(cw, "Costguard", "Throttles", {"Workflow": "claims-intake"}, "2026-11-21", 4)
    put(cw, "Costguard", "Throttles", {"Workflow": "claims-intake", "ModelId": HAIKU}, "2026-11-21", 1)

    sleeps: list[float] = []
    reconciler = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW,
                            sleep=sleeps.append)
    result = reconciler.run(WINDOW)

    # THEN Cost Explorer was asked once per page, filtered on every Bedrock service found
    assert result.api_calls["ce:GetDimensionValues"] == 1
    assert result.api_calls["ce:GetCostAndUsage"] == 4  # one page by service, three by tag
    assert result.api_calls["cloudwatch:ListMetrics"] == 2  # one per namespace, not one per metric
    assert result.api_calls["cloudwatch:GetMetricData"] == 1
    assert discovery[0]["Dimension"] == "SERVICE" and discovery[0]["SearchString"] == "Bedrock"
    assert discovery[0]["TimePeriod"] == {"Start": "2026-11-20", "End": "2026-11-22"}
    by_service, first = ce_requests[0], ce_requests[1]
    assert by_service["GroupBy"] == [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}]
    assert first["Filter"] == by_service["Filter"] == {"Dimensions": {"Key": "SERVICE", "Values": sorted(
        ["Amazon Bedrock", MARKETPLACE, "Amazon Bedrock Edition of nothing"])}}
    assert first["GroupBy"] == [{"Type": "TAG", "Key": TAG}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}]
    assert first["Granularity"] == "DAILY" and first["Metrics"] == ["UnblendedCost", "UsageQuantity"]
    assert "NextPageToken" not in first and "NextPageToken" not in by_service
    assert [r.get("NextPageToken") for r in ce_requests[2:]] == ["p2", "p3"]
    assert sleeps == []
    assert result.services == sorted(["Amazon Bedrock", MARKETPLACE, "Amazon Bedrock Edition of nothing"])

    rec = {(r["workflow"], r["day"]): r for r in result.frame.to_dict("records")}
    assert set(rec) == {(w, d) for w in ("claims-intake", "triage", UNTAGGED) for d in ("2026-11-20", "2026-11-21")}
    c20 = rec[("claims-intake", "2026-11-20")]
    assert c20["metered_cost_usd"] == Decimal("1") and c20["billed_cost_usd"] == Decimal("1.10")
    assert c20["drift_usd"] == Decimal("0.10") and c20["drift_pct"] == Decimal("9.09")
    assert not c20["estimated"]
    assert c20["metered_model_calls"] == 2 and c20["costguard_model_calls"] == 3
    assert c20["month_to_date_usd"] == Decimal("3")  # the 5th and the 20th
    assert c20["burn_rate_usd_per_day"] == Decimal("0.15") and c20["forecast_month_end_usd"] == Decimal("4.50")
    assert c20["budget_daily_usd"] == Decimal("10") and c20["budget_monthly_usd"] == Decimal("100")
    c21 = rec[("claims-intake", "2026-11-21")]
    assert c21["estimated"] and c21["billed_cost_usd"] == Decimal("0.45")
    assert c21["throttles"] == 5
    assert c21["month_to_date_usd"] == Decimal("3.5")
    u20 = rec[(UNTAGGED, "2026-11-20")]
    assert u20["billed_cost_usd"] == Decimal("0.05") and u20["metered_cost_usd"] == Decimal(0)
    assert u20["drift_pct"] is None  # untagged spend is never compared
    t21 = rec[("triage", "2026-11-21")]  # no tag names triage: the meter's attribution, labelled
    assert t21["metered_cost_usd"] == Decimal("0.25") and t21["billed_cost_usd"] is None
    assert t21["attribution"] == "meter" and t21["drift_pct"] is None
    assert result.unattributed_workflows() == ["triage"]
    assert result.estimated_days == ["2026-11-21"]
    assert result.unpriced_models == ["mistral.unknown-v9:0"]

    models = {(r["day"], r["model_id"]): r for r in result.models.to_dict("records")}
    h20 = models[("2026-11-20", HAIKU)]  # the us. profile and the plain id meet
    assert h20["bedrock_input_tokens"] == 5200 and h20["bedrock_invocations"] == 9
    assert h20["metered_input_tokens"] == 200 and h20["unmetered_input_tokens"] == 5000
    assert h20["bedrock_output_tokens"] == 20 and h20["unmetered_output_tokens"] == 0
    assert h20["billed_cost_usd"] == Decimal("1.10") and h20["metered_cost_usd"] == Decimal("1")
    assert h20["drift_pct"] == Decimal("9.09") and not h20["estimated"]
    assert models[("2026-11-21", HAIKU)]["bedrock_throttles"] == 3
    nova = models[("2026-11-21", NOVA_LITE)]
    assert nova["metered_input_tokens"] == 0 and nova["unmetered_input_tokens"] == 1234

    # AND a second run counts its own API calls only (and re-reads the same pages: moto replays)
    again = reconciler.run(WINDOW)
    assert again.api_calls["ce:GetCostAndUsage"] == 4
    assert again.frame.equals(result.frame)


def _stub_page(day: str, amount: str) -> dict[str, Any]:
    return {"ResultsByTime": [ce_day(day, [ce_group("claims-intake", "USE1-x-input-tokens", amount)])]}


def test_limit_exceeded_is_retried_with_backoff(aws: None, ledger: SQLiteLedger) -> None:
    ce = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(ce)
    stub.add_response("get_dimension_values", {"DimensionValues": [], "ReturnSize": 0, "TotalSize": 0})
    stub.add_client_error("get_cost_and_usage", "LimitExceededException", "Rate exceeded", 400)
    stub.add_client_error("get_cost_and_usage", "LimitExceededException", "Rate exceeded", 400)
    stub.add_response("get_cost_and_usage", _stub_page("2026-11-20", "2.5"))  # by service
    stub.add_response("get_cost_and_usage", _stub_page("2026-11-20", "2.5"))  # by tag
    sleeps: list[float] = []
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    with stub:
        result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW,
                            sleep=sleeps.append).run(WINDOW)
    stub.assert_no_pending_responses()
    assert sleeps == [1.0, 2.0]
    assert result.api_calls["ce:GetCostAndUsage"] == 4
    rec = {(r["workflow"], r["day"]): r for r in result.frame.to_dict("records")}
    assert rec[("claims-intake", "2026-11-20")]["billed_cost_usd"] == Decimal("2.5")


def test_throttling_that_never_ends_is_a_reconcile_error(aws: None, ledger: SQLiteLedger) -> None:
    ce = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(ce)
    stub.add_response("get_dimension_values", {"DimensionValues": [], "ReturnSize": 0, "TotalSize": 0})
    for _ in range(3):
        stub.add_client_error("get_cost_and_usage", "LimitExceededException", "Rate exceeded", 400)
    sleeps: list[float] = []
    with stub, pytest.raises(ReconcileError, match="still throttled .*after 3 attempts"):
        Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch"),
                   sleep=sleeps.append, max_attempts=3).run(WINDOW)
    assert sleeps == [1.0, 2.0]


def test_failed_service_discovery_falls_back_to_amazon_bedrock_and_suppresses_drift(
    aws: None, ledger: SQLiteLedger
) -> None:
    record(ledger, "claims-intake", "2026-11-20", 1_000_000_000)
    ce = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(ce)
    stub.add_client_error("get_dimension_values", "AccessDeniedException", "not allowed", 400)
    by_service = {
        "TimePeriod": {"Start": "2026-11-20", "End": "2026-11-22"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost", "UsageQuantity"],
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon Bedrock"]}},
        "GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
    }
    by_tag = {**by_service, "GroupBy": [{"Type": "TAG", "Key": TAG}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}]}
    stub.add_response("get_cost_and_usage", {**_stub_page("2026-11-20", "1"), "NextPageToken": "n"}, by_service)
    stub.add_response("get_cost_and_usage", _stub_page("2026-11-21", "2"), {**by_service, "NextPageToken": "n"})
    stub.add_response("get_cost_and_usage", _stub_page("2026-11-20", "5"), by_tag)
    with stub:
        result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch"),
                            clock=lambda: NOW).run(WINDOW)
    assert result.services == ["Amazon Bedrock"]
    assert result.warnings and "AccessDeniedException" in result.warnings[0]
    assert result.api_calls["ce:GetDimensionValues"] == 1 and result.api_calls["ce:GetCostAndUsage"] == 3
    # the figures are kept (billed 5 vs metered 1) but no drift alert may come of them: the
    # Marketplace editions are missing from the bill the run could see
    assert result.drift_suppressed_days == ["2026-11-20", "2026-11-21"]
    assert any("drift alerts suppressed for 2026-11-20..2026-11-21" in w for w in result.warnings)
    rec = {(r["workflow"], r["day"]): r for r in result.frame.to_dict("records")}
    assert rec[("claims-intake", "2026-11-20")]["drift_pct"] == Decimal("80.00")
    assert [a for a in evaluate_alerts(result, POLICIES) if a.kind == "drift"] == []


def test_malformed_cost_explorer_page_names_page_and_field(aws: None, ledger: SQLiteLedger) -> None:
    seed_ce([
        {"ResultsByTime": [ce_day("2026-11-20", [])], "NextPageToken": "p2"},
        {"ResultsByTime": [ce_day("2026-11-20", [ce_group("claims-intake", "u", "1.2.3")])]},
    ])
    ce = boto3.client("ce", region_name="us-east-1")
    answer_dimension_values(ce, ["Amazon Bedrock"])
    with pytest.raises(ReconcileError, match=r"page 2: ResultsByTime\[0\]\.Groups\[0\]\.Metrics\.UnblendedCost"
                                             r"\.Amount: not a number: '1\.2\.3'"):
        Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch")).run(WINDOW)


def test_other_client_errors_are_reconcile_errors(aws: None, ledger: SQLiteLedger) -> None:
    ce = boto3.client("ce", region_name="us-east-1")
    stub = Stubber(ce)
    stub.add_response("get_dimension_values", {"DimensionValues": [], "ReturnSize": 0, "TotalSize": 0})
    stub.add_client_error("get_cost_and_usage", "DataUnavailableException", "no data", 400)
    with stub, pytest.raises(ReconcileError, match="ce:get_cost_and_usage failed: DataUnavailableException"):
        Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch")).run(WINDOW)


def test_get_metric_data_is_chunked_at_500_queries(aws: None, ledger: SQLiteLedger) -> None:
    seed_ce([{"ResultsByTime": [ce_day("2026-11-20", [])]}])
    ce = boto3.client("ce", region_name="us-east-1")
    answer_dimension_values(ce, [])
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    stamp = datetime(2026, 11, 20, 3, tzinfo=UTC)
    data = [
        {"MetricName": "InputTokenCount", "Dimensions": [{"Name": "ModelId", "Value": f"vendor.model-{i}-v1:0"}],
         "Timestamp": stamp, "Value": float(i), "Unit": "Count"}
        for i in range(510)
    ]
    for offset in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/Bedrock", MetricData=data[offset:offset + 500])
    queries = capture(cw, "GetMetricData")
    result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW).run(WINDOW)
    assert result.api_calls["cloudwatch:GetMetricData"] == 2
    assert [len(q["MetricDataQueries"]) for q in queries] == [500, 10]
    ids = [q["Id"] for request in queries for q in request["MetricDataQueries"]]
    assert len(set(ids)) == 510
    assert sum(result.models["bedrock_input_tokens"]) == sum(range(510))
    assert sum(result.models["unmetered_input_tokens"]) == sum(range(510))


def test_lazy_clients_from_a_session(aws: None, ledger: SQLiteLedger) -> None:
    page = {"ResultsByTime": [ce_day("2026-11-20", [ce_group("claims-intake", "USE1-NovaLite-input-tokens", "3")])]}
    seed_ce([{"ResultsByTime": [ce_day("2026-11-20", [])]}, page])
    session = boto3.Session(region_name="us-east-1")
    reconciler = Reconciler(ledger, POLICIES, session=session, region_name="us-east-1", clock=lambda: NOW)
    answer_dimension_values(reconciler.ce, ["Amazon Bedrock"])
    result = reconciler.run(WINDOW)
    assert result.api_calls["ce:GetCostAndUsage"] == 2
    assert result.frame.loc[result.frame["day"] == "2026-11-20", "billed_cost_usd"].tolist() == [Decimal("3")]


def test_agent_metrics_read_the_documented_dimension_sets_without_double_counting(
    aws: None, ledger: SQLiteLedger
) -> None:
    seed_ce([{"ResultsByTime": [ce_day("2026-11-20", [])]}])
    ce = boto3.client("ce", region_name="us-east-1")
    answer_dimension_values(ce, [])
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    alias = "arn:aws:bedrock:us-east-1:123456789012:agent-alias/A1B2C3D4E5/AL1B2C3D4E"
    other = "arn:aws:bedrock:us-east-1:123456789012:agent-alias/A1B2C3D4E5/TSTALIASID"
    nova = "amazon.nova-pro-v1:0"
    # AWS publishes each agent metric under {Operation}, {Operation, ModelId} and
    # {Operation, AgentAliasArn, ModelId}: the first two are aggregates of the third
    for dims, value in (
        ({"Operation": "InvokeAgent", "AgentAliasArn": alias, "ModelId": HAIKU}, 900),
        ({"Operation": "InvokeAgent", "AgentAliasArn": alias, "ModelId": nova}, 100),
        ({"Operation": "InvokeInlineAgent", "AgentAliasArn": other, "ModelId": HAIKU}, 40),
        ({"Operation": "InvokeAgent", "ModelId": HAIKU}, 940),
        ({"Operation": "InvokeAgent", "ModelId": nova}, 100),
        ({"Operation": "InvokeAgent"}, 1040),
    ):
        put(cw, "AWS/Bedrock/Agents", "InputTokenCount", dims, "2026-11-20", value)
    put(cw, "AWS/Bedrock/Agents", "OutputTokenCount", {"Operation": "InvokeAgent", "AgentAliasArn": alias,
                                                       "ModelId": HAIKU}, "2026-11-20", 70)
    put(cw, "AWS/Bedrock/Agents", "InvocationThrottles", {"Operation": "InvokeAgent", "AgentAliasArn": alias,
                                                          "ModelId": HAIKU}, "2026-11-21", 2)
    put(cw, "AWS/Bedrock/Agents", "InvocationThrottles", {"Operation": "InvokeAgent"}, "2026-11-21", 2)
    plain = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW).run(WINDOW)
    assert len(plain.agents) == 0
    result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW,
                        include_agents=True).run(WINDOW)
    rec = {(r["day"], r["agent_alias_arn"]): r for r in result.agents.to_dict("records")}
    assert set(rec) == {("2026-11-20", alias), ("2026-11-20", other), ("2026-11-21", alias)}
    assert rec[("2026-11-20", alias)]["input_tokens"] == 1000  # both models of the alias, once each
    assert rec[("2026-11-20", alias)]["output_tokens"] == 70
    assert rec[("2026-11-20", other)]["input_tokens"] == 40
    assert rec[("2026-11-21", alias)]["throttles"] == 2
    # one listing of the namespace, filtered on AgentAliasArn: not one per metric name
    assert result.api_calls["cloudwatch:ListMetrics"] == plain.api_calls["cloudwatch:ListMetrics"] + 1


# -- acceptance: recorded-shape bills with the usage types AWS emits ------------------------------------

HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"
SONNET_4 = "anthropic.claude-sonnet-4-20250514-v1:0"
HAIKU_35_EDITION = "Claude 3.5 Haiku (Amazon Bedrock Edition)"
AGENTCORE_SERVICE = "Amazon Bedrock AgentCore"
IAM_TAG = "iamPrincipal/team"
# Published on-demand prices, USD per 1M tokens (aws.amazon.com/bedrock/pricing, us-east-1), as
# the test's own figures: Claude 3.5 Haiku input 0.80, output 4.00, cache read 0.08, cache write
# (5 min) 1.00; Nova Lite input 0.06, output 0.24. Long-context Claude Sonnet 4 input is billed at
# twice its 3.00 input price; a 1-hour cache write at twice the input price.
M = Decimal(1_000_000)


def usd(tokens: int, per_million: str) -> Decimal:
    return tokens * Decimal(per_million) / M


def nanos(amount: Decimal) -> int:
    return int(amount * 1_000_000_000)


def meter_call(ledger: SQLiteLedger, workflow: str, day: str, model: str, *, inp: int, out: int, cache_read: int = 0,
               cache_write: int = 0, cost: Decimal) -> None:
    """One metered model call with its token counts and its exact cost."""
    rid, ts = f"r{next(_ids)}", ms(day)
    call = ModelCallRecord(rid, workflow, f"s-{rid}", ts, f"us.{model}", model, "ORCHESTRATION", inp, out,
                           cache_read, cache_write, nanos(cost), True)
    totals = Totals(model_calls=1, input_tokens=inp, output_tokens=out, cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write, cost_nanos=nanos(cost))
    ledger.record(RequestSegment(rid, workflow, f"s-{rid}", None, "Converse", None, None, ts, ts + 1, "ok", totals,
                                 totals.copy(), 1, 1, 0, 0, 0, None, [call], [], []))


def test_real_usage_types_reconcile_kind_by_kind_per_model_and_workflow(aws: None, ledger: SQLiteLedger) -> None:
    d20, d21 = "2026-11-20", "2026-11-21"
    # GIVEN what the meter priced on the 20th: claims-intake (an application inference profile
    # tagged costguard:workflow) on Claude 3.5 Haiku with prompt caching, search (an IAM role
    # tagged team=search) and triage (plain model id, no tag anywhere) on Nova Lite
    haiku_cost = usd(1_000_000, "0.80") + usd(100_000, "4.00") + usd(2_000_000, "0.08") + usd(200_000, "1.00")
    assert haiku_cost == Decimal("1.56")
    meter_call(ledger, "claims-intake", d20, HAIKU_35, inp=1_000_000, out=100_000, cache_read=2_000_000,
               cache_write=200_000, cost=haiku_cost)
    meter_call(ledger, "search", d20, NOVA_LITE, inp=500_000, out=50_000,
               cost=usd(500_000, "0.06") + usd(50_000, "0.24"))
    meter_call(ledger, "triage", d20, NOVA_LITE, inp=100_000, out=10_000,
               cost=usd(100_000, "0.06") + usd(10_000, "0.24"))
    meter_call(ledger, "claims-intake", d21, HAIKU_35, inp=500_000, out=0, cost=usd(500_000, "0.80"))

    # AND the bill as Cost Explorer pages it. Marketplace usage types (quantities in millions of
    # tokens): Haiku's cache writes split 150K at the 5-minute price, 50K at the 1-hour price
    haiku_lines = [
        ("USE1-MP:USE1_InputTokenCount-Units", "0.80", "1"),
        ("USE1-MP:USE1_OutputTokenCount-Units", "0.40", "0.1"),
        ("USE1-MP:USE1_CacheReadInputTokenCount_Global-Units", "0.16", "2"),
        ("USE1-MP:USE1_CacheWriteInputTokenCount-Units", "0.15", "0.15"),
        ("USE1-MP:USE1_CacheWrite1hInputTokenCount_Global-Units", "0.10", "0.05"),
    ]
    # first-party usage types (quantities in thousands of tokens)
    search_lines = [("USE1-NovaLite-input-tokens", "0.03", "500"), ("USE1-NovaLite-output-tokens", "0.012", "50")]
    triage_lines = [("USE1-NovaLite-input-tokens", "0.006", "100"), ("USE1-NovaLite-output-tokens", "0.0024", "10")]
    unmetered_lines = [
        ("USE1-NovaLite-input-tokens-batch", "0.03", "1000"),  # a batch job: the meter never sees batch
        ("USE1-Claude4Sonnet-input-tokens-long-context-cross-region-global", "0.06", "10"),
        ("USE1-Nova2.0Lite-input-tokens-cross-region-geo", "0.0015", "5"),
        ("USE1-Claude4Sonnet-reserved-1-month-input-tokens-per-minute-cross-region-global", "5.00", "1"),
    ]
    agentcore_line = ("USE1-AgentCore-Runtime-vCPU-Hours", "2.00", "10")

    def groups(key: str, lines: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        return [service_group(key, u, a, q) for u, a, q in lines]

    by_service = {"ResultsByTime": [
        ce_day(d20, groups(HAIKU_35_EDITION, haiku_lines)
               + groups("Amazon Bedrock", [("USE1-NovaLite-input-tokens", "0.036", "600"),
                                           ("USE1-NovaLite-output-tokens", "0.0144", "60"), *unmetered_lines])
               + groups(AGENTCORE_SERVICE, [agentcore_line])),
        ce_day(d21, groups(HAIKU_35_EDITION, [("USE1-MP:USE1_InputTokenCount-Units", "0.40", "0.5")]),
               estimated=True),
    ]}
    by_workflow_tag = {"ResultsByTime": [
        ce_day(d20, groups(f"{TAG}$claims-intake", haiku_lines)
               + groups(f"{TAG}$", [*search_lines, *triage_lines, *unmetered_lines, agentcore_line])),
        ce_day(d21, groups(f"{TAG}$claims-intake", [("USE1-MP:USE1_InputTokenCount-Units", "0.40", "0.5")]),
               estimated=True),
    ]}
    by_iam_tag = {"ResultsByTime": [
        ce_day(d20, groups(f"{IAM_TAG}$search", search_lines)
               + groups(f"{IAM_TAG}$", [*triage_lines, *unmetered_lines, agentcore_line])),
        ce_day(d21, [], estimated=True),
    ]}
    # as Cost Explorer returns them: the grouping named on every page
    usage_type_dim = {"Type": "DIMENSION", "Key": "USAGE_TYPE"}
    for page, first in ((by_service, {"Type": "DIMENSION", "Key": "SERVICE"}), (by_workflow_tag, {"Type": "TAG", "Key": TAG}),
                        (by_iam_tag, {"Type": "TAG", "Key": IAM_TAG})):
        page["GroupDefinitions"] = [first, usage_type_dim]
        page["DimensionValueAttributes"] = []
    seed_ce([by_service, by_workflow_tag, by_iam_tag])
    ce = boto3.client("ce", region_name="us-east-1")
    answer_dimension_values(ce, ["Amazon Bedrock", HAIKU_35_EDITION, AGENTCORE_SERVICE])
    ce_requests = capture(ce, "GetCostAndUsage")

    # AND CloudWatch: Bedrock saw 95,500 more cache-read tokens on Haiku than the meter did
    cw = boto3.client("cloudwatch", region_name="us-east-1")
    for metric, value in (("InputTokenCount", 1_000_000), ("OutputTokenCount", 100_000),
                          ("CacheReadInputTokenCount", 2_095_500), ("CacheWriteInputTokenCount", 200_000)):
        put(cw, "AWS/Bedrock", metric, {"ModelId": f"us.{HAIKU_35}"}, d20, value)
    cw_requests = capture(cw, "ListMetrics")

    # WHEN the reconciler runs with both tag keys, the profile tag first
    result = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=cw, clock=lambda: NOW,
                        tag_key=[TAG, IAM_TAG]).run(WINDOW)

    # THEN Cost Explorer was asked three queries, the IAM one without what the first key attributed
    assert result.api_calls["ce:GetCostAndUsage"] == 3
    services = {"Dimensions": {"Key": "SERVICE", "Values": sorted(["Amazon Bedrock", HAIKU_35_EDITION,
                                                                   AGENTCORE_SERVICE])}}
    assert [r["GroupBy"][0] for r in ce_requests] == [{"Type": "DIMENSION", "Key": "SERVICE"},
                                                     {"Type": "TAG", "Key": TAG}, {"Type": "TAG", "Key": IAM_TAG}]
    assert ce_requests[1]["Filter"] == services
    assert ce_requests[2]["Filter"] == {"And": [services, {"Tags": {"Key": TAG, "MatchOptions": ["ABSENT"]}}]}
    # AND CloudWatch was listed once per namespace, filtered on the dimension its series carry
    assert sorted((r["Namespace"], r["Dimensions"][0]["Name"]) for r in cw_requests) == [
        ("AWS/Bedrock", "ModelId"), ("Costguard", "Workflow")]

    # AND per model and day: token spend compared with what the meter priced, kind by kind
    models = {(r["day"], r["model_id"]): r for r in result.models.to_dict("records")}
    h = models[(d20, HAIKU_35)]
    assert h["billed_cost_usd"] == Decimal("1.61") and h["metered_cost_usd"] == Decimal("1.56")
    assert h["drift_usd"] == Decimal("0.05") and h["drift_pct"] == Decimal("3.11") and not h["estimated"]
    assert (h["billed_input_tokens"], h["billed_output_tokens"]) == (1_000_000, 100_000)
    assert (h["billed_cache_read_tokens"], h["billed_cache_write_tokens"]) == (2_000_000, 200_000)
    assert (h["bedrock_cache_read_tokens"], h["metered_cache_read_tokens"]) == (2_095_500, 2_000_000)
    assert (h["unmetered_cache_read_tokens"], h["unmetered_cache_write_tokens"]) == (95_500, 0)
    lite = models[(d20, NOVA_LITE)]  # search and triage together, tagged or not
    assert lite["billed_cost_usd"] == Decimal("0.0504") and lite["metered_cost_usd"] == Decimal("0.0504")
    assert lite["drift_usd"] == Decimal(0) and lite["drift_pct"] == Decimal("0.00")
    assert (lite["billed_input_tokens"], lite["billed_output_tokens"]) == (600_000, 60_000)
    sonnet = models[(d20, SONNET_4)]  # long-context tokens nobody metered
    assert sonnet["billed_cost_usd"] == Decimal("0.06") and sonnet["billed_input_tokens"] == 10_000
    assert sonnet["metered_cost_usd"] == Decimal(0)
    assert models[(d20, "billing:Nova2.0Lite")]["billed_cost_usd"] == Decimal("0.0015")
    assert models[(d21, HAIKU_35)]["estimated"]

    kinds = {(r["level"], r["key"], r["day"], r["kind"]): r for r in result.kinds.to_dict("records")}
    cw_kind = kinds[("model", HAIKU_35, d20, "cache_write")]  # 5-minute and 1-hour writes together
    assert (cw_kind["billed_usd"], cw_kind["metered_usd"], cw_kind["drift_usd"]) == (
        Decimal("0.25"), usd(200_000, "1.00"), Decimal("0.05"))
    assert (cw_kind["billed_tokens"], cw_kind["metered_tokens"]) == (200_000, 200_000)
    for kind, billed, metered in (("input", "0.80", usd(1_000_000, "0.80")), ("output", "0.40", usd(100_000, "4.00")),
                                  ("cache_read", "0.16", usd(2_000_000, "0.08"))):
        row = kinds[("model", HAIKU_35, d20, kind)]
        assert (row["billed_usd"], row["metered_usd"]) == (Decimal(billed), metered)
    assert kinds[("workflow", "search", d20, "input")]["billed_usd"] == Decimal("0.03")
    assert kinds[("workflow", "search", d20, "input")]["metered_usd"] == usd(500_000, "0.06")
    assert not any(k[1] in ("triage", UNTAGGED) for k in kinds)  # only tag-attributed workflows

    # AND per workflow where a tag names it, the meter's attribution elsewhere, labelled
    rec = {(r["workflow"], r["day"]): r for r in result.frame.to_dict("records")}
    c = rec[("claims-intake", d20)]
    assert c["attribution"] == f"tag:{TAG}"
    assert (c["billed_cost_usd"], c["metered_cost_usd"], c["drift_usd"], c["drift_pct"]) == (
        Decimal("1.61"), Decimal("1.56"), Decimal("0.05"), Decimal("3.11"))
    s = rec[("search", d20)]
    assert s["attribution"] == f"tag:{IAM_TAG}"
    assert (s["billed_cost_usd"], s["metered_cost_usd"], s["drift_usd"]) == (Decimal("0.042"), Decimal("0.042"),
                                                                            Decimal(0))
    t = rec[("triage", d20)]
    assert t["attribution"] == "meter" and t["billed_cost_usd"] is None and t["drift_usd"] is None
    assert t["metered_cost_usd"] == Decimal("0.0084")
    u = rec[(UNTAGGED, d20)]
    assert u["billed_cost_usd"] == Decimal("0.0699")  # Nova Lite of triage, Sonnet 4 long context, Nova 2.0 Lite
    assert u["billed_non_token_usd"] == Decimal("5.03")  # batch 0.03 + provisioned 5.00
    assert u["billed_agentcore_usd"] == Decimal("2.00") and u["billed_unclassified_usd"] == Decimal(0)
    assert u["billed_total_usd"] == Decimal("7.0999") and c["billed_total_usd"] == Decimal("1.61")
    assert u["drift_usd"] is None and u["drift_pct"] is None
    assert rec[("claims-intake", d21)]["estimated"]

    # AND the whole bill of the day, token spend beside every other column
    summary = {r["day"]: r for r in result.billed_summary.to_dict("records")}[d20]
    assert summary["token_usd"] == Decimal("1.7219")
    assert (summary["batch_usd"], summary["provisioned_usd"], summary["agentcore_usd"]) == (
        Decimal("0.03"), Decimal("5.00"), Decimal("2.00"))
    assert summary["total_usd"] == Decimal("8.7519") and summary["unclassified_usd"] == Decimal(0)
    usage_rows = result.billed_usage
    one_hour = usage_rows[usage_rows["usage_type"] == "USE1-MP:USE1_CacheWrite1hInputTokenCount_Global-Units"]
    assert one_hour[["workflow", "kind", "scope", "tokens"]].values.tolist() == [
        ["claims-intake", "cache_write_1h", "global", 50_000]]

    # AND the alerts: drift per workflow and per model where it crosses the line, unmetered cache
    # tokens like input tokens, the attribution advice for triage; nothing for (untagged)
    alerts = evaluate_alerts(result, POLICIES, drift_pct_threshold=Decimal("3"))
    keys = sorted(a.key for a in alerts)
    assert keys == sorted([
        f"claims-intake|drift|3|day:{d20}",
        f"(account)|drift|3|day:{d20}|{HAIKU_35}",
        f"(account)|unmetered_usage|1000|day:{d20}|{HAIKU_35}",
        "(account)|attribution_advice|any|once",
    ])
    unmetered = next(a for a in alerts if a.kind == "unmetered_usage")
    assert unmetered.observed == "95500" and unmetered.message["detail"]["unmetered_cache_read_tokens"] == 95_500
    advice = next(a for a in alerts if a.kind == "attribution_advice")
    assert advice.message["detail"]["workflows"] == ["triage"]
    assert advice.message["detail"]["tag_keys"] == [TAG, IAM_TAG]
    assert "docs/tagging.md" in advice.message["detail"]["how"]


def test_spend_from_plain_model_ids_sends_no_drift_alert_and_the_advice_once(aws: None, ledger: SQLiteLedger) -> None:
    d20 = "2026-11-20"
    # GIVEN two workflows calling Nova Lite by its plain model id: nothing in the bill is tagged
    meter_call(ledger, "claims", d20, NOVA_LITE, inp=300_000, out=20_000, cost=usd(300_000, "0.06") + usd(20_000, "0.24"))
    meter_call(ledger, "triage", d20, NOVA_LITE, inp=100_000, out=5_000, cost=usd(100_000, "0.06") + usd(5_000, "0.24"))
    lines = [("USE1-NovaLite-input-tokens", "0.024", "400"), ("USE1-NovaLite-output-tokens", "0.006", "25")]
    seed_ce([
        {"ResultsByTime": [ce_day(d20, [service_group("Amazon Bedrock", u, a, q) for u, a, q in lines])]},
        {"ResultsByTime": [ce_day(d20, [service_group(f"{TAG}$", u, a, q) for u, a, q in lines])]},
    ])
    ce = boto3.client("ce", region_name="us-east-1")
    answer_dimension_values(ce, ["Amazon Bedrock"])
    sns = boto3.client("sns", region_name="us-east-1")
    topic = sns.create_topic(Name="costguard-alerts")["TopicArn"]
    reconciler = Reconciler(ledger, POLICIES, ce_client=ce, cloudwatch_client=boto3.client("cloudwatch"),
                            clock=lambda: NOW)

    # WHEN the scheduled job runs, and runs again
    first = run_reconciliation(reconciler, ledger, POLICIES, WINDOW, topic_arn=topic, sns_client=sns,
                               clock=lambda: NOW)
    again = run_reconciliation(reconciler, ledger, POLICIES, WINDOW, topic_arn=topic, sns_client=sns,
                               clock=lambda: NOW)

    # THEN per model the bill matches the meter, per workflow nothing is compared
    models = {(r["day"], r["model_id"]): r for r in first.result.models.to_dict("records")}
    assert models[(d20, NOVA_LITE)]["billed_cost_usd"] == Decimal("0.030")
    assert models[(d20, NOVA_LITE)]["drift_usd"] == Decimal(0)
    rec = {(r["workflow"], r["day"]): r for r in first.result.frame.to_dict("records")}
    assert rec[(UNTAGGED, d20)]["billed_cost_usd"] == Decimal("0.030") and rec[(UNTAGGED, d20)]["drift_pct"] is None
    assert rec[("claims", d20)]["attribution"] == "meter" and rec[("claims", d20)]["drift_pct"] is None
    # AND no drift alert was sent, the advice was, once, and not again on the re-run
    assert first.publish.sent == ["(account)|attribution_advice|any|once"]
    assert [a.kind for a in first.alerts] == ["attribution_advice"]
    assert first.alerts[0].message["detail"]["workflows"] == ["claims", "triage"]
    assert again.publish.sent == [] and again.publish.skipped_duplicates == ["(account)|attribution_advice|any|once"]
    assert first.errors == [] and again.errors == []
