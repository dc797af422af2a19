"""costguard's own metrics, published in the ``Costguard`` CloudWatch namespace.

Three sinks share one interface (:class:`MetricsSink`):

* :class:`NullMetricsSink` — the default: metrics cost nothing and go nowhere.
* :class:`EMFMetricsSink` — for Lambda: CloudWatch embedded metric format, one JSON line per
  dimension set written to stdout (or any stream) on :meth:`~MetricsSink.flush`; CloudWatch Logs
  extracts the metrics, no API call is made.
* :class:`CloudWatchMetricsSink` — elsewhere: ``PutMetricData`` with ``StatisticValues``, batched
  (at most :data:`MAX_METRIC_DATA_PER_REQUEST` items per request), flushed every ``flush_every``
  seconds on a background thread and on :meth:`~MetricsSink.flush`/:meth:`~MetricsSink.close`.

Buffered sinks aggregate in memory by (metric name, unit, dimension set): a thousand model calls
of one workflow on one model become one data point per metric. Sums stay exact (``Decimal`` money
is kept as ``Decimal`` and becomes a float only when serialised). The buffer is bounded
(``max_buffer`` distinct series); what does not fit, and what a failed publish loses, is counted
in :attr:`MetricsSink.dropped` (in samples, i.e. ``add`` calls) and reported as ``MetricsDropped``
on the next flush. Nothing here raises out of ``flush``: telemetry must never break an agent call.

Metric names and units (see :func:`record_segment`): ``ModelCalls``, ``InputTokens``,
``OutputTokens``, ``CacheReadTokens``, ``CacheWriteTokens`` (Count; dimensions Workflow, ModelId),
``CostUSD`` (None; Workflow, ModelId), ``ToolCalls`` (Count; Workflow), ``ToolResponseBytes``
(Bytes; Workflow), ``Violations`` (Count; Workflow, Rule), ``Throttles`` (Count; Workflow and
ModelId when known), ``LedgerErrors`` (Count; Workflow), ``MetricsDropped`` (Count; none).

Publishing with PutMetricData needs ``cloudwatch:PutMetricData``, which can be scoped with the
``cloudwatch:namespace`` condition key to ``Costguard``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from costguard.usage import RequestSegment, ViolationRecord, nanos_to_usd

logger = logging.getLogger("costguard.metrics")

NAMESPACE: Final = "Costguard"

#: PutMetricData accepts at most 1000 MetricData items per request (botocore's cloudwatch
#: 2010-08-01 service model, ``PutMetricDataInput.MetricData``: "The array can include no more
#: than 1000 metrics per call"; the API reference says the same). The limit used to be 20.
MAX_METRIC_DATA_PER_REQUEST: Final = 1000
#: Each PutMetricData request is limited to 1 MB; batches are also cut on a conservative
#: estimate of their uncompressed size so a batch of long dimension values cannot exceed it.
MAX_REQUEST_BYTES_ESTIMATE: Final = 900_000
#: Dimensions per metric (``Dimensions`` list max 30 in the service model; EMF: 30 per set).
MAX_DIMENSIONS: Final = 30
MAX_DIMENSION_NAME_LENGTH: Final = 255
MAX_DIMENSION_VALUE_LENGTH: Final = 1024
MAX_METRIC_NAME_LENGTH: Final = 255
#: The embedded metric format allows at most 100 metrics per log event.
MAX_EMF_METRICS_PER_EVENT: Final = 100
DEFAULT_MAX_BUFFER: Final = 10_000
DEFAULT_FLUSH_EVERY_S: Final = 60.0

# Metric names.
MODEL_CALLS: Final = "ModelCalls"
INPUT_TOKENS: Final = "InputTokens"
OUTPUT_TOKENS: Final = "OutputTokens"
CACHE_READ_TOKENS: Final = "CacheReadTokens"
CACHE_WRITE_TOKENS: Final = "CacheWriteTokens"
COST_USD: Final = "CostUSD"
TOOL_CALLS: Final = "ToolCalls"
TOOL_RESPONSE_BYTES: Final = "ToolResponseBytes"
TOOL_LATENCY_MS: Final = "ToolLatencyMs"
TIME_TO_FIRST_TOKEN_MS: Final = "TimeToFirstTokenMs"
VIOLATIONS: Final = "Violations"
THROTTLES: Final = "Throttles"
LEDGER_ERRORS: Final = "LedgerErrors"
UNMETERED: Final = "Unmetered"
METRICS_DROPPED: Final = "MetricsDropped"

# Dimension names.
WORKFLOW: Final = "Workflow"
MODEL_ID: Final = "ModelId"
RULE: Final = "Rule"
OPERATION: Final = "Operation"

#: CloudWatch ``StandardUnit`` values (botocore's cloudwatch service model).
STANDARD_UNITS: Final = frozenset(
    {
        "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
        "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
        "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
        "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
        "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
    }
)

Number = int | float | Decimal
Dimensions = tuple[tuple[str, str], ...]
#: (metric name, unit, sorted dimensions): the aggregation key of one series.
SeriesKey = tuple[str, str, Dimensions]

_DROPPED_KEY: Final[SeriesKey] = (METRICS_DROPPED, "Count", ())


@dataclass(slots=True)
class SeriesStats:
    """What a buffered series has seen since the last flush: a CloudWatch statistic set."""

    count: int
    total: Number
    minimum: Number
    maximum: Number

    def add(self, value: Number) -> None:
        self.count += 1
        self.total = _plus(self.total, value)
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value


def _plus(a: Number, b: Number) -> Number:
    """``a + b`` that keeps Decimal exact and never mixes Decimal with float (a TypeError)."""
    if isinstance(a, float) and isinstance(b, Decimal):
        return Decimal(repr(a)) + b
    if isinstance(a, Decimal) and isinstance(b, float):
        return a + Decimal(repr(b))
    return a + b  # type: ignore[operator]


def _finite(value: Number) -> bool:
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return value.is_finite()


def _to_float(value: Number) -> float:
    return float(value)


def _json_number(value: Number) -> int | float:
    """A JSON-ready number: ints stay ints (exact counts), everything else a float."""
    return value if isinstance(value, int) else float(value)


class MetricsSink(ABC):
    """Where costguard's own metrics go. Implementations must be thread-safe.

    ``add`` buffers one sample; ``flush`` publishes what is buffered and never raises (failures
    are logged on the ``costguard.metrics`` logger and counted in ``dropped``); ``close`` flushes
    and releases what the sink holds.
    """

    namespace: str
    #: Samples dropped: buffer full, invalid dimension value, or publish failed.
    dropped: int

    @abstractmethod
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
        """Buffer one sample of ``name`` for the dimension set (Workflow, ModelId, extras)."""

    @abstractmethod
    def flush(self) -> None:
        """Publish what is buffered; never raises."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; the sink should not be used afterwards."""

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullMetricsSink(MetricsSink):
    """Metrics disabled: every call is a no-op."""

    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.dropped = 0

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
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class BufferedMetricsSink(MetricsSink):
    """Aggregates samples in a bounded buffer; subclasses publish a flushed batch."""

    def __init__(self, namespace: str = NAMESPACE, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        if not namespace or namespace.startswith(":") or namespace.startswith("AWS/"):
            raise ValueError(f"invalid CloudWatch namespace {namespace!r}")
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        self.namespace = namespace
        self.max_buffer = max_buffer
        self.dropped = 0
        self._reported_dropped = 0
        self._series: dict[SeriesKey, SeriesStats] = {}
        # Reentrant: a stream finalizer (garbage collection) can record metrics from inside an
        # ``add`` already holding the lock on the same thread; a plain Lock would deadlock.
        self._lock = threading.RLock()

    # -- buffering ------------------------------------------------------------------------------

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
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise TypeError(f"metric {name!r}: value must be int, float or Decimal, not {type(value).__name__}")
        dims: dict[str, str] = {}
        if dimensions:
            dims.update(dimensions)
        if workflow is not None:
            dims[WORKFLOW] = workflow
        if model_id is not None:
            dims[MODEL_ID] = model_id
        key: SeriesKey = (name, unit, tuple(sorted(dims.items())))
        with self._lock:
            stats = self._series.get(key)
            if stats is not None:
                if not _finite(value):
                    self._drop(1, "metric %s: non-finite value %r dropped", name, value)
                    return
                stats.add(value)
                return
            # A new series: validate once, then it is cheap for every later sample.
            problem = _invalid_series(key, value)
            if problem is not None:
                self._drop(1, "metric %s dropped: %s", name, problem)
                return
            if len(self._series) >= self.max_buffer:
                self._drop(1, "metrics buffer full (%d series): %s dropped", self.max_buffer, name)
                return
            self._series[key] = SeriesStats(1, value, value, value)
        self._after_add()

    def _after_add(self) -> None:
        """Hook for subclasses (called outside the lock after a new series)."""

    def _drop(self, samples: int, message: str, *args: object) -> None:
        self.dropped += samples
        logger.warning(message, *args)

    def pending(self) -> dict[SeriesKey, SeriesStats]:
        """A copy of what is buffered (for inspection and tests)."""
        with self._lock:
            return {k: SeriesStats(v.count, v.total, v.minimum, v.maximum) for k, v in self._series.items()}

    # -- flushing -------------------------------------------------------------------------------

    def flush(self) -> None:
        with self._lock:
            series, self._series = self._series, {}
            unreported = self.dropped - self._reported_dropped
            self._reported_dropped = self.dropped
        if unreported > 0:
            reported = series.get(_DROPPED_KEY)
            if reported is None:
                series[_DROPPED_KEY] = SeriesStats(1, unreported, unreported, unreported)
            else:
                reported.add(unreported)
        if not series:
            return
        lost = self._publish(list(series.items()), int(time.time() * 1000))
        if not lost:
            return
        lost_samples = sum(stats.count for key, stats in lost if key != _DROPPED_KEY)
        with self._lock:
            self.dropped += lost_samples
            if unreported > 0 and any(key == _DROPPED_KEY for key, _ in lost):
                self._reported_dropped -= unreported  # report it again next time
        if lost_samples:
            logger.warning("%d metric samples dropped: publishing to %s failed", lost_samples, self.namespace)

    @abstractmethod
    def _publish(
        self, series: list[tuple[SeriesKey, SeriesStats]], ts_ms: int
    ) -> list[tuple[SeriesKey, SeriesStats]]:
        """Publish ``series``; return what could not be published. Must not raise."""

    def close(self) -> None:
        self.flush()


def _invalid_series(key: SeriesKey, value: Number) -> str | None:
    """Why CloudWatch would reject this series (None when it would not)."""
    name, unit, dims = key
    if unit not in STANDARD_UNITS:
        raise ValueError(f"metric {name!r}: unit {unit!r} is not a CloudWatch StandardUnit")
    if not name or len(name) > MAX_METRIC_NAME_LENGTH:
        raise ValueError(f"metric name {name!r} must be 1..{MAX_METRIC_NAME_LENGTH} characters")
    if len(dims) > MAX_DIMENSIONS:
        raise ValueError(f"metric {name!r}: {len(dims)} dimensions, CloudWatch allows {MAX_DIMENSIONS}")
    if not _finite(value):
        return f"non-finite value {value!r}"
    for dim_name, dim_value in dims:
        if not isinstance(dim_name, str) or not isinstance(dim_value, str):
            raise TypeError(f"metric {name!r}: dimension names and values must be strings")
        if dim_name == "_aws" or dim_name == name:
            raise ValueError(f"metric {name!r}: dimension name {dim_name!r} is reserved")
        if not _valid_dimension_text(dim_name, MAX_DIMENSION_NAME_LENGTH) or dim_name.startswith(":"):
            return f"invalid dimension name {dim_name!r}"
        if not _valid_dimension_text(dim_value, MAX_DIMENSION_VALUE_LENGTH):
            return f"invalid value for dimension {dim_name}: {dim_value[:80]!r}"
    return None


def _valid_dimension_text(text: str, max_length: int) -> bool:
    # ASCII, no control characters, at least one non-whitespace character (service model docs).
    return 0 < len(text) <= max_length and text.isascii() and text.isprintable() and not text.isspace()


# -- EMF ----------------------------------------------------------------------------------------


class EMFMetricsSink(BufferedMetricsSink):
    """CloudWatch embedded metric format on a stream (stdout in Lambda).

    Each flush writes one JSON line per dimension set (split so no line has more than 100
    metrics or the same metric name twice); each metric's value is the sum of its samples.
    ``stream=None`` means ``sys.stdout`` as it is at flush time.
    """

    def __init__(
        self,
        stream: IO[str] | None = None,
        namespace: str = NAMESPACE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        super().__init__(namespace, max_buffer)
        self._stream = stream

    def _publish(
        self, series: list[tuple[SeriesKey, SeriesStats]], ts_ms: int
    ) -> list[tuple[SeriesKey, SeriesStats]]:
        lines: list[str] = []
        for document in emf_documents(self.namespace, series, ts_ms):
            lines.append(json.dumps(document, separators=(",", ":")) + "\n")
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write("".join(lines))
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            logger.warning("cannot write embedded metric format to %r: %s", stream, exc)
            return series
        return []


def emf_documents(
    namespace: str, series: list[tuple[SeriesKey, SeriesStats]], ts_ms: int
) -> list[dict[str, Any]]:
    """Embedded-metric-format documents for ``series``: one per dimension set and ≤100 metrics."""
    by_dims: dict[Dimensions, list[tuple[str, str, Number]]] = {}
    for (name, unit, dims), stats in series:
        by_dims.setdefault(dims, []).append((name, unit, stats.total))
    documents: list[dict[str, Any]] = []
    for dims, metrics in by_dims.items():
        remaining = metrics
        while remaining:
            line: list[tuple[str, str, Number]] = []
            names: set[str] = set()
            later: list[tuple[str, str, Number]] = []
            for metric in remaining:
                if metric[0] in names or len(line) >= MAX_EMF_METRICS_PER_EVENT:
                    later.append(metric)
                else:
                    names.add(metric[0])
                    line.append(metric)
            remaining = later
            document: dict[str, Any] = {
                "_aws": {
                    "Timestamp": ts_ms,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": namespace,
                            "Dimensions": [[dim_name for dim_name, _ in dims]],
                            "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in line],
                        }
                    ],
                }
            }
            document.update(dims)
            for name, _, total in line:
                document[name] = _json_number(total)
            documents.append(document)
    return documents


