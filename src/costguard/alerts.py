"""Alerts from a reconciliation: what crossed a line, and publishing each one to SNS exactly once.

:func:`evaluate_alerts` turns a :class:`~costguard.reconcile.ReconcileResult` into
:class:`Alert` objects; :class:`AlertPublisher` sends them to an SNS topic, deduplicated through
the ledger's alert keys so that re-running the reconciler for the same window (hourly schedule,
Lambda retries, a person re-running it by hand) never sends an alert twice.

The idempotency key of an alert is ``"{workflow}|{kind}|{threshold}|{period}"``. Alerts about
one model (unmetered usage, throttling, unpriced models) append ``"|{model_id}"``: two models on
the same day are two alerts, and without the model in the key the second would be swallowed as a
duplicate of the first.

Delivery is "at most once per key, retried until sent": the key is claimed in the ledger before
publishing (two concurrent runs cannot both send), and released again when the publish fails, so
the next run sends it. The one window where an alert can be lost is a process killed between the
claim and the publish (a hard Lambda timeout); :meth:`AlertPublisher.publish` takes a
``should_stop`` predicate so the caller can stop claiming well before its deadline.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Literal

from costguard._extras import require_reports
from costguard.errors import CostguardError
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet

if TYPE_CHECKING:
    import pandas as pd
else:  # the report and reconcile paths need the reports extra
    pd = require_reports("pandas")

if TYPE_CHECKING:  # the reconciler is only needed for type checking here
    from costguard.reconcile import ReconcileResult

__all__ = [
    "ACCOUNT",
    "ALERT_KINDS",
    "Alert",
    "AlertPublisher",
    "PublishReport",
    "evaluate_alerts",
]

logger = logging.getLogger("costguard.alerts")

AlertKind = Literal[
    "budget_threshold",
    "forecast_over_budget",
    "drift",
    "unmetered_usage",
    "throttling",
    "unpriced_model",
    "attribution_advice",
]
ALERT_KINDS: Final[tuple[str, ...]] = (
    "budget_threshold",
    "forecast_over_budget",
    "drift",
    "unmetered_usage",
    "throttling",
    "unpriced_model",
    "attribution_advice",
)
#: Where the attribution advice points: the repository's page on tagging for cost allocation.
TAGGING_DOC: Final = "docs/tagging.md"
#: The "workflow" of an account-level alert: CloudWatch's AWS/Bedrock metrics and Cost
#: Explorer's untagged spend belong to no workflow.
ACCOUNT: Final = "(account)"
#: SNS: "Subjects must be ASCII text that begins with a letter, number, or punctuation mark;
#: must not include line breaks or control characters; and must be less than 100 characters".
MAX_SUBJECT: Final = 99
MESSAGE_SCHEMA: Final = "costguard.alert/v1"

_NA: Final[Any] = pd.NA
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_CENT = Decimal("0.01")
_TOKEN_KINDS: Final = ("input", "output", "cache_read", "cache_write")


def _plain(value: Decimal | int | str) -> str:
    """A canonical exact text for numbers: ``Decimal("10.0")`` and ``10`` both give ``"10"``.

    Keys are built from it, so the same threshold written two ways is still one key.
    """
    if isinstance(value, str):
        return value
    number = Decimal(value)
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _usd(value: Decimal) -> str:
    """Money for a human subject line: ``$1,234.57`` (the message body keeps the exact value)."""
    return f"${value.quantize(_CENT, ROUND_HALF_EVEN):,}"


def _subject(text: str) -> str:
    """An SNS-safe subject: ASCII, one line, at most 99 characters."""
    text = _CONTROL.sub(" ", text).encode("ascii", "replace").decode("ascii").strip()
    if len(text) > MAX_SUBJECT:
        text = text[: MAX_SUBJECT - 3].rstrip() + "..."
    return text or "costguard alert"


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition worth telling a person about, with a stable idempotency key."""

    kind: str
    workflow: str
    period: str  # "day:2026-11-22" or "month:2026-11"
    threshold: str  # canonical exact text (see _plain): part of the key
    observed: str
    subject: str
    message: dict[str, Any] = field(hash=False, compare=False)
    model_id: str | None = None

    @property
    def key(self) -> str:
        base = f"{self.workflow}|{self.kind}|{self.threshold}|{self.period}"
        return f"{base}|{self.model_id}" if self.model_id else base


