"""MetricsSink: aggregation, EMF shape, PutMetricData batching, bounds, and the Guard's isolation."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import costguard
from costguard.metrics import (
    MAX_EMF_METRICS_PER_EVENT,
    MAX_METRIC_DATA_PER_REQUEST,
    CloudWatchMetricsSink,
    EMFMetricsSink,
    MetricsSink,
    NullMetricsSink,
    metrics_sink_from_env,
    record_segment,
    record_throttle,
)
from costguard.policy import PolicySet
from costguard.usage import ModelCallRecord, RequestSegment, ToolCallRecord, Totals, ViolationRecord, usd_to_nanos
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"


# -- helpers ------------------------------------------------------------------------------------


def emf_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


def assert_valid_emf(doc: dict[str, Any]) -> None:
    """The structural rules of the CloudWatch embedded metric format specification."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        assert isinstance(directive["Namespace"], str) and directive["Namespace"]
        assert isinstance(directive["Dimensions"], list) and directive["Dimensions"]
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                # Every dimension key references a string member of the root node.
                assert isinstance(doc.get(key), str), key
        metrics = directive["Metrics"]
        assert 0 < len(metrics) <= MAX_EMF_METRICS_PER_EVENT
        names = [m["Name"] for m in metrics]
        assert len(names) == len(set(names))
        for metric in metrics:
            # Every metric references a numeric member of the root node.
            value = doc.get(metric["Name"])
            assert isinstance(value, (int, float)) and not isinstance(value, bool), metric
            assert metric["Unit"] in {"Count", "None", "Bytes"}


def find(lines: list[dict[str, Any]], **dims: str) -> dict[str, Any]:
    matches = [
        line
        for line in lines
        if line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [sorted(dims)]
        and all(line.get(k) == v for k, v in dims.items())
    ]
    assert len(matches) == 1, (dims, lines)
    return matches[0]