# -- PutMetricData ------------------------------------------------------------------------------


class CloudWatchMetricsSink(BufferedMetricsSink):
    """CloudWatch ``PutMetricData`` with statistic sets, batched and flushed in the background.

    ``client``: a boto3 CloudWatch client; otherwise one is created on first flush from
    ``session`` (or a default boto3 session) with short timeouts. ``flush_every``: seconds
    between background flushes triggered by ``add`` (``None`` = only explicit flushes); a
    nearly full buffer also triggers one. Call :meth:`close` (``Guard.close`` does) before the
    process exits, or the samples since the last flush are lost.
    """

    def __init__(
        self,
        client: Any = None,
        session: Any = None,
        namespace: str = NAMESPACE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        flush_every: float | None = DEFAULT_FLUSH_EVERY_S,
    ) -> None:
        super().__init__(namespace, max_buffer)
        self._client = client
        self._session = session
        self._client_lock = threading.Lock()
        self._flusher_lock = threading.Lock()
        self.flush_every = flush_every
        self._last_flush = time.monotonic()
        self._flusher: threading.Thread | None = None

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
        super().add(name, value, unit, workflow=workflow, model_id=model_id, dimensions=dimensions)
        every = self.flush_every
        if every is not None and time.monotonic() - self._last_flush >= every:
            self._flush_in_background()

    def _after_add(self) -> None:
        # Nearly full: publish now rather than drop what comes next.
        if len(self._series) >= self.max_buffer * 0.9:
            self._flush_in_background()

    def _flush_in_background(self) -> None:
        with self._flusher_lock:
            if self._flusher is not None and self._flusher.is_alive():
                return
            self._last_flush = time.monotonic()
            self._flusher = threading.Thread(target=self.flush, name="costguard-metrics-flush", daemon=True)
            self._flusher.start()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        super().flush()

    def close(self) -> None:
        flusher = self._flusher
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=30)
        self.flush()

    def client(self) -> Any:
        """The CloudWatch client, created on first use."""
        with self._client_lock:
            if self._client is None:
                import boto3  # noqa: PLC0415 - only a sink that publishes needs boto3 loaded
                from botocore.config import Config  # noqa: PLC0415

                session = self._session if self._session is not None else boto3.session.Session()
                self._client = session.client(
                    "cloudwatch",
                    config=Config(
                        connect_timeout=2,
                        read_timeout=5,
                        retries={"max_attempts": 2, "mode": "standard"},
                    ),
                )
            return self._client

    def _publish(
        self, series: list[tuple[SeriesKey, SeriesStats]], ts_ms: int
    ) -> list[tuple[SeriesKey, SeriesStats]]:
        try:
            client = self.client()
        except BotoCoreError as exc:  # no region, no credentials provider...
            logger.warning("cannot create a CloudWatch client: %s", exc)
            return series
        timestamp = datetime.fromtimestamp(ts_ms / 1000, UTC)
        lost: list[tuple[SeriesKey, SeriesStats]] = []
        batches = _batches(series)
        for index, batch in enumerate(batches):
            data = [metric_datum(key, stats, timestamp) for key, stats in batch]
            try:
                client.put_metric_data(Namespace=self.namespace, MetricData=data)
            except ClientError as exc:
                # The service refused this batch (validation, throttling): try the others.
                logger.warning("PutMetricData to %s failed: %s", self.namespace, exc)
                lost.extend(batch)
            except BotoCoreError as exc:
                # Endpoint unreachable or timing out: the other batches would wait just as long.
                logger.warning("PutMetricData to %s failed, dropping this flush: %s", self.namespace, exc)
                for rest in batches[index:]:
                    lost.extend(rest)
                break
        return lost