def _alert(
    kind: str,
    workflow: str,
    period: str,
    threshold: Decimal | int | str,
    observed: Decimal | int | str,
    subject: str,
    detail: dict[str, Any],
    model_id: str | None = None,
) -> Alert:
    threshold_text = _plain(threshold)
    observed_text = _plain(observed)
    alert = Alert(
        kind=kind,
        workflow=workflow,
        period=period,
        threshold=threshold_text,
        observed=observed_text,
        subject=_subject(f"costguard: {subject}"),
        message={},
        model_id=model_id,
    )
    message: dict[str, Any] = {
        "schema": MESSAGE_SCHEMA,
        "key": alert.key,
        "kind": kind,
        "workflow": workflow,
        "period": period,
        "threshold": threshold_text,
        "observed": observed_text,
    }
    if model_id:
        message["model_id"] = model_id
    message["detail"] = detail
    alert.message.update(message)
    return alert


# -- reading the reconciliation frame ---------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    """A frame cell as an exact Decimal; None for missing values (None, NaN, pd.NA)."""
    if value is None or value is _NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # Only reached if a producer let a float in: its shortest repr is the intended number.
        return Decimal(repr(value)) if math.isfinite(value) else None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int(value: Any) -> int:
    number = _decimal(value)
    return int(number) if number is not None else 0


def _truthy(value: Any) -> bool:
    if value is None or value is _NA:
        return False
    try:
        return bool(value)
    except (TypeError, ValueError):  # pd.NA raises on bool()
        return False


def _records(frame: Any) -> list[dict[str, Any]]:
    if frame is None or len(frame) == 0:
        return []
    return list(frame.to_dict("records"))


def _window_month(result: ReconcileResult) -> str:
    """The month of the window's last day: the period of once-a-month account alerts."""
    end: date = result.window.end
    last = date.fromordinal(end.toordinal() - 1) if end > result.window.start else result.window.start
    return f"month:{last:%Y-%m}"


# -- evaluation ---------------------------------------------------------------------------------------