class RecordingClient:
    """A stand-in CloudWatch client: records PutMetricData calls, optionally failing some."""

    def __init__(self, fail: Mapping[int, Exception] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self._fail = dict(fail or {})

    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        index = len(self.calls)
        self.calls.append(kwargs)
        if index in self._fail:
            raise self._fail[index]
        return {}


def segment(workflow: str = "wf") -> RequestSegment:
    def model(base: str, i: int, o: int, cost: str) -> ModelCallRecord:
        return ModelCallRecord("r1", workflow, "s1", 0, f"us.{base}", base, "ORCHESTRATION", i, o, 5, 0, usd_to_nanos(cost), True)

    return RequestSegment(
        request_id="r1",
        workflow=workflow,
        session_id="s1",
        user_id=None,
        operation="InvokeAgent",
        agent_id="A",
        agent_alias_id="AL",
        started_ms=0,
        ended_ms=1,
        status="ok",
        totals=Totals(),
        delta=Totals(),
        latency_ms=1,
        model_latency_ms=0,
        tool_latency_ms=0,
        unknown_events=0,
        unpriced_calls=0,
        return_control_id=None,
        model_calls=[
            model("anthropic.claude-3-5-sonnet-20240620-v1:0", 1000, 100, "0.004500"),
            model("anthropic.claude-3-5-sonnet-20240620-v1:0", 2000, 50, "0.006750"),
            model(NOVA_MICRO, 300, 30, "0.0000147"),
        ],
        tool_calls=[
            ToolCallRecord("r1", workflow, "s1", 0, "ACTION_GROUP", "lookup", 700),
            ToolCallRecord("r1", workflow, "s1", 0, "KNOWLEDGE_BASE", None, 300),
            ToolCallRecord("r1", workflow, "s1", 0, "ACTION_GROUP", "lookup", None),
        ],
        violations=[
            ViolationRecord(0, workflow, "s1", "r1", "ResponseTooLarge", "per_request.max_tool_response_bytes", "512", "700", False),
        ],
    )


# -- aggregation --------------------------------------------------------------------------------


def test_samples_aggregate_by_name_unit_and_dimension_set() -> None:
    sink = EMFMetricsSink(stream=io.StringIO())
    for value in (3, 1, 7):
        sink.add("InputTokens", value, workflow="wf", model_id="m")
    sink.add("InputTokens", 100, workflow="wf", model_id="other")
    sink.add("InputTokens", 5, workflow="wf", model_id="m", dimensions={"Extra": "x"})
    sink.add("InputTokens", 9, "Bytes", workflow="wf", model_id="m")
    pending = sink.pending()
    assert len(pending) == 4
    stats = pending[("InputTokens", "Count", (("ModelId", "m"), ("Workflow", "wf")))]
    assert (stats.count, stats.total, stats.minimum, stats.maximum) == (3, 11, 1, 7)


def test_thousands_of_model_calls_become_a_few_data_points() -> None:
    client = RecordingClient()
    sink = CloudWatchMetricsSink(client=client, flush_every=None)
    seg = segment()
    for _ in range(1000):
        record_segment(sink, seg)
    sink.flush()
    (call,) = client.calls
    # 6 metrics x 2 models, 2 tool metrics, 1 violation series.
    assert len(call["MetricData"]) == 6 * 2 + 2 + 1
    calls = next(d for d in call["MetricData"] if d["MetricName"] == "ModelCalls" and {"Name": "ModelId", "Value": NOVA_MICRO} in d["Dimensions"])
    assert calls["StatisticValues"] == {"SampleCount": 1000.0, "Sum": 1000.0, "Minimum": 1.0, "Maximum": 1.0}


def test_decimal_sums_are_exact_until_serialisation() -> None:
    sink = EMFMetricsSink(stream=io.StringIO())
    for _ in range(10):
        sink.add("CostUSD", Decimal("0.1"), "None", workflow="wf")
    sink.add("CostUSD", Decimal("0.000000001"), "None", workflow="wf")
    (stats,) = sink.pending().values()
    assert stats.total == Decimal("1.000000001") and isinstance(stats.total, Decimal)
    # A float sample in a Decimal series neither raises nor loses the Decimal.
    sink.add("CostUSD", 0.5, "None", workflow="wf")
    (stats,) = sink.pending().values()
    assert stats.total == Decimal("1.500000001")


def test_record_segment_maps_a_request_segment_to_metrics() -> None:
    stream = io.StringIO()
    sink = EMFMetricsSink(stream=stream)
    record_segment(sink, segment())
    record_throttle(sink, "wf", None)
    sink.flush()
    lines = emf_lines(stream)
    for line in lines:
        assert_valid_emf(line)
    sonnet = find(lines, Workflow="wf", ModelId="anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert (sonnet["ModelCalls"], sonnet["InputTokens"], sonnet["OutputTokens"]) == (2, 3000, 150)
    assert (sonnet["CacheReadTokens"], sonnet["CacheWriteTokens"]) == (10, 0)
    # summed exactly (0.004500 + 0.006750), converted to a float once
    assert sonnet["CostUSD"] == float(Decimal("0.004500") + Decimal("0.006750")) == 0.01125
    nova = find(lines, Workflow="wf", ModelId=NOVA_MICRO)
    assert nova["ModelCalls"] == 1 and nova["CostUSD"] == 0.0000147
    tools = find(lines, Workflow="wf")
    assert (tools["ToolCalls"], tools["ToolResponseBytes"], tools["Throttles"]) == (3, 1000, 1)
    units = {m["Name"]: m["Unit"] for m in tools["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"ToolCalls": "Count", "ToolResponseBytes": "Bytes", "Throttles": "Count"}
    violations = find(lines, Workflow="wf", Rule="per_request.max_tool_response_bytes")
    assert violations["Violations"] == 1


def test_record_segment_records_time_to_first_token_and_tool_latency() -> None:
    stream = io.StringIO()
    sink = EMFMetricsSink(stream=stream)
    seg = segment()
    seg.ttft_ms = 640
    seg.tool_calls[0].latency_ms = 120
    seg.tool_calls[1].latency_ms = 80
    record_segment(sink, seg)
    sink.flush()
    tools = find(emf_lines(stream), Workflow="wf")
    # One EMF line per flush carries each series' sum: 120 + 80 ms of tool time.
    assert (tools["TimeToFirstTokenMs"], tools["ToolLatencyMs"]) == (640, 200)
    units = {m["Name"]: m["Unit"] for m in tools["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["TimeToFirstTokenMs"] == units["ToolLatencyMs"] == "Milliseconds"


# -- EMF ----------------------------------------------------------------------------------------


def test_emf_splits_lines_at_100_metrics_and_repeated_names() -> None:
    stream = io.StringIO()
    sink = EMFMetricsSink(stream=stream, namespace="Costguard")
    for i in range(250):
        sink.add(f"M{i:03d}", i, workflow="wf")
    sink.add("M000", 1, "Bytes", workflow="wf")  # same name, other unit: cannot share a line
    sink.add("Dimensionless", 1)
    sink.flush()
    lines = emf_lines(stream)
    for line in lines:
        assert_valid_emf(line)
        assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Costguard"
    wf_lines = [line for line in lines if line.get("Workflow") == "wf"]
    assert [len(line["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for line in wf_lines] == [100, 100, 51]
    assert sorted(line["M000"] for line in wf_lines if "M000" in line) == [0, 1]
    bare = [line for line in lines if "Dimensionless" in line]
    assert bare[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    # Flushed means gone from the buffer.
    sink.flush()
    assert len(emf_lines(stream)) == len(lines)


def test_emf_writes_to_stdout_at_flush_time(capsys: pytest.CaptureFixture[str]) -> None:
    sink = EMFMetricsSink()
    sink.add("ModelCalls", 1, workflow="wf")
    sink.flush()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["ModelCalls"] == 1


def test_emf_write_failure_is_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    stream.close()
    sink = EMFMetricsSink(stream=stream)
    sink.add("ModelCalls", 1, workflow="wf")
    sink.add("ModelCalls", 1, workflow="wf")
    with caplog.at_level(logging.WARNING, logger="costguard.metrics"):
        sink.flush()
    assert sink.dropped == 2
    assert any(r.name == "costguard.metrics" for r in caplog.records)


# -- bounds and validation ----------------------------------------------------------------------


def test_bounded_buffer_drops_and_reports_what_it_dropped() -> None:
    stream = io.StringIO()
    sink = EMFMetricsSink(stream=stream, max_buffer=3)
    for i in range(5):
        sink.add("ModelCalls", 1, workflow=f"wf{i}")
    sink.add("ModelCalls", 1, workflow="wf0")  # an existing series still aggregates when full
    assert sink.dropped == 2 and len(sink.pending()) == 3
    sink.flush()
    lines = emf_lines(stream)
    assert find(lines, Workflow="wf0")["ModelCalls"] == 2
    dropped = [line for line in lines if "MetricsDropped" in line]
    assert dropped[0]["MetricsDropped"] == 2 and dropped[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]
    # Reported once: the next flush has nothing new to report.
    sink.add("ModelCalls", 1, workflow="wf0")
    sink.flush()
    assert not any("MetricsDropped" in line for line in emf_lines(stream)[len(lines):])


def test_dimension_values_cloudwatch_would_reject_are_dropped_not_sent() -> None:
    sink = EMFMetricsSink(stream=io.StringIO())
    sink.add("ModelCalls", 1, workflow="")
    sink.add("ModelCalls", 1, workflow="caf\u00e9")
    sink.add("ModelCalls", 1, workflow="x" * 1025)
    sink.add("ModelCalls", float("nan"), workflow="ok")
    assert sink.dropped == 4 and sink.pending() == {}


def test_programming_errors_are_loud() -> None:
    sink = EMFMetricsSink(stream=io.StringIO())
    with pytest.raises(ValueError, match="StandardUnit"):
        sink.add("ModelCalls", 1, "Tokens")
    with pytest.raises(ValueError, match="dimensions"):
        sink.add("ModelCalls", 1, dimensions={f"D{i}": "v" for i in range(31)})
    with pytest.raises(TypeError):
        sink.add("ModelCalls", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EMFMetricsSink(namespace="AWS/Bedrock")


# -- PutMetricData ------------------------------------------------------------------------------


def test_put_metric_data_batches_at_the_api_limit() -> None:
    assert MAX_METRIC_DATA_PER_REQUEST == 1000
    client = RecordingClient()
    sink = CloudWatchMetricsSink(client=client, flush_every=None, max_buffer=5000)
    for i in range(2500):
        sink.add("ModelCalls", 1, workflow=f"wf{i}")
    sink.flush()
    assert [len(c["MetricData"]) for c in client.calls] == [1000, 1000, 500]
    datum = client.calls[0]["MetricData"][0]
    assert client.calls[0]["Namespace"] == "Costguard"
    assert set(datum) == {"MetricName", "Timestamp", "Unit", "StatisticValues", "Dimensions"}
    assert set(datum["StatisticValues"]) == {"SampleCount", "Sum", "Minimum", "Maximum"}
    assert all(isinstance(v, float) for v in datum["StatisticValues"].values())


def test_put_metric_data_batches_stay_under_the_request_size() -> None:
    client = RecordingClient()
    sink = CloudWatchMetricsSink(client=client, flush_every=None)
    extra = {f"D{i}": "v" * 1000 for i in range(28)}
    for i in range(100):
        sink.add("ModelCalls", 1, workflow=f"wf{i}", model_id="m" * 1000, dimensions=extra)
    sink.flush()
    assert len(client.calls) > 1 and sum(len(c["MetricData"]) for c in client.calls) == 100
    for call in client.calls:
        assert len(json.dumps(call, default=str)) < 1_000_000


def test_a_refused_batch_is_dropped_and_the_others_still_sent(caplog: pytest.LogCaptureFixture) -> None:
    refused = ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "no"}}, "PutMetricData")
    client = RecordingClient(fail={0: refused})
    sink = CloudWatchMetricsSink(client=client, flush_every=None)
    for i in range(1500):
        sink.add("ModelCalls", 1, workflow=f"wf{i}")
    sink.add("ModelCalls", 1, workflow="wf0")
    with caplog.at_level(logging.WARNING, logger="costguard.metrics"):
        sink.flush()
    assert len(client.calls) == 2
    assert sink.dropped == 1001  # the first batch held 1000 series, one of them with 2 samples
    assert "PutMetricData" in caplog.text
    # The loss is reported on the next flush.
    sink.flush()
    (dropped,) = client.calls[-1]["MetricData"]
    assert dropped["MetricName"] == "MetricsDropped" and dropped["StatisticValues"]["Sum"] == 1001.0


def test_an_unreachable_endpoint_drops_the_whole_flush_without_raising() -> None:
    client = RecordingClient(fail={0: EndpointConnectionError(endpoint_url="http://127.0.0.1:9")})
    sink = CloudWatchMetricsSink(client=client, flush_every=None)
    for i in range(1500):
        sink.add("ModelCalls", 1, workflow=f"wf{i}")
    sink.flush()
    assert len(client.calls) == 1 and sink.dropped == 1500


def test_the_client_is_created_lazily_on_first_flush() -> None:
    created: list[tuple[str, Any]] = []

    class Session:
        def client(self, service: str, config: Any = None) -> RecordingClient:
            created.append((service, config))
            return RecordingClient()

    sink = CloudWatchMetricsSink(session=Session(), flush_every=None)
    sink.add("ModelCalls", 1, workflow="wf")
    assert created == []
    sink.flush()
    sink.add("ModelCalls", 1, workflow="wf")
    sink.flush()
    assert [service for service, _ in created] == ["cloudwatch"]


def test_background_flush_every_interval_and_close_waits_for_it() -> None:
    client = RecordingClient()
    sink = CloudWatchMetricsSink(client=client, flush_every=0.0)
    sink.add("ModelCalls", 1, workflow="wf")
    sink.close()
    assert sum(len(c["MetricData"]) for c in client.calls) == 1
    assert not any(t.name == "costguard-metrics-flush" and t.is_alive() for t in threading.enumerate())


# -- the environment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lambda_name", "choice", "expected"),
    [
        (None, None, NullMetricsSink),
        ("fn", None, EMFMetricsSink),
        ("fn", "none", NullMetricsSink),
        ("fn", "cloudwatch", CloudWatchMetricsSink),
        (None, "emf", EMFMetricsSink),
        (None, "EMF ", EMFMetricsSink),
        ("fn", "bogus", EMFMetricsSink),
        (None, "bogus", NullMetricsSink),
    ],
)
def test_metrics_sink_from_env(
    monkeypatch: pytest.MonkeyPatch, lambda_name: str | None, choice: str | None, expected: type[MetricsSink]
) -> None:
    for name, value in (("AWS_LAMBDA_FUNCTION_NAME", lambda_name), ("COSTGUARD_METRICS", choice)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    sink = metrics_sink_from_env()
    assert type(sink) is expected and sink.namespace == "Costguard"


# -- the Guard never breaks a call for its telemetry -------------------------------------------


class ExplodingSink(MetricsSink):
    def __init__(self) -> None:
        self.namespace = "Costguard"
        self.dropped = 0
        self.calls = 0

    def add(
        self,
        name: str,
        value: int | float | Decimal,
        unit: str = "Count",
        *,
        workflow: str | None = None,
        model_id: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        self.calls += 1
        raise RuntimeError("sink down")

    def flush(self) -> None:
        raise OSError("sink down")

    def close(self) -> None:
        raise OSError("sink down")


def test_a_raising_sink_never_breaks_the_call(fake: FakeBedrock, tmp_path: Path) -> None:
    sink = ExplodingSink()
    policies = PolicySet.from_yaml("version: 1\nworkflows:\n  wf:\n    per_session: {max_model_calls: 1}\n")
    guard = costguard.Guard(policies, ledger=f"sqlite:///{tmp_path}/ledger.db", metrics=sink)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s")
    fake.queue_converse(100, 10)
    response = runtime.converse(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert response["usage"]["inputTokens"] == 100
    # A violation still surfaces as the violation, not as the sink's error.
    with pytest.raises(costguard.LoopCapExceeded):
        runtime.converse(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    # And an AWS error still surfaces as itself.
    for _ in range(2):  # the client's one retry of a throttled call is throttled too
        fake.queue_error(429, "ThrottlingException", "slow down")
    other = guard.wrap(fake.client("bedrock-runtime"), workflow="other", session_id="t")
    with pytest.raises(ClientError):
        other.converse(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert guard.session_usage("s").model_calls == 1  # the usage was recorded all the same
    guard.close()
    assert sink.calls == 3 and guard.metrics_errors == 4  # segment, violation, throttle, flush


def test_guard_defaults_to_no_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fn")  # no environment magic by default
    guard = costguard.Guard(ledger=f"sqlite:///{tmp_path}/ledger.db")
    assert type(guard.metrics) is NullMetricsSink
    guard.close()