def metric_datum(key: SeriesKey, stats: SeriesStats, timestamp: datetime) -> dict[str, Any]:
    """One ``MetricData`` item with ``StatisticValues`` (floats only here, at serialisation)."""
    name, unit, dims = key
    datum: dict[str, Any] = {
        "MetricName": name,
        "Timestamp": timestamp,
        "Unit": unit,
        "StatisticValues": {
            "SampleCount": float(stats.count),
            "Sum": _to_float(stats.total),
            "Minimum": _to_float(stats.minimum),
            "Maximum": _to_float(stats.maximum),
        },
    }
    if dims:
        datum["Dimensions"] = [{"Name": dim_name, "Value": dim_value} for dim_name, dim_value in dims]
    return datum


def _datum_size(key: SeriesKey) -> int:
    name, unit, dims = key
    return 160 + len(name) + len(unit) + sum(40 + len(n) + len(v) for n, v in dims)


def _batches(
    series: list[tuple[SeriesKey, SeriesStats]],
) -> list[list[tuple[SeriesKey, SeriesStats]]]:
    batches: list[list[tuple[SeriesKey, SeriesStats]]] = []
    batch: list[tuple[SeriesKey, SeriesStats]] = []
    size = 0
    for item in series:
        item_size = _datum_size(item[0])
        if batch and (len(batch) >= MAX_METRIC_DATA_PER_REQUEST or size + item_size > MAX_REQUEST_BYTES_ESTIMATE):
            batches.append(batch)
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        batches.append(batch)
    return batches