def evaluate_alerts(
    result: ReconcileResult,
    policies: PolicySet,
    *,
    drift_pct_threshold: Decimal = Decimal("10"),
    min_drift_usd: Decimal = Decimal("0.01"),
    unmetered_tokens_threshold: int = 1000,
    throttle_threshold: int = 10,
) -> list[Alert]:
    """Every alert condition in ``result``, in a deterministic order.

    * ``budget_threshold``: metered spend of a (workflow, day) against ``budget.daily_usd`` and
      month-to-date spend against ``budget.monthly_usd``, for the *highest* ``alert_at_pct``
      crossed. Lower thresholds crossed in the same jump are not sent on their own: one jump
      from 40% to 85% is one "80%" alert, not a burst of two. Metered spend is used (not billed)
      because it is what the budgets and kill switches count; billed spend is compared through
      ``drift``.
    * ``forecast_over_budget``: the month-end forecast of a workflow exceeds its monthly budget
      (once per month and budget amount: raising the budget re-arms it).
    * ``drift``: ``|drift_pct| > drift_pct_threshold`` and ``|drift_usd| >= min_drift_usd``, for
      days whose Cost Explorer figures are final only. Estimated days are skipped on purpose: CE
      lags by up to a day and revises recent days, so comparing a partial bill with complete
      metering would raise false drift, and claiming the day's key on such a figure would
      suppress the alert once the real, final figure arrives. Only workflows a cost allocation
      tag names in the bill have a billed figure; ``(untagged)`` and workflows only the meter
      attributes never raise it. The same rule per model and day (``models`` frame, account
      level, keyed by model) for models the meter priced. Days in
      ``result.drift_suppressed_days`` (service discovery failed: the bill is incomplete) raise
      no drift alert at all.
    * ``unmetered_usage``: tokens CloudWatch saw on a model that costguard did not meter
      (callers bypassing the wrapper), per model and day, input, output, cache-read and
      cache-write tokens together, at least ``unmetered_tokens_threshold``. Account level:
      CloudWatch does not know workflows.
    * ``throttling``: at least ``throttle_threshold`` throttles on a day, per workflow (what the
      meter recorded) and per model (what CloudWatch's ``InvocationThrottles`` counted).
    * ``unpriced_model``: a model missing from the price catalog, once per model and month.
    * ``attribution_advice``: some metered workflow is named by no cost allocation tag in the
      bill, so it can only be reconciled per model. Sent once ever (its key names no period):
      it explains why and points at ``docs/tagging.md``.
    """
    alerts: list[Alert] = []
    rows = sorted(_records(result.frame), key=lambda r: (str(r.get("workflow")), str(r.get("day"))))
    suppressed = set(getattr(result, "drift_suppressed_days", None) or ())

    # Latest row per (workflow, month): the month-to-date and forecast figures of that month.
    month_last: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        workflow, day = str(row["workflow"]), str(row["day"])
        budget = policies.for_workflow(workflow).budget
        pcts = list(budget.alert_at_pct) if budget is not None else []
        daily = _budget_amount(budget.daily_usd if budget else None, row.get("budget_daily_usd"))
        spent = _decimal(row.get("metered_cost_usd")) or Decimal(0)
        if daily is not None and pcts:
            alerts.extend(_threshold_alert(workflow, f"day:{day}", "daily", daily, spent, pcts))
        month_last[(workflow, day[:7])] = row
        if day not in suppressed:
            alerts.extend(_drift_alert(row, workflow, day, drift_pct_threshold, min_drift_usd))
        throttles = _int(row.get("throttles"))
        if throttle_threshold > 0 and throttles >= throttle_threshold:
            alerts.append(
                _alert(
                    "throttling", workflow, f"day:{day}", throttle_threshold, throttles,
                    f"{workflow} throttled {throttles:,} times on {day}",
                    {"day": day, "throttles": throttles, "source": "costguard meter"},
                )
            )

    for (workflow, month), row in sorted(month_last.items()):
        budget = policies.for_workflow(workflow).budget
        monthly = _budget_amount(budget.monthly_usd if budget else None, row.get("budget_monthly_usd"))
        if monthly is None:
            continue
        mtd = _decimal(row.get("month_to_date_usd")) or Decimal(0)
        pcts = list(budget.alert_at_pct) if budget is not None else []
        if pcts:
            alerts.extend(_threshold_alert(workflow, f"month:{month}", "monthly", monthly, mtd, pcts))
        forecast = _decimal(row.get("forecast_month_end_usd"))
        if forecast is not None and forecast > monthly:
            burn = _decimal(row.get("burn_rate_usd_per_day"))
            alerts.append(
                _alert(
                    "forecast_over_budget", workflow, f"month:{month}", monthly, forecast,
                    f"{workflow} forecast {_usd(forecast)} over monthly budget {_usd(monthly)} ({month})",
                    {
                        "as_of_day": str(row["day"]),
                        "budget_usd": _plain(monthly),
                        "forecast_month_end_usd": _plain(forecast),
                        "month_to_date_usd": _plain(mtd),
                        "burn_rate_usd_per_day": None if burn is None else _plain(burn),
                    },
                )
            )

    for row in sorted(_records(result.models), key=lambda r: (str(r.get("day")), str(r.get("model_id")))):
        day, model = str(row["day"]), str(row["model_id"])
        by_kind = {kind: max(_int(row.get(f"unmetered_{kind}_tokens")), 0) for kind in _TOKEN_KINDS}
        unmetered = sum(by_kind.values())
        if unmetered_tokens_threshold > 0 and unmetered >= unmetered_tokens_threshold:
            detail: dict[str, Any] = {"day": day}
            for kind in _TOKEN_KINDS:
                for side in ("unmetered", "bedrock", "metered"):
                    detail[f"{side}_{kind}_tokens"] = _int(row.get(f"{side}_{kind}_tokens"))
            detail["hint"] = "calls to this model that did not go through costguard's wrapper"
            alerts.append(
                _alert(
                    "unmetered_usage", ACCOUNT, f"day:{day}", unmetered_tokens_threshold, unmetered,
                    f"{unmetered:,} unmetered tokens on {model} on {day}", detail, model_id=model,
                )
            )
        if day not in suppressed and _decimal(row.get("metered_cost_usd")):
            alerts.extend(_drift_alert(row, ACCOUNT, day, drift_pct_threshold, min_drift_usd, model_id=model))
        throttles = _int(row.get("bedrock_throttles"))
        if throttle_threshold > 0 and throttles >= throttle_threshold:
            alerts.append(
                _alert(
                    "throttling", ACCOUNT, f"day:{day}", throttle_threshold, throttles,
                    f"{model} throttled {throttles:,} times on {day}",
                    {
                        "day": day,
                        "throttles": throttles,
                        "invocations": _int(row.get("bedrock_invocations")),
                        "source": "CloudWatch AWS/Bedrock InvocationThrottles",
                    },
                    model_id=model,
                )
            )

    period = _window_month(result)
    for model in sorted(set(result.unpriced_models)):
        alerts.append(
            _alert(
                "unpriced_model", ACCOUNT, period, "any", "unpriced",
                f"model {model} is not in the price catalog",
                {
                    "hint": "run 'costguard pricing refresh' or add the model to the catalog; "
                    "its calls are priced by the policy's 'unpriced' setting",
                },
                model_id=model,
            )
        )
    alerts.extend(_attribution_advice(result))
    return alerts


