"""What does one reconciliation cost in AWS requests? 500 workflows x 31 days, 500 Bedrock models.

Cost Explorer bills every request ($0.01) and GetMetricData bills per metric requested, so the
reconciler must ask each page once and pack 500 queries into each GetMetricData request. This
bench answers every AWS call offline with generated responses (a botocore ``before-call``
handler on the clients, as ``Stubber`` does, but computed from the request so the page loop is
exercised for real) and counts requests with the reconciler's own ``api_calls`` and a second
independent ``before-call`` counter.

Assumptions (documented because AWS does not publish them):

* Cost Explorer page size: AWS does not document how many groups a GetCostAndUsage page holds;
  the bench assumes ``--groups-per-page`` (default 500) groups per page, a day's groups
  possibly spanning pages, as CE does. Pages needed = ceil(groups / groups per page), per query.
* Groups, query per model (SERVICE x USAGE_TYPE): every model has an input-token and an
  output-token usage type every day: 500 x 2 x 31 = 31,000 groups.
* Groups, query per tag key (TAG x USAGE_TYPE): every workflow has an input-token and an
  output-token usage type every day, plus an untagged (``costguard:workflow$``) pair per day:
  (500 + 1) x 2 x 31 = 31,062 groups. ``--tag-keys`` more keys add one such query each.
* CloudWatch: 500 models x 6 AWS/Bedrock metrics (Invocations, InputTokenCount,
  OutputTokenCount, CacheReadInputTokenCount, CacheWriteInputTokenCount, InvocationThrottles)
  and 500 workflows x (ModelCalls per (Workflow, ModelId) on one model + Throttles per
  Workflow): 4,000 series. ListMetrics returns 500 per page.

    python bench/reconcile_cost.py [--workflows 500] [--days 31] [--models 500] [--groups-per-page 500] [--tag-keys 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from costguard.ledger.sqlite import SQLiteLedger
from costguard.policy import PolicySet
from costguard.reconcile import MAX_QUERIES_PER_REQUEST, Reconciler, Window
from costguard.usage import ModelCallRecord, RequestSegment, Totals

TAG = "costguard:workflow"


def _ok(body: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse("https://offline", 200, {}, None), body  # type: ignore[arg-type]


class FakeAWS:
    """Generated CE and CloudWatch answers, computed from each call's API parameters."""

    def __init__(self, workflows: list[str], models: list[str], days: list[str], groups_per_page: int) -> None:
        self.workflows, self.models, self.days = workflows, models, days
        self.groups_per_page = groups_per_page
        self.groups = [
            (day, w, f"USE1-{kind}-tokens")
            for day in days
            for w in [*workflows, ""]
            for kind in ("input", "output")
        ]
        self.service_groups = [
            (day, "Amazon Bedrock", f"USE1-{model}-mantle-{kind}-tokens-standard")
            for day in days
            for model in models
            for kind in ("input", "output")
        ]
        self.series: dict[str, list[dict[str, Any]]] = {}
        self.series["AWS/Bedrock"] = [
            {"Namespace": "AWS/Bedrock", "MetricName": name, "Dimensions": [{"Name": "ModelId", "Value": m}]}
            for name in ("Invocations", "InputTokenCount", "OutputTokenCount", "CacheReadInputTokenCount",
                         "CacheWriteInputTokenCount", "InvocationThrottles")
            for m in models
        ]
        self.series["Costguard"] = [
            {"Namespace": "Costguard", "MetricName": "ModelCalls",
             "Dimensions": [{"Name": "Workflow", "Value": w}, {"Name": "ModelId", "Value": models[i % len(models)]}]}
            for i, w in enumerate(workflows)
        ]
        self.series["Costguard"] += [
            {"Namespace": "Costguard", "MetricName": "Throttles", "Dimensions": [{"Name": "Workflow", "Value": w}]}
            for w in workflows
        ]
        self.served: Counter[str] = Counter()
        self.metric_queries = 0
        self._params: dict[str, Any] = {}

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.*.*", self._remember)
        client.meta.events.register("before-call.*.*", self._answer)

    def _remember(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._params = dict(params)

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        op, p = model.name, self._params
        self.served[op] += 1
        handler: Callable[[dict[str, Any]], dict[str, Any]] = getattr(self, f"_{op}")
        return _ok(handler(p))

    def _GetDimensionValues(self, p: dict[str, Any]) -> dict[str, Any]:
        values = ["Amazon Bedrock", "Claude 3 Haiku (Amazon Bedrock Edition)"]
        return {"DimensionValues": [{"Value": v, "Attributes": {}} for v in values], "ReturnSize": 2, "TotalSize": 2}

    def _GetCostAndUsage(self, p: dict[str, Any]) -> dict[str, Any]:
        by_service = p["GroupBy"][0]["Type"] == "DIMENSION"
        groups = self.service_groups if by_service else self.groups
        page = int(p.get("NextPageToken") or 0)
        chunk = groups[page * self.groups_per_page:(page + 1) * self.groups_per_page]
        by_day: dict[str, list[dict[str, Any]]] = {}
        for day, key, usage_type in chunk:
            by_day.setdefault(day, []).append({
                "Keys": [key if by_service else f"{p['GroupBy'][0]['Key']}${key}", usage_type],
                "Metrics": {"UnblendedCost": {"Amount": "0.0123456789", "Unit": "USD"},
                            "UsageQuantity": {"Amount": "1000", "Unit": "N/A"}},
            })
        body: dict[str, Any] = {
            "ResultsByTime": [
                {"TimePeriod": {"Start": d, "End": d}, "Total": {}, "Groups": g, "Estimated": d == self.days[-1]}
                for d, g in by_day.items()
            ],
            "GroupDefinitions": [p["GroupBy"][0], {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        }
        if (page + 1) * self.groups_per_page < len(groups):
            body["NextPageToken"] = str(page + 1)
        return body

    def _ListMetrics(self, p: dict[str, Any]) -> dict[str, Any]:
        wanted = {d["Name"] for d in p.get("Dimensions") or []}
        found = [m for m in self.series.get(p["Namespace"], [])
                 if wanted <= {d["Name"] for d in m["Dimensions"]}]
        start = int(p.get("NextToken") or 0)
        body: dict[str, Any] = {"Metrics": found[start:start + 500]}
        if start + 500 < len(found):
            body["NextToken"] = str(start + 500)
        return body

    def _GetMetricData(self, p: dict[str, Any]) -> dict[str, Any]:
        queries = p["MetricDataQueries"]
        self.metric_queries += len(queries)
        stamps = [datetime.fromisoformat(d).replace(tzinfo=UTC) for d in self.days]
        return {
            "MetricDataResults": [
                {"Id": q["Id"], "Label": q["Id"], "Timestamps": stamps, "Values": [10.0] * len(stamps),
                 "StatusCode": "Complete"}
                for q in queries
            ]
        }


def seed_ledger(path: Path, workflows: list[str], models: list[str], day: date) -> SQLiteLedger:
    ledger = SQLiteLedger(path)
    ts = int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000) + 3_600_000
    for i, w in enumerate(workflows):
        model = models[i % len(models)]
        call = ModelCallRecord(f"r{i}", w, f"s{i}", ts, model, model, "ORCHESTRATION", 100, 10, 0, 0, 1_000_000, True)
        totals = Totals(model_calls=1, input_tokens=100, output_tokens=10, cost_nanos=1_000_000)
        ledger.record(RequestSegment(f"r{i}", w, f"s{i}", None, "Converse", None, None, ts, ts + 1, "ok", totals,
                                     totals.copy(), 1, 1, 0, 0, 0, None, [call], [], []))
    return ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--groups-per-page", type=int, default=500)
    parser.add_argument("--tag-keys", type=int, default=1, help="cost allocation tag keys (one query each)")
    args = parser.parse_args(argv)

    start = date(2026, 10, 1)
    window = Window(start, start + timedelta(days=args.days))
    days = window.days()
    workflows = [f"wf-{i:04d}" for i in range(args.workflows)]
    models = [f"vendor.model-{i:04d}-v1:0" for i in range(args.models)]
    fake = FakeAWS(workflows, models, days, args.groups_per_page)

    session = boto3.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    ce, cw = session.client("ce"), session.client("cloudwatch")
    independent: Counter[str] = Counter()
    for client in (ce, cw):
        client.meta.events.register_first(
            "before-call.*.*", lambda model, **_: independent.update([f"{model.service_model.service_name}:{model.name}"])
        )
        fake.attach(client)

    with tempfile.TemporaryDirectory() as tmp:
        ledger = seed_ledger(Path(tmp) / "bench.db", workflows, models, window.end - timedelta(days=1))
        from costguard.pricing.catalog import PriceCatalog

        tag_keys = [TAG, *(f"iamPrincipal/key{i}" for i in range(1, args.tag_keys))]
        reconciler = Reconciler(ledger, PolicySet.empty(), ce_client=ce, cloudwatch_client=cw, tag_key=tag_keys,
                                clock=lambda: datetime(2026, 11, 1, 6, tzinfo=UTC), catalog=PriceCatalog.shipped())
        t0 = time.perf_counter()
        result = reconciler.run(window)
        elapsed = time.perf_counter() - t0
        ledger.close()

    # one query per model, one per tag key (the bench answers every tag query with the same groups)
    pages_needed = (math.ceil(len(fake.service_groups) / args.groups_per_page)
                    + args.tag_keys * math.ceil(len(fake.groups) / args.groups_per_page))
    ce_requests = result.api_calls.get("ce:GetCostAndUsage", 0)
    gmd_requests = result.api_calls.get("cloudwatch:GetMetricData", 0)
    per_500 = gmd_requests / max(1, fake.metric_queries / MAX_QUERIES_PER_REQUEST)
    print(f"window {window.start}..{window.end} ({len(days)} days), {args.workflows} workflows, {args.models} models")
    print(f"frame rows {len(result.frame):,}  models rows {len(result.models):,}  run {elapsed:.2f}s")
    print(f"Cost Explorer groups {len(fake.service_groups):,} by service + {args.tag_keys} x {len(fake.groups):,} "
          f"by tag at {args.groups_per_page}/page (assumed): "
          f"pages needed {pages_needed}, GetCostAndUsage requests {ce_requests} "
          f"({ce_requests / pages_needed:.2f} per page; target <= 2), "
          f"GetDimensionValues {result.api_calls.get('ce:GetDimensionValues', 0)}")
    print(f"CloudWatch metric queries {fake.metric_queries:,}: GetMetricData requests {gmd_requests} "
          f"({per_500:.2f} per 500 metrics; target <= 1), ListMetrics {result.api_calls.get('cloudwatch:ListMetrics', 0)}")
    print(f"api_calls {result.api_calls}")
    ok = independent == Counter(result.api_calls) == Counter(
        {f"{'ce' if op in ('GetCostAndUsage', 'GetDimensionValues') else 'cloudwatch'}:{op}": n
         for op, n in fake.served.items()}
    )
    print(f"independent before-call counter agrees: {ok}")
    good = ok and ce_requests <= 2 * pages_needed and per_500 <= 1.0
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