# -- from the environment -----------------------------------------------------------------------


def metrics_sink_from_env() -> MetricsSink:
    """The sink the environment asks for.

    ``$COSTGUARD_METRICS`` = ``emf`` | ``cloudwatch`` | ``none`` wins; otherwise ``emf`` inside
    Lambda (``$AWS_LAMBDA_FUNCTION_NAME`` set) and ``none`` elsewhere. An unknown value is
    logged and ignored (telemetry configuration must not stop an agent from starting).
    """
    choice = os.environ.get("COSTGUARD_METRICS", "").strip().lower()
    if choice not in ("", "emf", "cloudwatch", "none"):
        logger.warning("COSTGUARD_METRICS=%r is not emf, cloudwatch or none: ignored", choice)
        choice = ""
    if not choice:
        choice = "emf" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "none"
    if choice == "emf":
        return EMFMetricsSink()
    if choice == "cloudwatch":
        return CloudWatchMetricsSink()
    return NullMetricsSink()


# -- what the meter records ---------------------------------------------------------------------


def record_segment(sink: MetricsSink, segment: RequestSegment) -> None:
    """The metrics of one recorded request segment.

    Per model call (dimensions Workflow, ModelId = the base model id): ModelCalls, the four token
    counts and CostUSD. Per tool call (Workflow): ToolCalls, ToolResponseBytes and ToolLatencyMs
    (when the trace timed it). Per segment that produced output (Workflow): TimeToFirstTokenMs.
    Per violation (Workflow, Rule): Violations.
    """
    add = sink.add
    workflow = segment.workflow
    for call in segment.model_calls:
        model = call.base_model_id or call.model_id or "unknown"
        add(MODEL_CALLS, 1, "Count", workflow=workflow, model_id=model)
        add(INPUT_TOKENS, call.input_tokens, "Count", workflow=workflow, model_id=model)
        add(OUTPUT_TOKENS, call.output_tokens, "Count", workflow=workflow, model_id=model)
        add(CACHE_READ_TOKENS, call.cache_read_tokens, "Count", workflow=workflow, model_id=model)
        add(CACHE_WRITE_TOKENS, call.cache_write_tokens, "Count", workflow=workflow, model_id=model)
        add(COST_USD, nanos_to_usd(call.cost_nanos), "None", workflow=workflow, model_id=model)
    for tool in segment.tool_calls:
        add(TOOL_CALLS, 1, "Count", workflow=workflow)
        if tool.response_bytes is not None:
            add(TOOL_RESPONSE_BYTES, tool.response_bytes, "Bytes", workflow=workflow)
        if tool.latency_ms is not None:
            add(TOOL_LATENCY_MS, tool.latency_ms, "Milliseconds", workflow=workflow)
    if segment.ttft_ms is not None:
        add(TIME_TO_FIRST_TOKEN_MS, segment.ttft_ms, "Milliseconds", workflow=workflow)
    for violation in segment.violations:
        record_violation(sink, violation)


