"""Scheduled reconciliation Lambda: a thin shell around :func:`costguard.jobs.run_reconciliation`.

Configuration (environment):

``COSTGUARD_LEDGER``          ledger URL, e.g. ``dynamodb://costguard-ledger`` (required)
``COSTGUARD_POLICIES``        policy file or directory, relative to the bundle (default ``policies``)
``COSTGUARD_TOPIC_ARN``       SNS topic for alerts (unset: alerts are evaluated, not sent)
``COSTGUARD_REPORT_BUCKET``   S3 bucket for reports (unset: no reports)
``COSTGUARD_REPORT_PREFIX``   key prefix for reports (default ``costguard/reports``)
``COSTGUARD_DRY_RUN``         ``true`` to compute everything and write/send nothing
``COSTGUARD_WINDOW``          ``recent`` (yesterday..today, default) or ``month`` (month to date)
``COSTGUARD_TAG_KEY``         cost allocation tag key(s) naming the workflow, comma-separated, tried in
                              order (default ``costguard:workflow``; see docs/tagging.md)
``COSTGUARD_DRIFT_PCT``, ``COSTGUARD_UNMETERED_TOKENS``, ``COSTGUARD_THROTTLES``  alert thresholds

Event (all optional; an EventBridge scheduled event carries none of them): ``since``/``until``
(``YYYY-MM-DD``, ``until`` inclusive, as in the CLI), ``window`` (``recent``|``month``),
``dry_run`` (bool). Keys may also sit under ``detail``.

Dependencies (ledger, policies, boto3 session and clients, reconciler) are built on the first
invocation and reused by every later invocation of the same container; nothing is built at
import, so a cold start that fails on configuration fails inside the handler with a logged
reason. Logs are JSON lines from the ``costguard.lambda`` logger's own handler (the root logger,
which the Lambda runtime owns, is left alone); one EMF line carries the run's metrics.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from costguard.errors import CostguardError
from costguard.jobs import parse_window, run_reconciliation
from costguard.ledger import open_ledger
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet, load_policies

LOGGER_NAME = "costguard.lambda"
NAMESPACE = "Costguard"
#: Stop claiming alerts when less than this much time is left: a claimed alert whose publish is
#: cut off by the hard timeout would be lost, an unclaimed one simply goes out next run.
SAFETY_MARGIN_MS = 30_000


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, sort_keys=True)


class _StdoutHandler(logging.Handler):
    """Writes to ``sys.stdout`` as it is at emit time (Lambda ships stdout to CloudWatch Logs)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # logging must never break the job
            self.handleError(record)


_HANDLER_NAME = "costguard.lambda.stdout"


def _logger() -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    # By name, not by class: a second import of this file (a test, a re-deployed layer) defines a
    # second _StdoutHandler class, and two handlers would print every line twice.
    if not any(h.get_name() == _HANDLER_NAME for h in log.handlers):
        handler = _StdoutHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        # Our records go to our handler only: the runtime's root handler would print them again.
        log.propagate = False
    return log


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(slots=True)
class Dependencies:
    ledger: Ledger
    policies: PolicySet
    reconciler: Any
    session: Any
    sns_client: Any | None
    s3_client: Any | None
    topic_arn: str | None
    bucket: str | None
    prefix: str
    dry_run: bool
    window_mode: str
    tag_key: str
    drift_pct: Decimal
    unmetered_tokens: int
    throttles: int


_DEPENDENCIES: Dependencies | None = None


def _policies_path(configured: str) -> Path:
    path = Path(configured)
    if not path.is_absolute() and not path.exists():
        # Bundled next to this file (the Lambda's /var/task), whatever the working directory.
        path = Path(__file__).resolve().parent / configured
    return path


def _make_reconciler(ledger: Ledger, policies: PolicySet, session: Any, tag_keys: list[str]) -> Any:
    from costguard.reconcile import Reconciler  # imported here: only a real run needs it

    return Reconciler(ledger, policies, session=session, tag_key=tag_keys, region_name=session.region_name)


def _build_dependencies() -> Dependencies:
    import boto3

    env = os.environ
    ledger_url = env.get("COSTGUARD_LEDGER", "").strip()
    if not ledger_url:
        # The default SQLite file would live in the container's scratch space and vanish.
        raise CostguardError("COSTGUARD_LEDGER is not set (e.g. dynamodb://costguard-ledger)")
    policies = load_policies(_policies_path(env.get("COSTGUARD_POLICIES", "policies")))
    ledger = open_ledger(ledger_url)
    session = boto3.session.Session()
    # Tag keys cannot contain commas (AWS allows letters, digits, spaces and _.:/=+-@).
    tag_keys = [k.strip() for k in env.get("COSTGUARD_TAG_KEY", "costguard:workflow").split(",") if k.strip()]
    tag_keys = tag_keys or ["costguard:workflow"]
    topic_arn = env.get("COSTGUARD_TOPIC_ARN") or None
    bucket = env.get("COSTGUARD_REPORT_BUCKET") or None
    return Dependencies(
        ledger=ledger,
        policies=policies,
        reconciler=_make_reconciler(ledger, policies, session, tag_keys),
        session=session,
        sns_client=session.client("sns") if topic_arn else None,
        s3_client=session.client("s3") if bucket else None,
        topic_arn=topic_arn,
        bucket=bucket,
        prefix=env.get("COSTGUARD_REPORT_PREFIX", "costguard/reports"),
        dry_run=_flag(env.get("COSTGUARD_DRY_RUN", "false")),
        window_mode=env.get("COSTGUARD_WINDOW", "recent"),
        tag_key=tag_keys[0],
        drift_pct=Decimal(env.get("COSTGUARD_DRIFT_PCT", "10")),
        unmetered_tokens=int(env.get("COSTGUARD_UNMETERED_TOKENS", "1000")),
        throttles=int(env.get("COSTGUARD_THROTTLES", "10")),
    )