def _attribution_advice(result: ReconcileResult) -> list[Alert]:
    unattributed = getattr(result, "unattributed_workflows", None)
    workflows = unattributed() if callable(unattributed) else []
    if not workflows:
        return []
    tag_keys = list(getattr(result, "tag_keys", None) or [])
    return [
        _alert(
            "attribution_advice", ACCOUNT, "once", "any", len(workflows),
            f"{len(workflows)} workflow(s) cannot be reconciled per workflow: no cost allocation tag in the bill",
            {
                "workflows": workflows,
                "tag_keys": tag_keys,
                "reconciled_as": "per model and day (the meter's own attribution per workflow)",
                "why": "Cost allocation tags reach billing records only through application inference "
                "profiles or IAM principal/session tags; system-defined inference profiles "
                "(us., eu., global.) and plain model ids cannot be tagged.",
                "how": f"see {TAGGING_DOC}: call Bedrock through a tagged application inference profile, "
                "or tag the calling IAM role, activate the tag key as a cost allocation tag, and pass "
                "every key with --tag-key.",
            },
        )
    ]


def _budget_amount(policy_value: Decimal | None, frame_value: Any) -> Decimal | None:
    """The policy is the source of truth; the frame's copy is used when the policy has none."""
    if policy_value is not None:
        return policy_value
    return _decimal(frame_value)


def _threshold_alert(
    workflow: str, period: str, label: str, budget: Decimal, spent: Decimal, pcts: Sequence[int]
) -> list[Alert]:
    if budget <= 0:
        return []
    crossed = [p for p in pcts if spent * 100 >= budget * p]
    if not crossed:
        return []
    pct = max(crossed)
    used = (spent * 100 / budget).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
    when = period.split(":", 1)[1]
    return [
        _alert(
            "budget_threshold", workflow, period, pct, spent,
            f"{workflow} at {used}% of {label} budget {_usd(budget)} ({when})",
            {
                "budget": label,
                "budget_usd": _plain(budget),
                "spent_usd": _plain(spent),
                "used_pct": _plain(used),
                "alert_at_pct": pct,
                "spend_source": "metered",
            },
        )
    ]


def _drift_alert(
    row: dict[str, Any], workflow: str, day: str, threshold: Decimal, min_usd: Decimal,
    model_id: str | None = None,
) -> list[Alert]:
    if _truthy(row.get("estimated")):
        return []
    pct = _decimal(row.get("drift_pct"))
    usd = _decimal(row.get("drift_usd"))
    billed = _decimal(row.get("billed_cost_usd"))
    if pct is None or billed is None:
        return []
    if abs(pct) <= threshold or (usd is not None and abs(usd) < min_usd):
        return []
    metered = _decimal(row.get("metered_cost_usd")) or Decimal(0)
    direction = "over" if pct > 0 else "under"
    who = model_id or workflow
    return [
        _alert(
            "drift", workflow, f"day:{day}", threshold, pct,
            f"{who} billed {_usd(billed)} vs metered {_usd(metered)} on {day} ({pct:+.1f}%)",
            {
                "day": day,
                "billed_cost_usd": _plain(billed),
                "metered_cost_usd": _plain(metered),
                "drift_usd": None if usd is None else _plain(usd),
                "drift_pct": _plain(pct),
                "direction": f"billed {direction} metered",
                "compared": "on-demand token spend",
            },
            model_id=model_id,
        )
    ]


# -- publishing ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PublishReport:
    """What :meth:`AlertPublisher.publish` did, by alert key."""

    sent: list[str] = field(default_factory=list)
    skipped_duplicates: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    #: Not attempted: ``should_stop`` said the deadline was near (they go out next run).
    deferred: list[str] = field(default_factory=list)
    dry_run: bool = False
    message_ids: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "sent": len(self.sent),
            "skipped_duplicates": len(self.skipped_duplicates),
            "failed": len(self.failed),
            "deferred": len(self.deferred),
            "sent_keys": list(self.sent),
            "failed_keys": list(self.failed),
            "errors": dict(self.errors),
        }


