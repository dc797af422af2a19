"""CloudWatchMetricsSink against moto's CloudWatch, and against an endpoint that is not there."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from costguard.metrics import CloudWatchMetricsSink, record_segment
from tests.unit.test_metrics import NOVA_MICRO, segment

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture()
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def statistics(client: Any, name: str, dimensions: dict[str, str]) -> dict[str, Any]:
    now = datetime.now(UTC)
    answer = client.get_metric_statistics(
        Namespace="Costguard",
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - timedelta(minutes=10),
        EndTime=now + timedelta(minutes=10),
        Period=60,
        Statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
    )
    (point,) = answer["Datapoints"]
    return point


def test_flush_publishes_statistic_sets_in_the_costguard_namespace(cloudwatch: Any) -> None:
    # GIVEN a sink that buffers three identical segments
    sink = CloudWatchMetricsSink(client=cloudwatch, flush_every=None)
    for _ in range(3):
        record_segment(sink, segment(workflow="claims-intake"))
    # WHEN it flushes
    sink.flush()
    # THEN CloudWatch lists the metrics with their Workflow / ModelId / Rule dimensions
    metrics = cloudwatch.list_metrics(Namespace="Costguard")["Metrics"]
    seen = {(m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"]))) for m in metrics}
    model_dims = (("ModelId", SONNET), ("Workflow", "claims-intake"))
    assert ("ModelCalls", model_dims) in seen and ("CostUSD", model_dims) in seen
    assert ("ToolResponseBytes", (("Workflow", "claims-intake"),)) in seen
    assert ("Violations", (("Rule", "per_request.max_tool_response_bytes"), ("Workflow", "claims-intake"))) in seen
    assert len(metrics) == 6 * 2 + 2 + 1
    # AND the statistics are the aggregated samples
    calls = statistics(cloudwatch, "ModelCalls", {"Workflow": "claims-intake", "ModelId": SONNET})
    assert (calls["SampleCount"], calls["Sum"]) == (6.0, 6.0)
    tokens = statistics(cloudwatch, "InputTokens", {"Workflow": "claims-intake", "ModelId": SONNET})
    assert (tokens["Sum"], tokens["Minimum"], tokens["Maximum"]) == (9000.0, 1000.0, 2000.0)
    cost = statistics(cloudwatch, "CostUSD", {"Workflow": "claims-intake", "ModelId": NOVA_MICRO})
    assert cost["Sum"] == pytest.approx(float(Decimal("0.0000147") * 3)) and cost["Unit"] == "None"
    size = statistics(cloudwatch, "ToolResponseBytes", {"Workflow": "claims-intake"})
    assert size["Unit"] == "Bytes" and size["Sum"] == 3000.0 and size["Maximum"] == 700.0
    assert sink.dropped == 0


def test_a_lazily_created_client_from_a_session(cloudwatch: Any) -> None:
    sink = CloudWatchMetricsSink(session=boto3.session.Session(region_name="us-east-1"), flush_every=None)
    sink.add("Throttles", 1, workflow="wf", model_id=NOVA_MICRO)
    sink.close()
    point = statistics(cloudwatch, "Throttles", {"Workflow": "wf", "ModelId": NOVA_MICRO})
    assert point["Sum"] == 1.0


def test_more_than_one_batch_reaches_cloudwatch(cloudwatch: Any) -> None:
    sink = CloudWatchMetricsSink(client=cloudwatch, flush_every=None)
    for i in range(1200):
        sink.add("ModelCalls", 1, workflow=f"wf-{i}")
    sink.flush()
    paginator = cloudwatch.get_paginator("list_metrics")
    names = [m for page in paginator.paginate(Namespace="Costguard") for m in page["Metrics"]]
    assert len(names) == 1200 and sink.dropped == 0


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broken_endpoint_never_raises_and_counts_what_it_dropped(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a client pointed at a closed port, with tiny timeouts and no retries
    client = boto3.client(
        "cloudwatch",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1, "mode": "standard"}),
    )
    sink = CloudWatchMetricsSink(client=client, flush_every=None)
    record_segment(sink, segment())
    samples = sum(stats.count for stats in sink.pending().values())
    # WHEN it flushes (and flushes again, and closes)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="costguard.metrics"):
        sink.flush()
        sink.flush()
        sink.close()
    # THEN nothing raised, every sample is counted as dropped, and it was said out loud
    assert sink.dropped == samples == 3 * 6 + 3 + 2 + 1  # model metrics, tool calls, sizes, violation
    assert time.monotonic() - started < 10
    assert any("PutMetricData" in r.getMessage() for r in caplog.records if r.name == "costguard.metrics")
