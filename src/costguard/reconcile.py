"""Reconciliation: what AWS billed (Cost Explorer), what Bedrock saw (CloudWatch) and what
costguard metered (the ledger), joined per (workflow, UTC day) and per (day, model).

The :class:`Reconciler` only reads. One run costs:

* Cost Explorer: one ``GetDimensionValues`` request (which Bedrock services exist: Marketplace
  editions such as ``Claude 3 Haiku (Amazon Bedrock Edition)`` are billed under their own
  service name) plus one ``GetCostAndUsage`` request per result page. Every CE request is billed
  ($0.01), so nothing is asked twice in a run and the page loop follows ``NextPageToken`` only.
* CloudWatch: ``ListMetrics`` per metric name (to find every series, including models called by
  code that bypasses costguard) and ``GetMetricData`` with up to 500 queries per request (the
  API limit), following ``NextToken``.
* The ledger: ``daily_usage`` (from the first day of the window's first month, for
  month-to-date) and ``budget_counters``.

Money is :class:`~decimal.Decimal` end to end: Cost Explorer amounts are parsed from their JSON
strings, ledger amounts come as integer nano-dollars. Only CloudWatch counts (tokens, calls,
throttles) arrive as floats and are rounded to ints.

Why ``GetDimensionValues`` first: the Cost Explorer ``Filter`` on ``SERVICE`` only matches exact
values in ``GetCostAndUsage`` (``MatchOptions`` such as CONTAINS apply to cost categories and
anomaly subscriptions only), and the list of Marketplace Bedrock editions grows with every new
model. Asking CE for the service names that actually carry charges in the window is one cheap
request and never goes stale. If the discovery call fails (no permission, an emulator without
it), the run goes on with ``Amazon Bedrock`` alone and says so in :attr:`ReconcileResult.warnings`.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from costguard.errors import CostguardError
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet
from costguard.usage import BudgetCounter, DailyUsage, nanos_to_usd

if TYPE_CHECKING:
    from costguard.pricing.catalog import InferenceProfileResolver, PriceCatalog

__all__ = [
    "BEDROCK_SERVICE",
    "FRAME_COLUMNS",
    "MAX_QUERIES_PER_REQUEST",
    "MODEL_COLUMNS",
    "UNTAGGED",
    "BilledCosts",
    "MetricSeries",
    "MetricTotals",
    "ReconcileError",
    "parse_day",
    "ReconcileResult",
    "Reconciler",
    "Window",
    "build_frame",
    "build_models",
    "collect_metric_results",
    "parse_cost_pages",
]

logger = logging.getLogger("costguard.reconcile")

UNTAGGED: Final = "(untagged)"
BEDROCK_SERVICE: Final = "Amazon Bedrock"
#: GetMetricData accepts at most 500 MetricDataQueries per request.
MAX_QUERIES_PER_REQUEST: Final = 500
DAY_SECONDS: Final = 86_400
COSTGUARD_NAMESPACE: Final = "Costguard"

FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "workflow",
    "day",
    "metered_cost_usd",
    "billed_cost_usd",
    "estimated",
    "drift_usd",
    "drift_pct",
    "metered_model_calls",
    "metered_input_tokens",
    "metered_output_tokens",
    "metered_cache_read_tokens",
    "metered_cache_write_tokens",
    "costguard_model_calls",
    "throttles",
    "budget_daily_usd",
    "budget_monthly_usd",
    "month_to_date_usd",
    "burn_rate_usd_per_day",
    "forecast_month_end_usd",
)
MODEL_COLUMNS: Final[tuple[str, ...]] = (
    "day",
    "model_id",
    "bedrock_invocations",
    "bedrock_input_tokens",
    "bedrock_output_tokens",
    "bedrock_throttles",
    "metered_input_tokens",
    "metered_output_tokens",
    "unmetered_input_tokens",
    "unmetered_output_tokens",
)
BILLED_USAGE_COLUMNS: Final[tuple[str, ...]] = ("workflow", "day", "usage_type", "cost_usd", "usage_quantity")
AGENT_COLUMNS: Final[tuple[str, ...]] = ("day", "agent_alias_arn", "input_tokens", "output_tokens", "throttles")

_NANO: Final = Decimal("0.000000001")
_PCT: Final = Decimal("0.01")
_QUERY_ID_RE: Final = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
# Error codes that mean "slow down": Cost Explorer answers LimitExceededException, which
# botocore's standard retry mode does not treat as throttling, so it is retried here.
_THROTTLE_CODES: Final = frozenset(
    {
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)

# What CloudWatch is asked for. Bedrock metrics are per ModelId; costguard's own ModelCalls are
# published per (Workflow, ModelId) and Throttles per Workflow (plus ModelId when known), so
# the reconciler queries every series it finds and sums them per workflow.
_BEDROCK_METRICS: Final = {
    "Invocations": "bedrock_invocations",
    "InputTokenCount": "bedrock_input_tokens",
    "OutputTokenCount": "bedrock_output_tokens",
    "InvocationThrottles": "bedrock_throttles",
}
_AGENT_METRICS: Final = {
    "InputTokenCount": "input_tokens",
    "OutputTokenCount": "output_tokens",
    "InvocationThrottles": "throttles",
}
_COSTGUARD_METRICS: Final = {"ModelCalls": "costguard_model_calls", "Throttles": "throttles"}


class ReconcileError(CostguardError):
    """Reconciliation could not run: a bad window, a malformed Cost Explorer page, an AWS error."""


# -- the window -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """UTC days ``start <= day < end`` (``end`` exclusive, like Cost Explorer's ``TimePeriod``)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise ReconcileError("a window needs start and end dates")
        if self.end <= self.start:
            raise ReconcileError(
                f"empty window: end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )

    @classmethod
    def parse(cls, since: str | None, until: str | None, today: date) -> Window:
        """The window from ``since``/``until`` as typed by a person (``YYYY-MM-DD``, UTC).

        ``until`` is the **last day included**, like ``costguard report --until`` and the Lambda
        event's ``until``, so ``--since 2026-11-01 --until 2026-11-30`` is November; the window's
        ``end`` is the day after it. Defaults: ``since`` the first day of ``today``'s month,
        ``until`` today (so ``end`` is tomorrow).
        """
        start = parse_day(since, "since") if since is not None else today.replace(day=1)
        last = parse_day(until, "until") if until is not None else today
        if last < start:
            raise ReconcileError(f"until {last.isoformat()} is before since {start.isoformat()}")
        return cls(start, last + timedelta(days=1))

    def days(self) -> list[str]:
        """Every day of the window as ``YYYY-MM-DD``, in order."""
        return [(self.start + timedelta(days=i)).isoformat() for i in range((self.end - self.start).days)]

    def time_period(self) -> dict[str, str]:
        return {"Start": self.start.isoformat(), "End": self.end.isoformat()}


def parse_day(value: Any, name: str) -> date:
    """A ``YYYY-MM-DD`` day typed by a person or an event; ``ReconcileError`` names ``name``."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ReconcileError(f"{name} must be a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ReconcileError(f"{name} is not a valid date: {value!r} ({exc})") from None


# -- the result -------------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    """One reconciliation: ``frame`` per (workflow, day), ``models`` per (day, model).

    ``billed_usage`` (Cost Explorer per workflow, day and usage type), ``agents`` (CloudWatch
    AWS/Bedrock/Agents per alias, only when asked for), ``services`` (the CE services filtered
    on) and ``warnings`` are extra detail for reports; the alerts and enforcement only need the
    first six fields.
    """

    window: Window
    frame: pd.DataFrame
    models: pd.DataFrame
    unpriced_models: list[str]
    api_calls: dict[str, int]
    estimated_days: list[str]
    billed_usage: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(BILLED_USAGE_COLUMNS)))
    agents: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(AGENT_COLUMNS)))
    services: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Action group Lambda spend per (workflow, day), when asked for (``include_lambda``).
    lambda_spend: pd.DataFrame | None = None


# -- Cost Explorer pages -------------------------------------------------------------------------------


@dataclass
class BilledCosts:
    """What Cost Explorer billed, parsed from every page of one ``GetCostAndUsage`` query."""

    costs: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (workflow, day)
    usage: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = field(default_factory=dict)
    days: set[str] = field(default_factory=set)  # days CE returned (billed is known, maybe 0)
    estimated: set[str] = field(default_factory=set)
    pages: int = 0

    def billed_usage_frame(self) -> pd.DataFrame:
        rows = [
            {"workflow": w, "day": d, "usage_type": u, "cost_usd": c, "usage_quantity": q}
            for (w, d, u), (c, q) in sorted(self.usage.items())
        ]
        return pd.DataFrame(rows, columns=list(BILLED_USAGE_COLUMNS))


def _page_error(page_no: int, where: str, message: str) -> ReconcileError:
    return ReconcileError(f"malformed Cost Explorer page {page_no}: {where}: {message}")


def _amount(value: Any, page_no: int, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise _page_error(page_no, where, f"not a number: {value!r}")
    try:
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, int | Decimal):
            number = Decimal(value)
        elif isinstance(value, str):
            number = Decimal(value.strip())
        else:
            raise InvalidOperation
    except InvalidOperation:
        raise _page_error(page_no, where, f"not a number: {value!r}") from None
    if not number.is_finite():
        raise _page_error(page_no, where, f"not a finite number: {value!r}")
    return number


def _get(mapping: Any, key: str, page_no: int, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(mapping, Mapping):
        raise _page_error(page_no, where, f"expected an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise _page_error(page_no, f"{where}.{key}" if where else key, "missing")
    value = mapping[key]
    if not isinstance(value, kind):
        raise _page_error(page_no, f"{where}.{key}" if where else key, f"unexpected {type(value).__name__}")
    return value


def parse_tag_key(key: str, tag_key: str) -> str | None:
    """``tag_key$value`` -> ``value``; ``tag_key$`` (untagged) -> :data:`UNTAGGED`; else None."""
    prefix = f"{tag_key}$"
    if not key.startswith(prefix):
        return None
    value = key[len(prefix):]
    return value if value else UNTAGGED


def parse_cost_pages(
    pages: Iterable[Mapping[str, Any]], tag_key: str, window: Window | None = None
) -> BilledCosts:
    """Fold ``GetCostAndUsage`` pages (grouped by TAG ``tag_key`` and USAGE_TYPE) into costs.

    A day can span pages (CE paginates groups, not days): amounts add up across pages and a day
    is estimated when any of its entries says so. Days outside ``window`` are ignored. Anything
    malformed raises :class:`ReconcileError` naming the page (1-based) and the field.
    """
    billed = BilledCosts()
    for page_no, page in enumerate(pages, start=1):
        billed.pages += 1
        results = _get(page, "ResultsByTime", page_no, "", list)
        for i, entry in enumerate(results):
            where = f"ResultsByTime[{i}]"
            period = _get(entry, "TimePeriod", page_no, where, Mapping)
            start = _get(period, "Start", page_no, f"{where}.TimePeriod", str)
            try:
                day = date.fromisoformat(start[:10])
            except ValueError:
                raise _page_error(page_no, f"{where}.TimePeriod.Start", f"not a date: {start!r}") from None
            if window is not None and not window.start <= day < window.end:
                continue
            day_key = day.isoformat()
            estimated = entry.get("Estimated", False)
            if not isinstance(estimated, bool):
                raise _page_error(page_no, f"{where}.Estimated", f"not a boolean: {estimated!r}")
            billed.days.add(day_key)
            if estimated:
                billed.estimated.add(day_key)
            groups = entry.get("Groups", [])
            if not isinstance(groups, list):
                raise _page_error(page_no, f"{where}.Groups", f"expected a list, got {type(groups).__name__}")
            for j, group in enumerate(groups):
                gwhere = f"{where}.Groups[{j}]"
                keys = _get(group, "Keys", page_no, gwhere, list)
                if not keys or not all(isinstance(k, str) for k in keys):
                    raise _page_error(page_no, f"{gwhere}.Keys", f"expected a list of strings, got {keys!r}")
                workflow = parse_tag_key(keys[0], tag_key)
                if workflow is None:
                    raise _page_error(
                        page_no, f"{gwhere}.Keys[0]", f"{keys[0]!r} is not a '{tag_key}$<value>' tag group"
                    )
                usage_type = keys[1] if len(keys) > 1 else ""
                metrics = _get(group, "Metrics", page_no, gwhere, Mapping)
                cost = _get(metrics, "UnblendedCost", page_no, f"{gwhere}.Metrics", Mapping)
                amount = _amount(
                    _get(cost, "Amount", page_no, f"{gwhere}.Metrics.UnblendedCost", (str, int, float, Decimal)),
                    page_no,
                    f"{gwhere}.Metrics.UnblendedCost.Amount",
                )
                unit = cost.get("Unit", "USD")
                if unit != "USD":
                    raise _page_error(page_no, f"{gwhere}.Metrics.UnblendedCost.Unit", f"expected USD, got {unit!r}")
                quantity = Decimal(0)
                usage_metric = metrics.get("UsageQuantity")
                if usage_metric is not None:
                    quantity = _amount(
                        _get(usage_metric, "Amount", page_no, f"{gwhere}.Metrics.UsageQuantity", (str, int, float)),
                        page_no,
                        f"{gwhere}.Metrics.UsageQuantity.Amount",
                    )
                key = (workflow, day_key)
                billed.costs[key] = billed.costs.get(key, Decimal(0)) + amount
                ukey = (workflow, day_key, usage_type)
                old_cost, old_qty = billed.usage.get(ukey, (Decimal(0), Decimal(0)))
                billed.usage[ukey] = (old_cost + amount, old_qty + quantity)
        token = page.get("NextPageToken")
        if token is not None and not isinstance(token, str):
            raise _page_error(page_no, "NextPageToken", f"expected a string, got {type(token).__name__}")
    return billed


# -- CloudWatch series ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """One CloudWatch series to query; ``kind`` is bedrock | agents | costguard, ``key`` the
    model id, agent alias ARN or workflow it is summed under, ``column`` the output column."""

    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    kind: str
    key: str
    column: str

    def query(self, query_id: str) -> dict[str, Any]:
        if not _QUERY_ID_RE.match(query_id):
            raise ValueError(f"invalid GetMetricData query id {query_id!r}")
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
                },
                "Period": DAY_SECONDS,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }


@dataclass
class MetricTotals:
    """CloudWatch sums per day: ``values[kind][(day, key)][column] = int``."""

    values: dict[str, dict[tuple[str, str], dict[str, int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    )

    def get(self, kind: str, day: str, key: str, column: str) -> int:
        by_key = self.values.get(kind)
        if not by_key:
            return 0
        cell = by_key.get((day, key))
        return int(cell.get(column, 0)) if cell else 0

    def keys(self, kind: str) -> set[tuple[str, str]]:
        return set(self.values.get(kind, {}))

    def add(self, kind: str, day: str, key: str, column: str, value: int) -> None:
        self.values[kind][(day, key)][column] += value


def _day_of(timestamp: Any) -> str | None:
    if isinstance(timestamp, datetime):
        ts = timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
        return ts.astimezone(UTC).date().isoformat()
    if isinstance(timestamp, str):
        try:
            return _day_of(datetime.fromisoformat(timestamp.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def collect_metric_results(
    specs: Mapping[str, MetricSeries],
    results: Iterable[Mapping[str, Any]],
    window: Window,
    totals: MetricTotals | None = None,
    normalise: Callable[[str], str] | None = None,
) -> MetricTotals:
    """Add ``MetricDataResults`` (any number of pages) into per-day integer sums."""
    totals = totals if totals is not None else MetricTotals()
    first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
    for result in results:
        spec = specs.get(str(result.get("Id", "")))
        if spec is None:
            continue
        key = normalise(spec.key) if normalise is not None and spec.kind == "bedrock" else spec.key
        for timestamp, value in zip(result.get("Timestamps") or [], result.get("Values") or [], strict=False):
            day = _day_of(timestamp)
            if day is None or not first <= day <= last:
                continue
            try:
                count = int(round(float(value)))
            except (TypeError, ValueError):
                continue
            totals.add(spec.kind, day, key, spec.column, count)
    return totals


# -- frames ---------------------------------------------------------------------------------------


def _month_days(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _elapsed_days(day: date, now: datetime | None) -> Decimal:
    """Days of ``day``'s month elapsed by the end of ``day``; for today, by ``now``."""
    if now is not None and now.date() == day:
        seconds = now.hour * 3600 + now.minute * 60 + now.second + 1
        return Decimal(day.day - 1) + Decimal(seconds) / Decimal(DAY_SECONDS)
    return Decimal(day.day)


def _month_to_date(
    workflows: Iterable[str],
    window: Window,
    usage_by_day: Mapping[tuple[str, str], int],
    counters: Sequence[BudgetCounter],
) -> dict[tuple[str, str], int]:
    """Metered spend of each workflow from the first of each window day's month through that day.

    A day's spend is the ledger's ``day:`` budget counter when one exists (what budgets enforce),
    else the sum of the day's usage rows. The ``month:`` counter is the authority for the latest
    day of a month that has any data: it still holds the month's spend if day counters expired.
    """
    day_counter: dict[tuple[str, str], int] = {}
    month_counter: dict[tuple[str, str], int] = {}
    last_data_day: dict[tuple[str, str], str] = {}
    for c in counters:
        kind, _, key = c.period.partition(":")
        if kind == "day":
            day_counter[(c.workflow, key)] = c.spent_nanos
            if c.spent_nanos:
                mk = (c.workflow, key[:7])
                last_data_day[mk] = max(last_data_day.get(mk, key), key)
        elif kind == "month":
            month_counter[(c.workflow, key)] = c.spent_nanos
    for (workflow, day), nanos in usage_by_day.items():
        if nanos:
            mk = (workflow, day[:7])
            last_data_day[mk] = max(last_data_day.get(mk, day), day)
    first = window.start.replace(day=1)
    out: dict[tuple[str, str], int] = {}
    for workflow in workflows:
        running, current = 0, ""
        day = first
        while day < window.end:
            key = day.isoformat()
            if key[:7] != current:
                running, current = 0, key[:7]
            spend = day_counter.get((workflow, key))
            running += spend if spend is not None else usage_by_day.get((workflow, key), 0)
            if day >= window.start:
                mtd = running
                month = month_counter.get((workflow, current))
                if month is not None and key >= last_data_day.get((workflow, current), ""):
                    mtd = max(mtd, month)
                out[(workflow, key)] = mtd
            day += timedelta(days=1)
    return out


def build_frame(
    window: Window,
    usage: Sequence[DailyUsage],
    billed: BilledCosts,
    metrics: MetricTotals,
    policies: PolicySet,
    counters: Sequence[BudgetCounter] = (),
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per (workflow, day) of the window, for every workflow seen anywhere or in a policy.

    ``usage`` may reach back before the window (to the first of its first month): those rows
    only feed the month-to-date figures. ``estimated`` is true when Cost Explorer marked the day
    estimated or has no figure for it yet (either way the billed side is not final).
    """
    days = window.days()
    first, last = days[0], days[-1]
    metered: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    usage_by_day: dict[tuple[str, str], int] = defaultdict(int)
    for row in usage:
        usage_by_day[(row.workflow, row.day)] += row.cost_nanos
        if first <= row.day <= last:
            cell = metered[(row.workflow, row.day)]
            cell[0] += row.cost_nanos
            cell[1] += row.model_calls
            cell[2] += row.input_tokens
            cell[3] += row.output_tokens
            cell[4] += row.cache_read_tokens
            cell[5] += row.cache_write_tokens
    workflows = (
        {w for w, _ in metered}
        | {w for w, _ in billed.costs}
        | {k for _, k in metrics.keys("costguard")}
        | set(policies.names())
    )
    mtd = _month_to_date(workflows, window, usage_by_day, counters)
    rows: list[dict[str, Any]] = []
    for workflow in sorted(workflows):
        budget = None if workflow == UNTAGGED else policies.for_workflow(workflow).budget
        for day in days:
            cell = metered.get((workflow, day), [0, 0, 0, 0, 0, 0])
            metered_usd = nanos_to_usd(cell[0])
            billed_usd: Decimal | None = None
            if day in billed.days:
                billed_usd = billed.costs.get((workflow, day), Decimal(0))
            drift = None if billed_usd is None else billed_usd - metered_usd
            drift_pct = None
            if drift is not None and billed_usd:
                drift_pct = (drift * 100 / billed_usd).quantize(_PCT, ROUND_HALF_EVEN)
            the_day = date.fromisoformat(day)
            month_to_date = nanos_to_usd(mtd.get((workflow, day), 0))
            burn = (month_to_date / _elapsed_days(the_day, now)).quantize(_NANO, ROUND_HALF_EVEN)
            forecast = burn * _month_days(the_day)
            rows.append(
                {
                    "workflow": workflow,
                    "day": day,
                    "metered_cost_usd": metered_usd,
                    "billed_cost_usd": billed_usd,
                    "estimated": day in billed.estimated or billed_usd is None,
                    "drift_usd": drift,
                    "drift_pct": drift_pct,
                    "metered_model_calls": cell[1],
                    "metered_input_tokens": cell[2],
                    "metered_output_tokens": cell[3],
                    "metered_cache_read_tokens": cell[4],
                    "metered_cache_write_tokens": cell[5],
                    "costguard_model_calls": metrics.get("costguard", day, workflow, "costguard_model_calls"),
                    "throttles": metrics.get("costguard", day, workflow, "throttles"),
                    "budget_daily_usd": budget.daily_usd if budget is not None else None,
                    "budget_monthly_usd": budget.monthly_usd if budget is not None else None,
                    "month_to_date_usd": month_to_date,
                    "burn_rate_usd_per_day": burn,
                    "forecast_month_end_usd": forecast,
                }
            )
    return _frame(rows, FRAME_COLUMNS)


def build_models(
    window: Window,
    usage: Sequence[DailyUsage],
    metrics: MetricTotals,
    normalise: Callable[[str], str] | None = None,
) -> pd.DataFrame:
    """One row per (day, base model): what Bedrock counted vs what costguard metered."""
    norm = normalise or (lambda m: m)
    first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
    metered: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in usage:
        if first <= row.day <= last:
            cell = metered[(row.day, norm(row.base_model_id))]
            cell[0] += row.input_tokens
            cell[1] += row.output_tokens
    rows: list[dict[str, Any]] = []
    for day, model in sorted(set(metered) | metrics.keys("bedrock")):
        values = {col: metrics.get("bedrock", day, model, col) for col in _BEDROCK_METRICS.values()}
        m_in, m_out = metered.get((day, model), [0, 0])
        rows.append(
            {
                "day": day,
                "model_id": model,
                **values,
                "metered_input_tokens": m_in,
                "metered_output_tokens": m_out,
                "unmetered_input_tokens": max(0, values["bedrock_input_tokens"] - m_in),
                "unmetered_output_tokens": max(0, values["bedrock_output_tokens"] - m_out),
            }
        )
    return _frame(rows, MODEL_COLUMNS)


def build_agents(metrics: MetricTotals) -> pd.DataFrame:
    rows = [
        {"day": day, "agent_alias_arn": arn, **{c: metrics.get("agents", day, arn, c) for c in _AGENT_METRICS.values()}}
        for day, arn in sorted(metrics.keys("agents"))
    ]
    return _frame(rows, AGENT_COLUMNS)


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    if not rows:
        return frame
    # Money columns with gaps must keep None (not NaN) and Decimals (not floats): object dtype.
    for column in columns:
        if column.endswith("_usd") or column.endswith("_pct"):
            frame[column] = pd.Series([r[column] for r in rows], dtype=object, index=frame.index)
    return frame


# -- the reconciler ---------------------------------------------------------------------------------


class Reconciler:
    """Join Cost Explorer, CloudWatch and the ledger for a :class:`Window`.

    Clients are built lazily from ``session`` (a ``boto3.Session``; a default one when None)
    unless injected. ``api_calls`` in the result counts the AWS API calls of one run per
    ``service:Operation``, through a botocore ``before-call`` hook registered first on each
    client (so it also sees calls answered by a ``Stubber``). ``sleep`` and ``max_attempts``
    drive the backoff on throttling (``LimitExceededException`` and friends); ``catalog`` (the
    price catalog, loaded when first needed) maps model ids to the base ids the ledger uses.
    """

    def __init__(
        self,
        ledger: Ledger,
        policies: PolicySet,
        *,
        session: Any = None,
        ce_client: Any = None,
        cloudwatch_client: Any = None,
        tag_key: str = "costguard:workflow",
        region_name: str | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        max_attempts: int = 6,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 20.0,
        catalog: PriceCatalog | None = None,
        profile_resolver: InferenceProfileResolver | None = None,
        include_agents: bool = False,
        metrics_namespace: str = COSTGUARD_NAMESPACE,
        include_lambda: bool = False,
    ) -> None:
        if not tag_key or "$" in tag_key:
            raise ReconcileError(f"invalid cost allocation tag key {tag_key!r}")
        if max_attempts < 1:
            raise ReconcileError("max_attempts must be at least 1")
        self.ledger = ledger
        self.policies = policies
        self.tag_key = tag_key
        self.region_name = region_name
        self.include_agents = include_agents
        self.include_lambda = include_lambda
        self.metrics_namespace = metrics_namespace
        self._session = session
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or time.sleep
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._catalog = catalog
        self._resolver = profile_resolver
        self._calls: dict[str, int] = defaultdict(int)
        self._hooked: set[int] = set()
        self._ce = ce_client
        self._cw = cloudwatch_client
        for client in (ce_client, cloudwatch_client):
            if client is not None:
                self._hook(client)

    # -- clients and call accounting ----------------------------------------------------------------

    def _hook(self, client: Any) -> None:
        if id(client) in self._hooked:
            return
        self._hooked.add(id(client))
        client.meta.events.register_first(
            "before-call.*.*", self._count_call, unique_id=f"costguard-reconcile-count-{id(self)}"
        )

    def _count_call(self, model: Any = None, **_: Any) -> None:
        if model is None:
            return
        self._calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.Session()
        return self._session

    def _client(self, service: str) -> Any:
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        session = self._boto_session()
        region = self.region_name or getattr(session, "region_name", None)
        if service == "ce":
            # Cost Explorer has one endpoint per partition (us-east-1 in the aws partition).
            region = region or "us-east-1"
        try:
            client = session.client(
                service, region_name=region, config=Config(retries={"mode": "standard", "max_attempts": 4})
            )
        except BotoCoreError as exc:
            raise ReconcileError(f"cannot create a {service} client: {exc}") from exc
        self._hook(client)
        return client

    @property
    def ce(self) -> Any:
        if self._ce is None:
            self._ce = self._client("ce")
        return self._ce

    @property
    def cloudwatch(self) -> Any:
        if self._cw is None:
            self._cw = self._client("cloudwatch")
        return self._cw

    def _call(self, client: Any, operation: str, **params: Any) -> dict[str, Any]:
        """One API call, retried with exponential backoff while AWS says it is throttling."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(client, operation)
        service = client.meta.service_model.service_name
        for attempt in range(1, self._max_attempts + 1):
            try:
                response: dict[str, Any] = method(**params)
                return response
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in _THROTTLE_CODES or status == 429:
                    if attempt == self._max_attempts:
                        raise ReconcileError(
                            f"{service}:{operation} still throttled ({code}) after {attempt} attempts"
                        ) from exc
                    delay = min(self._backoff_cap, self._backoff_base * (2 ** (attempt - 1)))
                    logger.info("%s:%s throttled (%s); retrying in %.1fs", service, operation, code, delay)
                    self._sleep(delay)
                    continue
                raise ReconcileError(f"{service}:{operation} failed: {code}: {exc}") from exc
            except BotoCoreError as exc:
                raise ReconcileError(f"{service}:{operation} failed: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _normalise(self) -> Callable[[str], str]:
        if self._catalog is None:
            from costguard.pricing.catalog import PriceCatalog

            self._catalog = PriceCatalog.load()
        catalog, resolver = self._catalog, self._resolver
        cache: dict[str, str] = {}

        def normalise(model_id: str) -> str:
            found = cache.get(model_id)
            if found is None:
                resolved = model_id
                if resolver is not None and model_id.startswith("arn:"):
                    try:
                        resolved = resolver.resolve(model_id)
                    except CostguardError as exc:
                        logger.warning("cannot resolve %s: %s", model_id, exc)
                found = catalog.quote(resolved).base_model_id
                cache[model_id] = found
            return found

        return normalise

    # -- the run ------------------------------------------------------------------------------------

    def run(self, window: Window) -> ReconcileResult:
        self._calls.clear()
        warnings: list[str] = []
        now = self._clock()
        normalise = self._normalise()

        month_start = window.start.replace(day=1)
        usage = self.ledger.daily_usage(month_start.isoformat(), window.end.isoformat())
        counters = self.ledger.budget_counters()
        first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
        in_window = [u for u in usage if first <= u.day <= last]

        services = self._bedrock_services(window, warnings)
        pages = self._cost_pages(window, services)
        billed = parse_cost_pages(pages, self.tag_key, window)

        specs = self._metric_series(in_window, normalise)
        metrics = self._metric_data(window, specs, normalise)

        frame = build_frame(window, usage, billed, metrics, self.policies, counters, now)
        models = build_models(window, in_window, metrics, normalise)
        unpriced = sorted({normalise(u.base_model_id) for u in in_window if u.unpriced_calls > 0})
        lambda_spend = self._lambda_spend(window) if self.include_lambda else None
        return ReconcileResult(
            window=window,
            frame=frame,
            models=models,
            unpriced_models=unpriced,
            api_calls=dict(sorted(self._calls.items())),
            estimated_days=sorted(billed.estimated),
            billed_usage=billed.billed_usage_frame(),
            agents=build_agents(metrics),
            services=services,
            warnings=warnings,
            lambda_spend=lambda_spend,
        )

    def _lambda_spend(self, window: Window) -> pd.DataFrame:
        from costguard.reconcile_lambda import LAMBDA_SERVICE, build_lambda_spend

        billed = parse_cost_pages(self._cost_pages(window, [LAMBDA_SERVICE]), self.tag_key, window)
        since_ms = int(datetime.combine(window.start, datetime.min.time(), UTC).timestamp() * 1000)
        return build_lambda_spend(window.days(), billed, self.ledger.actions(since_ms=since_ms))

    # -- Cost Explorer ------------------------------------------------------------------------------

    def _bedrock_services(self, window: Window, warnings: list[str]) -> list[str]:
        """``Amazon Bedrock`` plus every service name with "Bedrock" CE knows in the window."""
        found = {BEDROCK_SERVICE}
        params: dict[str, Any] = {
            "TimePeriod": window.time_period(),
            "Dimension": "SERVICE",
            "SearchString": "Bedrock",
            "Context": "COST_AND_USAGE",
        }
        try:
            seen_tokens: set[str] = set()
            while True:
                page = self._call(self.ce, "get_dimension_values", **params)
                for item in page.get("DimensionValues") or []:
                    value = item.get("Value") if isinstance(item, Mapping) else None
                    if isinstance(value, str) and "bedrock" in value.lower():
                        found.add(value)
                token = page.get("NextPageToken")
                if not token or token in seen_tokens:
                    break
                seen_tokens.add(token)
                params["NextPageToken"] = token
        except ReconcileError as exc:
            message = f"Bedrock service discovery failed, filtering on {BEDROCK_SERVICE!r} only: {exc}"
            logger.warning(message)
            warnings.append(message)
        return sorted(found)

    def _cost_pages(self, window: Window, services: Sequence[str]) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "TimePeriod": window.time_period(),
            "Granularity": "DAILY",
            "Metrics": ["UnblendedCost", "UsageQuantity"],
            "Filter": {"Dimensions": {"Key": "SERVICE", "Values": list(services)}},
            "GroupBy": [{"Type": "TAG", "Key": self.tag_key}, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        }
        pages: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            page = self._call(self.ce, "get_cost_and_usage", **params)
            if not isinstance(page, Mapping):
                raise _page_error(len(pages) + 1, "response", "not an object")
            pages.append(page)
            token = page.get("NextPageToken")
            if not token:
                return pages
            if not isinstance(token, str):
                raise _page_error(len(pages), "NextPageToken", f"expected a string, got {type(token).__name__}")
            if token in seen_tokens:
                raise _page_error(len(pages), "NextPageToken", f"token {token!r} repeated: pagination loops")
            seen_tokens.add(token)
            params["NextPageToken"] = token

    # -- CloudWatch ---------------------------------------------------------------------------------

    def _list_metrics(self, namespace: str, metric: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"Namespace": namespace, "MetricName": metric}
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self._call(self.cloudwatch, "list_metrics", **params)
            found.extend(m for m in page.get("Metrics") or [] if isinstance(m, Mapping))
            token = page.get("NextToken")
            if not token or token in seen:
                return found
            seen.add(token)
            params["NextToken"] = token

    def _metric_series(self, usage: Sequence[DailyUsage], normalise: Callable[[str], str]) -> list[MetricSeries]:
        """Every series to query: what ``ListMetrics`` finds plus what the ledger implies.

        ``ListMetrics`` only returns series with data in the last two weeks, so for older
        windows the ledger's models and workflows are added (deduplicated) as well; a series
        without data costs a query and returns nothing.
        """
        series: dict[tuple[str, str, tuple[tuple[str, str], ...]], MetricSeries] = {}

        def add(namespace: str, metric: str, dims: tuple[tuple[str, str], ...], kind: str, key: str, col: str) -> None:
            # Dimensions are a set to CloudWatch; the order ListMetrics gave is kept in the query
            # anyway (moto 5.2 matches dimensions order-sensitively), the set dedupes.
            series.setdefault(
                (namespace, metric, tuple(sorted(dims))), MetricSeries(namespace, metric, dims, kind, key, col)
            )

        def dims_of(metric: Mapping[str, Any]) -> dict[str, str]:
            return {
                str(d.get("Name")): str(d.get("Value"))
                for d in metric.get("Dimensions") or []
                if isinstance(d, Mapping)
            }

        for name, column in _BEDROCK_METRICS.items():
            for m in self._list_metrics("AWS/Bedrock", name):
                dims = dims_of(m)
                if set(dims) == {"ModelId"}:
                    add("AWS/Bedrock", name, (("ModelId", dims["ModelId"]),), "bedrock", dims["ModelId"], column)
            for model in sorted({u.base_model_id for u in usage}):
                add("AWS/Bedrock", name, (("ModelId", model),), "bedrock", model, column)
        if self.include_agents:
            for name, column in _AGENT_METRICS.items():
                for m in self._list_metrics("AWS/Bedrock/Agents", name):
                    dims = dims_of(m)
                    if "AgentAliasArn" in dims and "ModelId" not in dims:
                        add("AWS/Bedrock/Agents", name, tuple(dims.items()), "agents", dims["AgentAliasArn"], column)
        for name, column in _COSTGUARD_METRICS.items():
            for m in self._list_metrics(self.metrics_namespace, name):
                dims = dims_of(m)
                if "Workflow" in dims and set(dims) <= {"Workflow", "ModelId"}:
                    add(self.metrics_namespace, name, tuple(dims.items()), "costguard", dims["Workflow"], column)
        for workflow, model in sorted({(u.workflow, u.base_model_id) for u in usage}):
            # the order costguard.metrics publishes them in
            add(self.metrics_namespace, "ModelCalls", (("Workflow", workflow), ("ModelId", model)), "costguard",
                workflow, "costguard_model_calls")
        return [series[k] for k in sorted(series)]

    def _metric_data(
        self, window: Window, specs: Sequence[MetricSeries], normalise: Callable[[str], str]
    ) -> MetricTotals:
        totals = MetricTotals()
        start = datetime.combine(window.start, datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(window.end, datetime.min.time(), tzinfo=UTC)
        for offset in range(0, len(specs), MAX_QUERIES_PER_REQUEST):
            chunk = specs[offset : offset + MAX_QUERIES_PER_REQUEST]
            by_id = {f"m{offset + i}": spec for i, spec in enumerate(chunk)}
            params: dict[str, Any] = {
                "MetricDataQueries": [spec.query(qid) for qid, spec in by_id.items()],
                "StartTime": start,
                "EndTime": end,
                "ScanBy": "TimestampAscending",
            }
            seen: set[str] = set()
            while True:
                page = self._call(self.cloudwatch, "get_metric_data", **params)
                collect_metric_results(by_id, page.get("MetricDataResults") or [], window, totals, normalise)
                token = page.get("NextToken")
                if not token or token in seen:
                    break
                seen.add(token)
                params["NextToken"] = token
        return totals