def _now_ms(clock: Callable[[], datetime]) -> int:
    return int(clock().timestamp() * 1000)


class AlertPublisher:
    """Publishes alerts to one SNS topic, each key at most once (see the module docstring)."""

    def __init__(
        self,
        ledger: Ledger,
        topic_arn: str,
        *,
        sns_client: Any | None = None,
        session: Any | None = None,
        dry_run: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.topic_arn = topic_arn
        self.dry_run = dry_run
        self._client = sns_client
        self._session = session
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def client(self) -> Any:
        # Created on first use, never at import or construction: a dry run needs no client.
        if self._client is None:
            if self._session is None:
                import boto3

                self._session = boto3.session.Session()
            self._client = self._session.client("sns")
        return self._client

    def publish(self, alerts: Iterable[Alert], *, should_stop: Callable[[], bool] | None = None) -> PublishReport:
        """Send every alert whose key was not sent before; never raises for one failed alert.

        ``should_stop`` is checked before each claim: once it returns True the remaining alerts
        are left unclaimed (``deferred``) for the next run.
        """
        report = PublishReport(dry_run=self.dry_run)
        seen: set[str] = set()
        for alert in alerts:
            key = alert.key
            if key in seen:  # the same condition listed twice in one batch
                report.skipped_duplicates.append(key)
                continue
            seen.add(key)
            if should_stop is not None and should_stop():
                report.deferred.append(key)
                continue
            if self.dry_run:
                self._dry_run_one(alert, report)
                continue
            self._publish_one(alert, report)
        if report.failed or report.deferred:
            logger.warning(
                "alerts: %d sent, %d duplicates, %d failed, %d deferred",
                len(report.sent), len(report.skipped_duplicates), len(report.failed), len(report.deferred),
            )
        return report

    def _dry_run_one(self, alert: Alert, report: PublishReport) -> None:
        # Reading is allowed in a dry run: report a duplicate as one, so the preview is honest.
        try:
            claimed = any(k.key == alert.key for k in self.ledger.alert_keys(prefix=alert.key))
        except CostguardError as exc:  # a preview must not fail on a ledger read error
            logger.warning("dry run: cannot read alert key %s: %s", alert.key, exc)
            claimed = False
        (report.skipped_duplicates if claimed else report.sent).append(alert.key)

    def _publish_one(self, alert: Alert, report: PublishReport) -> None:
        key = alert.key
        detail = {"kind": alert.kind, "workflow": alert.workflow, "period": alert.period,
                  "threshold": alert.threshold, "observed": alert.observed, "subject": alert.subject}
        try:
            claimed = self.ledger.claim_alert_key(key, _now_ms(self._clock), detail)
        except CostguardError as exc:  # ledger down: send nothing (we could not dedupe), report it
            report.failed.append(key)
            report.errors[key] = f"claim failed: {exc}"
            logger.error("alert %s: cannot claim its key: %s", key, exc)
            return
        if not claimed:
            report.skipped_duplicates.append(key)
            return
        try:
            response = self.client.publish(
                TopicArn=self.topic_arn,
                Subject=alert.subject,
                Message=json.dumps(alert.message, sort_keys=True, default=str),
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": alert.kind},
                    "workflow": {"DataType": "String", "StringValue": alert.workflow},
                },
            )
        except BaseException as exc:
            # Give the key back so the next run sends it. BaseException too: an abort raised
            # inside the call (KeyboardInterrupt, a runtime's timeout signal) must not leave a
            # claimed-but-unsent key behind; it is re-raised after the release.
            self._release(key)
            if not isinstance(exc, Exception):
                raise
            report.failed.append(key)
            report.errors[key] = f"{type(exc).__name__}: {exc}"
            logger.error("alert %s: publish failed, will retry next run: %s", key, exc)
            return
        report.sent.append(key)
        message_id = response.get("MessageId") if isinstance(response, dict) else None
        if message_id:
            report.message_ids[key] = str(message_id)

    def _release(self, key: str) -> None:
        try:
            self.ledger.release_alert_key(key)
        except CostguardError as exc:
            # Nothing more can be done here: the key stays claimed and this alert is lost.
            logger.error("alert %s: publish failed and its key could not be released: %s", key, exc)
