"""The reconciliation job: reconcile -> enforce -> alert -> report, shared by the Lambda and the CLI.

:func:`run_reconciliation` is the whole scheduled job as one function; the Lambda handler only
builds its dependencies (once per container) and calls it, and ``costguard reconcile`` can call
it the same way. Each step runs even if a later one will fail, and every step is idempotent, so
a failed or timed-out run is simply run again:

1. the reconciler builds the per-(workflow, day) frame (read-only);
2. the enforcer sets/clears the reconciler's kill switches (a switch is upserted: re-setting it
   is harmless);
3. alerts are evaluated and published, each key at most once (see :mod:`costguard.alerts`);
4. reports are written to S3 at a path derived from the window (same window, same objects).

Enforcement runs before alerts so that a budget exhausted mid-run is blocked even if SNS is
down; alerts run before reports because they are the time-critical part of the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from costguard.alerts import AlertPublisher, PublishReport, evaluate_alerts
from costguard.enforce import DEFAULT_ACTOR, EnforcementAction, Enforcer
from costguard.errors import CostguardError
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet
from costguard.reconcile import ReconcileResult, Window, parse_day


__all__ = ["JobSummary", "default_window", "make_window", "parse_window", "run_reconciliation"]

logger = logging.getLogger("costguard.jobs")


class _Reconciles(Protocol):
    def run(self, window: Any) -> ReconcileResult: ...


def make_window(start: date, end: date) -> Window:
    """A reconciliation window (UTC days, ``end`` exclusive); an empty one raises ``ReconcileError``."""
    return Window(start=start, end=end)


def default_window(today: date, mode: str = "recent") -> Any:
    """The window a scheduled run reconciles when the event names none.

    ``recent`` (default): yesterday and today, ``[today-1, today+1)``. Yesterday is the day whose
    Cost Explorer figures settle next, today is what the meter has counted so far; together they
    keep alerts timely while each run stays cheap (Cost Explorer bills every page).
    ``month``: month to date, ``[first of month, today+1)``, for a daily full refresh.
    """
    if mode == "month":
        return make_window(today.replace(day=1), today + timedelta(days=1))
    if mode != "recent":
        raise CostguardError(f"unknown window mode {mode!r}: use 'recent' or 'month'")
    return make_window(today - timedelta(days=1), today + timedelta(days=1))


def _day(value: Any, name: str) -> date:
    # An event may carry a full timestamp ("2026-11-21T00:00:00Z"): its date is the day.
    return parse_day(str(value)[:10], name)


def parse_window(event: Mapping[str, Any], today: date) -> Any:
    """The window of an event: ``since``/``until`` (``until`` inclusive, like the CLI), or
    ``window: recent|month``, else :func:`default_window`."""
    since, until = event.get("since"), event.get("until")
    if since is None and until is None:
        return default_window(today, str(event.get("window") or "recent"))
    start = _day(since, "since") if since is not None else today - timedelta(days=1)
    last = _day(until, "until") if until is not None else today
    return make_window(start, last + timedelta(days=1))


@dataclass(slots=True)
class JobSummary:
    """What one reconciliation run did: JSON-ready through :meth:`to_dict`."""

    window_start: str
    window_end: str
    dry_run: bool
    rows: int = 0
    alerts_evaluated: int = 0
    publish: PublishReport = field(default_factory=PublishReport)
    actions: list[EnforcementAction] = field(default_factory=list)
    report_keys: list[str] = field(default_factory=list)
    api_calls: dict[str, int] = field(default_factory=dict)
    unpriced_models: list[str] = field(default_factory=list)
    estimated_days: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: what the reconciler could not do fully (failed discovery, unclassified usage types)
    warnings: list[str] = field(default_factory=list)
    drift_suppressed_days: list[str] = field(default_factory=list)
    # The run's frame and alerts, for callers that print them (the CLI); not part of to_dict().
    result: Any = None
    alerts: list[Any] = field(default_factory=list)

    @property
    def blocks(self) -> int:
        return sum(1 for a in self.actions if a.action == "block")

    @property
    def unblocks(self) -> int:
        return sum(1 for a in self.actions if a.action == "unblock")

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {"start": self.window_start, "end": self.window_end},
            "dry_run": self.dry_run,
            "rows": self.rows,
            "alerts_evaluated": self.alerts_evaluated,
            "alerts": self.publish.to_dict(),
            "blocks": self.blocks,
            "unblocks": self.unblocks,
            "actions": [a.to_dict() for a in self.actions],
            "reports": list(self.report_keys),
            "api_calls": dict(self.api_calls),
            "unpriced_models": list(self.unpriced_models),
            "estimated_days": list(self.estimated_days),
            "drift_suppressed_days": list(self.drift_suppressed_days),
            "warnings": list(self.warnings),
            "errors": list(self.errors),
        }


def run_reconciliation(
    reconciler: _Reconciles,
    ledger: Ledger,
    policies: PolicySet,
    window: Any,
    *,
    topic_arn: str | None = None,
    bucket: str | None = None,
    prefix: str = "costguard/reports",
    sns_client: Any | None = None,
    s3_client: Any | None = None,
    session: Any | None = None,
    dry_run: bool = False,
    clock: Callable[[], datetime] | None = None,
    should_stop: Callable[[], bool] | None = None,
    actor: str = DEFAULT_ACTOR,
    drift_pct_threshold: Decimal = Decimal("10"),
    unmetered_tokens_threshold: int = 1000,
    throttle_threshold: int = 10,
    tag_key: str = "costguard:workflow",
) -> JobSummary:
    """Run the job once. No topic: alerts are evaluated but not sent; no bucket: no reports.

    The reconciliation itself failing raises (nothing useful can follow); a failing enforcement,
    publish or report step is logged and listed in ``errors`` while the other steps still run,
    so that one broken permission does not also silence the alerts.
    """
    clock = clock or (lambda: datetime.now(UTC))
    summary = JobSummary(window.start.isoformat(), window.end.isoformat(), dry_run)

    result = reconciler.run(window)
    summary.result = result
    summary.rows = len(result.frame)
    summary.api_calls = dict(result.api_calls)
    summary.unpriced_models = list(result.unpriced_models)
    summary.estimated_days = list(result.estimated_days)
    summary.warnings = list(getattr(result, "warnings", None) or [])
    summary.drift_suppressed_days = list(getattr(result, "drift_suppressed_days", None) or [])

    try:
        summary.actions = Enforcer(ledger, policies, clock=clock, dry_run=dry_run, actor=actor).apply(result)
    except (CostguardError, BotoCoreError, ClientError) as exc:
        logger.exception("enforcement failed")
        summary.errors.append(f"enforce: {type(exc).__name__}: {exc}")

    alerts = evaluate_alerts(
        result,
        policies,
        drift_pct_threshold=drift_pct_threshold,
        unmetered_tokens_threshold=unmetered_tokens_threshold,
        throttle_threshold=throttle_threshold,
    )
    summary.alerts_evaluated = len(alerts)
    summary.alerts = list(alerts)
    if topic_arn:
        publisher = AlertPublisher(ledger, topic_arn, sns_client=sns_client, session=session,
                                   dry_run=dry_run, clock=clock)
        summary.publish = publisher.publish(alerts, should_stop=should_stop)
        summary.errors.extend(f"alert {k}: {summary.publish.errors.get(k, 'failed')}" for k in summary.publish.failed)
    else:
        logger.warning("no alert topic configured: %d alerts evaluated, none sent", len(alerts))

    if bucket:
        from costguard.s3reports import write_reports

        try:
            summary.report_keys = write_reports(result, ledger, policies, bucket, prefix, s3_client=s3_client,
                                                session=session, tag_key=tag_key, dry_run=dry_run)
        except (CostguardError, BotoCoreError, ClientError, OSError) as exc:
            logger.exception("writing reports failed")
            summary.errors.append(f"reports: {type(exc).__name__}: {exc}")
    return summary