def record_violation(sink: MetricsSink, violation: ViolationRecord) -> None:
    """One ``Violations`` sample (enforced or shadow) for the violation's workflow and rule."""
    sink.add(VIOLATIONS, 1, "Count", workflow=violation.workflow, dimensions={RULE: violation.rule})


def record_throttle(sink: MetricsSink, workflow: str, model_id: str | None) -> None:
    """One ``Throttles`` sample: Bedrock throttled a call of ``workflow`` (on ``model_id``)."""
    sink.add(THROTTLES, 1, "Count", workflow=workflow, model_id=model_id or None)


def record_unmetered(sink: MetricsSink, workflow: str, operation: str) -> None:
    """One ``Unmetered`` sample: a cost-bearing call costguard cannot meter went through."""
    sink.add(UNMETERED, 1, "Count", workflow=workflow, dimensions={OPERATION: operation})


def record_ledger_error(sink: MetricsSink, workflow: str) -> None:
    """One ``LedgerErrors`` sample: a ledger read or write failed for ``workflow``."""
    sink.add(LEDGER_ERRORS, 1, "Count", workflow=workflow)


__all__ = [
    "MAX_EMF_METRICS_PER_EVENT",
    "MAX_METRIC_DATA_PER_REQUEST",
    "NAMESPACE",
    "BufferedMetricsSink",
    "CloudWatchMetricsSink",
    "EMFMetricsSink",
    "MetricsSink",
    "NullMetricsSink",
    "SeriesStats",
    "emf_documents",
    "metric_datum",
    "metrics_sink_from_env",
    "record_ledger_error",
    "record_unmetered",
    "record_segment",
    "record_throttle",
    "record_violation",
]