def dependencies() -> Dependencies:
    """The container's dependencies, built on first use."""
    global _DEPENDENCIES
    if _DEPENDENCIES is None:
        _DEPENDENCIES = _build_dependencies()
    return _DEPENDENCIES


def reset_dependencies() -> None:
    """Forget the cached dependencies (tests; a configuration change in a warm container)."""
    global _DEPENDENCIES
    if _DEPENDENCIES is not None:
        try:
            _DEPENDENCIES.ledger.close()
        finally:
            _DEPENDENCIES = None


def _emit_metrics(summary: dict[str, Any], duration_ms: int) -> None:
    """One EMF line with the run's metrics (CloudWatch Logs turns it into metrics; no API call).

    ``Succeeded`` is 1 for a run without errors and 0 for a partial one: the template's
    "no successful run" alarm sums it (a crashed run writes no line at all, which also counts).
    """
    from costguard.metrics import EMFMetricsSink

    values = {
        "Rows": summary["rows"],
        "AlertsSent": summary["alerts"]["sent"],
        "AlertsSkipped": summary["alerts"]["skipped_duplicates"],
        "AlertsFailed": summary["alerts"]["failed"],
        "Blocks": summary["blocks"],
        "Unblocks": summary["unblocks"],
        "ApiCalls": sum(int(v) for v in summary["api_calls"].values()),
        "Succeeded": 0 if summary["errors"] else 1,
    }
    sink = EMFMetricsSink(namespace=NAMESPACE)
    for name, value in values.items():
        sink.add(name, value, "Count", dimensions={"Job": "reconcile"})
    sink.add("DurationMs", duration_ms, "Milliseconds", dimensions={"Job": "reconcile"})
    sink.flush()


def handler(event: Any, context: Any) -> dict[str, Any]:
    """EventBridge schedule entry point: returns the run's JSON-ready summary."""
    log = _logger()
    started = time.monotonic()
    params: dict[str, Any] = {}
    if isinstance(event, dict):
        detail = event.get("detail")
        if isinstance(detail, dict):
            params.update(detail)
        params.update({k: v for k, v in event.items() if k != "detail"})
    request_id = getattr(context, "aws_request_id", None)

    try:
        deps = dependencies()
        today = datetime.now(UTC).date()
        params.setdefault("window", deps.window_mode)
        window = parse_window(params, today)
    except CostguardError as exc:
        # Bad configuration or input: retrying the same event cannot help, so do not raise.
        log.error("reconciliation not started: %s", exc, extra={"fields": {"request_id": request_id, "event": params}})
        return {"status": "invalid", "error": str(exc)}
    dry_run = _flag(params["dry_run"]) if "dry_run" in params else deps.dry_run

    remaining = getattr(context, "get_remaining_time_in_millis", None)

    def should_stop() -> bool:
        return callable(remaining) and remaining() < SAFETY_MARGIN_MS

    log.info("reconciliation started", extra={"fields": {
        "request_id": request_id, "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "dry_run": dry_run}})
    try:
        summary = run_reconciliation(
            deps.reconciler, deps.ledger, deps.policies, window,
            topic_arn=deps.topic_arn, bucket=deps.bucket, prefix=deps.prefix,
            sns_client=deps.sns_client, s3_client=deps.s3_client, session=deps.session,
            dry_run=dry_run, should_stop=should_stop, tag_key=deps.tag_key,
            drift_pct_threshold=deps.drift_pct, unmetered_tokens_threshold=deps.unmetered_tokens,
            throttle_threshold=deps.throttles,
        ).to_dict()
    except Exception:
        # Raise: the invocation is marked failed, EventBridge's async retry runs it again, and
        # every step is idempotent.
        log.exception("reconciliation failed", extra={"fields": {"request_id": request_id}})
        raise
    duration_ms = int((time.monotonic() - started) * 1000)
    summary["status"] = "partial" if summary["errors"] else "ok"
    summary["duration_ms"] = duration_ms
    _emit_metrics(summary, duration_ms)
    level = logging.WARNING if summary["errors"] else logging.INFO
    log.log(level, "reconciliation finished", extra={"fields": {"request_id": request_id, "summary": summary}})
    return summary
