"""Reconciliation: what AWS billed (Cost Explorer), what Bedrock saw (CloudWatch) and what
costguard metered (the ledger), joined per (workflow, UTC day) and per (day, model).

The bill supports two levels, and the reconciler uses both (see :mod:`.billing`):

* **per model and day, always**: usage types name the model (Marketplace editions through
  their service name) and the meter knows the model, so token spend is compared kind by kind
  (input, output, cache read, cache write) whether or not anything is tagged;
* **per workflow and day, where tags exist**: cost allocation tags reach the bill only through
  application inference profiles or IAM principal (and session) tags. A workflow none of the
  tag keys names is shown with the meter's own attribution (``attribution = "meter"``), its
  billed figure unknown rather than $0; ``(untagged)`` spend is reported, never compared.

The :class:`Reconciler` only reads. One run costs:

* Cost Explorer: one ``GetDimensionValues`` request (which Bedrock services exist: Marketplace
  editions such as ``Claude 3 Haiku (Amazon Bedrock Edition)`` are billed under their own
  service name), then ``GetCostAndUsage`` pages: one query grouped by SERVICE and USAGE_TYPE,
  plus one per tag key grouped by that TAG and USAGE_TYPE (``GroupBy`` takes two keys at most).
  Every CE request is billed ($0.01), so nothing is asked twice in a run and each page loop
  follows ``NextPageToken`` only.
* CloudWatch: one ``ListMetrics`` listing per namespace, filtered on the dimension every useful
  series has (``ModelId``, ``AgentAliasArn``, ``Workflow``), and ``GetMetricData`` with up to
  500 queries per request (the API limit), following ``NextToken``.
* The ledger: ``daily_usage`` (from the first day of the window's first month, for
  month-to-date) and ``budget_counters``.

Money is :class:`~decimal.Decimal` end to end: Cost Explorer amounts are parsed from their JSON
strings, ledger amounts come as integer nano-dollars. Only CloudWatch counts (tokens, calls,
throttles) arrive as floats and are rounded to ints.

Why ``GetDimensionValues`` first: the Cost Explorer ``Filter`` on ``SERVICE`` only matches exact
values in ``GetCostAndUsage``, and the list of Marketplace Bedrock editions grows with every new
model. Asking CE for the service names that carry charges in the window is one cheap request and
never goes stale. If the discovery call fails (no permission, an emulator without it), the run
goes on with ``Amazon Bedrock`` alone, which misses every Marketplace edition: the billed side
of every day is then incomplete, so :attr:`ReconcileResult.drift_suppressed_days` lists the
window's days (no drift alert for them) and :attr:`ReconcileResult.warnings` says so.
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
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Final

from costguard._extras import require_reports
from costguard.errors import CostguardError
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet
from costguard.reconcile.base import UNTAGGED, ReconcileError, Window
from costguard.reconcile.billing import (
    BILLED_SUMMARY_COLUMNS,
    BILLED_USAGE_COLUMNS,
    COMPARED_KINDS,
    Billed,
    BilledCosts,
    page_error,
    billed_by_model,
    billed_by_workflow,
    billed_summary_frame,
    billed_usage_frame,
    parse_cost_pages,
)
from costguard.reconcile.model_names import ModelNames
from costguard.usage import BudgetCounter, DailyUsage, nanos_to_usd

if TYPE_CHECKING:
    import pandas as pd

    from costguard.pricing.catalog import InferenceProfileResolver, ModelPrice, PriceCatalog
else:  # the report and reconcile paths need the reports extra
    pd = require_reports("pandas")

__all__ = [
    "AGENT_COLUMNS",
    "BEDROCK_SERVICE",
    "DEFAULT_TAG_KEY",
    "FRAME_COLUMNS",
    "DIMENSION_COLUMNS",
    "KIND_COLUMNS",
    "MAX_QUERIES_PER_REQUEST",
    "METER_ATTRIBUTION",
    "MODEL_COLUMNS",
    "MetricSeries",
    "MetricTotals",
    "ReconcileResult",
    "Reconciler",
    "build_agents",
    "build_frame",
    "build_dimensions",
    "build_kinds",
    "build_models",
    "collect_metric_results",
    "tag_keys_of",
]

logger = logging.getLogger("costguard.reconcile")

BEDROCK_SERVICE: Final = "Amazon Bedrock"
#: GetMetricData accepts at most 500 MetricDataQueries per request.
MAX_QUERIES_PER_REQUEST: Final = 500
DAY_SECONDS: Final = 86_400
COSTGUARD_NAMESPACE: Final = "Costguard"
DEFAULT_TAG_KEY: Final = "costguard:workflow"
#: ``attribution`` of a workflow no tag key names: its figures are the meter's alone.
METER_ATTRIBUTION: Final = "meter"

FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "workflow",
    "day",
    "metered_cost_usd",
    "billed_cost_usd",
    "estimated",
    "drift_usd",
    "drift_pct",
    "attribution",
    "billed_non_token_usd",
    "billed_agentcore_usd",
    "billed_unclassified_usd",
    "billed_total_usd",
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
    "bedrock_cache_read_tokens",
    "bedrock_cache_write_tokens",
    "bedrock_throttles",
    "metered_input_tokens",
    "metered_output_tokens",
    "metered_cache_read_tokens",
    "metered_cache_write_tokens",
    "unmetered_input_tokens",
    "unmetered_output_tokens",
    "unmetered_cache_read_tokens",
    "unmetered_cache_write_tokens",
    "billed_input_tokens",
    "billed_output_tokens",
    "billed_cache_read_tokens",
    "billed_cache_write_tokens",
    "metered_cost_usd",
    "billed_cost_usd",
    "estimated",
    "drift_usd",
    "drift_pct",
)
#: Token spend kind by kind: ``level`` is "workflow" or "model", ``key`` the workflow or model id.
#: ``metered_usd`` prices the metered tokens of a kind at the catalog's rate for that kind (the
#: ledger keeps one cost per call, not one per kind), so it is an estimate of the split.
KIND_COLUMNS: Final[tuple[str, ...]] = (
    "level", "key", "day", "kind", "billed_usd", "metered_usd", "drift_usd", "billed_tokens", "metered_tokens",
)
#: Token spend per (day, model) split by the price dimensions both sides name: scope (in_region,
#: geo, global), context band (standard, long), tier (standard, priority, flex) and
#: latency-optimized. The metered side sums the calls' exact costs by the price key they were
#: priced with (``unrecorded`` for calls written before price keys were kept); the billed side
#: the usage types the classifier reads these qualifiers from.
DIMENSION_COLUMNS: Final[tuple[str, ...]] = (
    "day", "model_id", "scope", "context", "tier", "latency_optimized", "metered_cost_usd", "billed_cost_usd", "drift_usd",
)
UNRECORDED: Final = "unrecorded"
AGENT_COLUMNS: Final[tuple[str, ...]] = ("day", "agent_alias_arn", "input_tokens", "output_tokens", "throttles")

_NANO: Final = Decimal("0.000000001")
_PCT: Final = Decimal("0.01")
_PER_TOKENS: Final = Decimal(1_000_000)
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

# What CloudWatch is asked for. AWS/Bedrock publishes per ModelId, including the prompt-cache
# token counts (https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-runtime-metrics.html:
# CacheReadInputTokenCount, CacheWriteInputTokenCount beside InputTokenCount and OutputTokenCount).
_BEDROCK_METRICS: Final = {
    "Invocations": "bedrock_invocations",
    "InputTokenCount": "bedrock_input_tokens",
    "OutputTokenCount": "bedrock_output_tokens",
    "CacheReadInputTokenCount": "bedrock_cache_read_tokens",
    "CacheWriteInputTokenCount": "bedrock_cache_write_tokens",
    "InvocationThrottles": "bedrock_throttles",
}
# AWS/Bedrock/Agents publishes every metric under three dimension sets
# (https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring-agents-cw-metrics.html):
# {Operation}, {Operation, ModelId} and {Operation, AgentAliasArn, ModelId}. The first two are
# account-wide aggregates of the third, so only the third is read and summed per alias (over
# its models and operations): adding the aggregates would count every token two or three times.
_AGENT_METRICS: Final = {
    "InputTokenCount": "input_tokens",
    "OutputTokenCount": "output_tokens",
    "InvocationThrottles": "throttles",
}
_AGENT_DIMENSIONS: Final = frozenset({"Operation", "AgentAliasArn", "ModelId"})
_COSTGUARD_METRICS: Final = {"ModelCalls": "costguard_model_calls", "Throttles": "throttles"}


def tag_keys_of(tag_key: str | Sequence[str]) -> list[str]:
    """One cost allocation tag key or several, checked: ``ReconcileError`` names the bad one."""
    tag_keys = [tag_key] if isinstance(tag_key, str) else list(tag_key)
    if not tag_keys:
        raise ReconcileError("at least one cost allocation tag key is needed")
    for key in tag_keys:
        # Cost Explorer answers "<key>$<value>": a "$" in the key would make that ambiguous
        if not isinstance(key, str) or not key.strip() or "$" in key:
            raise ReconcileError(f"invalid cost allocation tag key {key!r}")
    if len(set(tag_keys)) != len(tag_keys):
        raise ReconcileError(f"cost allocation tag keys repeat: {tag_keys!r}")
    return tag_keys


# -- the result -------------------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    """One reconciliation: ``frame`` per (workflow, day), ``models`` per (day, model).

    ``kinds`` (token spend kind by kind), ``billed_usage`` (Cost Explorer per workflow, day and
    usage type, classified), ``billed_summary`` (the whole Bedrock bill per day, token spend
    beside every non-token column), ``agents`` (CloudWatch AWS/Bedrock/Agents per alias, only
    when asked for), ``services`` (the CE services filtered on), ``tag_keys``, ``warnings``
    and ``drift_suppressed_days`` are extra detail for reports and alerts.
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
    kinds: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(KIND_COLUMNS)))
    billed_summary: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(BILLED_SUMMARY_COLUMNS)))
    tag_keys: list[str] = field(default_factory=lambda: [DEFAULT_TAG_KEY])
    #: days whose billed side is known to be incomplete: no drift alert is raised for them
    drift_suppressed_days: list[str] = field(default_factory=list)
    #: usage types no pattern recognised, with their cost over the window
    unclassified_usage: dict[str, Decimal] = field(default_factory=dict)
    #: Action group Lambda spend per (workflow, day), when asked for (``include_lambda``).
    lambda_spend: pd.DataFrame | None = None
    #: Token spend per (day, model) and price dimensions, metered against billed (``DIMENSION_COLUMNS``).
    dimensions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DIMENSION_COLUMNS)))

    def unattributed_workflows(self) -> list[str]:
        """Workflows with metered spend that no tag key attributes in the bill, on days Cost
        Explorer has figures for (a workflow whose first tagged spend has not reached the bill
        yet is not one)."""
        if len(self.frame) == 0 or "attribution" not in self.frame.columns:
            return []
        billed_days = {str(d) for d in self.billed_summary["day"]} if len(self.billed_summary) else set()
        rows = self.frame[(self.frame["attribution"] == METER_ATTRIBUTION)].to_dict("records")
        return sorted({str(r["workflow"]) for r in rows if r["metered_cost_usd"] and str(r["day"]) in billed_days})


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
        cursor = first
        while cursor < window.end:
            key = cursor.isoformat()
            if key[:7] != current:
                running, current = 0, key[:7]
            spend = day_counter.get((workflow, key))
            running += spend if spend is not None else usage_by_day.get((workflow, key), 0)
            if cursor >= window.start:
                mtd = running
                month = month_counter.get((workflow, current))
                if month is not None and key >= last_data_day.get((workflow, current), ""):
                    mtd = max(mtd, month)
                out[(workflow, key)] = mtd
            cursor += timedelta(days=1)
    return out


def _drift(billed: Decimal | None, metered: Decimal) -> tuple[Decimal | None, Decimal | None]:
    if billed is None:
        return None, None
    drift = billed - metered
    pct = (drift * 100 / billed).quantize(_PCT, ROUND_HALF_EVEN) if billed else None
    return drift, pct


def build_frame(
    window: Window,
    usage: Sequence[DailyUsage],
    billed: Billed,
    metrics: MetricTotals,
    policies: PolicySet,
    counters: Sequence[BudgetCounter] = (),
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per (workflow, day) of the window, for every workflow seen anywhere or in a policy.

    ``billed`` is :func:`~.billing.billed_by_workflow`. A workflow some tag key names in the bill
    is compared: ``billed_cost_usd`` is its on-demand token spend, the rest of its Bedrock spend
    sits in the ``billed_*_usd`` columns beside it. A workflow no tag names (``attribution`` is
    ``meter``) has no billed figure, and :data:`UNTAGGED` has no metered one: neither gets a
    drift. ``usage`` may reach back before the window (to the first of its first month): those
    rows only feed the month-to-date figures. ``estimated`` is true when Cost Explorer marked the
    day estimated or has no figure for it yet (either way the billed side is not final).
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
        | {w for w, _ in billed.keys()}
        | {k for _, k in metrics.keys("costguard")}
        | set(policies.names())
    )
    mtd = _month_to_date(workflows, window, usage_by_day, counters)
    rows: list[dict[str, Any]] = []
    for workflow in sorted(workflows):
        budget = None if workflow == UNTAGGED else policies.for_workflow(workflow).budget
        attribution = billed.sources.get(workflow, METER_ATTRIBUTION)
        compared = attribution.startswith("tag:")
        for day in days:
            cell = metered.get((workflow, day), [0, 0, 0, 0, 0, 0])
            metered_usd = nanos_to_usd(cell[0])
            spend = billed.cells.get((workflow, day))
            known = day in billed.days and attribution != METER_ATTRIBUTION
            billed_usd = (spend.token_total if spend else Decimal(0)) if known else None
            drift, drift_pct = _drift(billed_usd if compared else None, metered_usd)
            the_day = date.fromisoformat(day)
            month_to_date = nanos_to_usd(mtd.get((workflow, day), 0))
            burn = (month_to_date / _elapsed_days(the_day, now)).quantize(_NANO, ROUND_HALF_EVEN)
            forecast = burn * _month_days(the_day)
            rows.append(
                {
                    "workflow": workflow,
                    "day": day,
                    "attribution": attribution,
                    "metered_cost_usd": metered_usd,
                    "billed_cost_usd": billed_usd,
                    "estimated": day in billed.estimated or day not in billed.days,
                    "drift_usd": drift,
                    "drift_pct": drift_pct,
                    "billed_non_token_usd": (spend.non_token_total if spend else Decimal(0)) if known else None,
                    "billed_agentcore_usd": (spend.other("agentcore") if spend else Decimal(0)) if known else None,
                    "billed_unclassified_usd": (spend.other("unclassified") if spend else Decimal(0))
                    if known else None,
                    "billed_total_usd": (spend.total if spend else Decimal(0)) if known else None,
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


_METERED_KIND_FIELDS: Final = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
}


def _metered_by(
    window: Window, usage: Sequence[DailyUsage], key: Callable[[DailyUsage], str]
) -> dict[tuple[str, str], DailyUsage]:
    """Ledger rows of the window summed per (day, key)."""
    first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0])
    for row in usage:
        if first <= row.day <= last:
            cell = out[(row.day, key(row))]
            for i, value in enumerate((row.model_calls, row.input_tokens, row.output_tokens, row.cache_read_tokens,
                                       row.cache_write_tokens, row.cost_nanos, row.unpriced_calls)):
                cell[i] += value
    return {
        (day, k): DailyUsage(day, "", k, c[0], c[1], c[2], c[3], c[4], c[5], c[6]) for (day, k), c in out.items()
    }


def build_models(
    window: Window,
    usage: Sequence[DailyUsage],
    metrics: MetricTotals,
    normalise: Callable[[str], str] | None = None,
    billed: Billed | None = None,
) -> pd.DataFrame:
    """One row per (day, base model): what Bedrock counted, what costguard metered, what AWS billed.

    ``billed`` is :func:`~.billing.billed_by_model` (keys are catalog model ids, or
    ``billing:<name>`` for a billing name the catalog does not know). ``billed_cost_usd`` is the
    model's on-demand token spend; ``drift`` compares it with the metered cost of every workflow
    on that model. Unmetered tokens are what CloudWatch counted beyond what the meter saw, kind by
    kind (cache reads and writes included).
    """
    norm = normalise or (lambda m: m)
    billed = billed or Billed()
    metered = _metered_by(window, usage, lambda r: norm(r.base_model_id))
    keys = set(metered) | metrics.keys("bedrock") | {(d, k) for k, d in billed.keys() if billed.cells[(k, d)].tokens
                                                     or billed.cells[(k, d)].token_usd}
    rows: list[dict[str, Any]] = []
    for day, model in sorted(keys):
        values = {col: metrics.get("bedrock", day, model, col) for col in _BEDROCK_METRICS.values()}
        m = metered.get((day, model))
        counted = {
            kind: getattr(m, field_name) if m else 0 for kind, field_name in _METERED_KIND_FIELDS.items()
        }
        metered_usd = nanos_to_usd(m.cost_nanos if m else 0)
        spend = billed.cells.get((model, day))
        billed_usd = (spend.token_total if spend else Decimal(0)) if day in billed.days else None
        drift, drift_pct = _drift(billed_usd, metered_usd)
        rows.append(
            {
                "day": day,
                "model_id": model,
                **values,
                **{f"metered_{kind}_tokens": counted[kind] for kind in COMPARED_KINDS},
                **{f"unmetered_{kind}_tokens": max(0, values[f"bedrock_{kind}_tokens"] - counted[kind])
                   for kind in COMPARED_KINDS},
                **{f"billed_{kind}_tokens": spend.tokens.get(kind, 0) if spend else 0 for kind in COMPARED_KINDS},
                "metered_cost_usd": metered_usd,
                "billed_cost_usd": billed_usd,
                "estimated": day in billed.estimated or day not in billed.days,
                "drift_usd": drift,
                "drift_pct": drift_pct,
            }
        )
    return _frame(rows, MODEL_COLUMNS)


def _dimensions_of(price_key: str | None) -> tuple[str, str, str, bool]:
    """(scope, context band, tier, latency-optimized) of a price key label."""
    from costguard.pricing.key import PriceKey

    try:
        key = PriceKey.parse(price_key or "")
    except ValueError:
        return UNRECORDED, UNRECORDED, UNRECORDED, False
    return key.scope, key.context, key.tier, key.latency_optimized


def build_dimensions(
    window: Window, usage: Sequence[DailyUsage], billed: Billed, normalise: Callable[[str], str] | None = None
) -> pd.DataFrame:
    """Like against like: per (day, model, scope, context band, tier, latency-optimized), the
    metered cost (``usage`` from ``Ledger.daily_usage_by_price_key``) beside what Cost Explorer
    billed for usage types with the same qualifiers. Days Cost Explorer has no figure for carry
    no billed figure and no drift."""
    norm = normalise or (lambda m: m)
    first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
    metered: dict[tuple[str, str, str, str, str, bool], int] = defaultdict(int)
    for row in usage:
        if first <= row.day <= last:
            metered[(row.day, norm(row.base_model_id), *_dimensions_of(row.price_key))] += row.cost_nanos
    billed_usd: dict[tuple[str, str, str, str, str, bool], Decimal] = defaultdict(Decimal)
    for (model, day), cell in billed.cells.items():
        if first <= day <= last:
            for dims, cost in cell.dimension_usd.items():
                billed_usd[(day, model, *dims)] += cost
    rows: list[dict[str, Any]] = []
    for key in sorted(set(metered) | set(billed_usd)):
        day = key[0]
        metered_usd = nanos_to_usd(metered.get(key, 0))
        billed_value = billed_usd.get(key, Decimal(0)) if day in billed.days else None
        rows.append(dict(zip(DIMENSION_COLUMNS[:6], key, strict=True)) | {
            "metered_cost_usd": metered_usd, "billed_cost_usd": billed_value, "drift_usd": _drift(billed_value, metered_usd)[0],
        })
    return pd.DataFrame(rows, columns=list(DIMENSION_COLUMNS))


def build_kinds(
    window: Window,
    usage: Sequence[DailyUsage],
    by_workflow: Billed,
    by_model: Billed,
    price_of: Callable[[str], ModelPrice],
    normalise: Callable[[str], str] | None = None,
) -> pd.DataFrame:
    """Token spend kind by kind, per (workflow, day) for tag-attributed workflows and per (model, day).

    The ledger keeps one cost per call, so a kind's metered spend is its metered tokens at the
    catalog's rate for that kind (cache tokens at the input rate when the catalog has no cache
    rate, as the meter does): exact for in-region standard-tier calls, an estimate of the split
    otherwise. Days Cost Explorer has no figure for are left out.
    """
    norm = normalise or (lambda m: m)
    first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
    metered: dict[tuple[str, str, str, str], list[Decimal | int]] = defaultdict(lambda: [Decimal(0), 0])
    for row in usage:
        if not first <= row.day <= last:
            continue
        model = norm(row.base_model_id)
        price = price_of(model)
        rates = {"input": price.input, "output": price.output,
                 "cache_read": price.input if price.cache_read is None else price.cache_read,
                 "cache_write": price.input if price.cache_write is None else price.cache_write}
        for kind, field_name in _METERED_KIND_FIELDS.items():
            tokens = int(getattr(row, field_name))
            for level, key in (("workflow", row.workflow), ("model", model)):
                cell = metered[(level, key, row.day, kind)]
                cell[0] = Decimal(cell[0]) + tokens * rates[kind] / _PER_TOKENS
                cell[1] = int(cell[1]) + tokens
    rows: list[dict[str, Any]] = []
    for level, billed in (("workflow", by_workflow), ("model", by_model)):
        keys = {(k, d) for k, d in billed.keys()} | {(k, d) for lv, k, d, _ in metered if lv == level}
        for key, day in sorted(keys):
            if day not in billed.days:
                continue
            if level == "workflow" and not billed.sources.get(key, "").startswith("tag:"):
                continue
            spend = billed.cells.get((key, day))
            for kind in COMPARED_KINDS:
                m_usd, m_tokens = metered.get((level, key, day, kind), (Decimal(0), 0))
                b_usd = spend.token_usd.get(kind, Decimal(0)) if spend else Decimal(0)
                b_tokens = spend.tokens.get(kind, 0) if spend else 0
                if not (m_usd or m_tokens or b_usd or b_tokens):
                    continue
                m_usd = Decimal(m_usd).quantize(_NANO, ROUND_HALF_EVEN)
                rows.append({"level": level, "key": key, "day": day, "kind": kind, "billed_usd": b_usd,
                             "metered_usd": m_usd, "drift_usd": b_usd - m_usd, "billed_tokens": b_tokens,
                             "metered_tokens": int(m_tokens)})
    return _frame(rows, KIND_COLUMNS)


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
    price catalog, loaded when first needed) maps model ids to the base ids the ledger uses and
    billing names to model ids. ``tag_key`` is one cost allocation tag key or several, in order.
    """

    def __init__(
        self,
        ledger: Ledger,
        policies: PolicySet,
        *,
        session: Any = None,
        ce_client: Any = None,
        cloudwatch_client: Any = None,
        tag_key: str | Sequence[str] = DEFAULT_TAG_KEY,
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
        tag_keys = tag_keys_of(tag_key)
        if max_attempts < 1:
            raise ReconcileError("max_attempts must be at least 1")
        self.ledger = ledger
        self.policies = policies
        #: Tried in order: spend carrying an earlier key is attributed by it (application
        #: inference profile tags, then IAM principal tags such as ``iamPrincipal/team``...).
        self.tag_keys = tag_keys
        self.tag_key = tag_keys[0]
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

    def _catalog_loaded(self) -> PriceCatalog:
        if self._catalog is None:
            from costguard.pricing.catalog import PriceCatalog

            self._catalog = PriceCatalog.load()
        return self._catalog

    def _normalise(self) -> Callable[[str], str]:
        catalog, resolver = self._catalog_loaded(), self._resolver
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
        catalog = self._catalog_loaded()

        month_start = window.start.replace(day=1)
        usage = self.ledger.daily_usage(month_start.isoformat(), window.end.isoformat())
        counters = self.ledger.budget_counters()
        first, last = window.start.isoformat(), (window.end - timedelta(days=1)).isoformat()
        in_window = [u for u in usage if first <= u.day <= last]

        services, discovered = self._bedrock_services(window, warnings)
        by_service = parse_cost_pages(self._cost_pages(window, services, None), None, window)
        tagged = [
            (key, parse_cost_pages(self._cost_pages(window, services, key), key, window)) for key in self.tag_keys
        ]
        by_model = billed_by_model(by_service, ModelNames(catalog))
        by_workflow = billed_by_workflow(tagged)
        suppressed = [] if discovered else window.days()
        if suppressed:
            warnings.append(
                f"drift alerts suppressed for {suppressed[0]}..{suppressed[-1]}: without service discovery "
                "the billed side misses every Marketplace edition"
            )
        if by_model.unclassified:
            names = ", ".join(sorted(by_model.unclassified))
            warnings.append(f"unclassified Bedrock usage types (reported, not compared): {names}")

        specs = self._metric_series(in_window, normalise)
        metrics = self._metric_data(window, specs, normalise)

        frame = build_frame(window, usage, by_workflow, metrics, self.policies, counters, now)
        models = build_models(window, in_window, metrics, normalise, by_model)
        kinds = build_kinds(window, in_window, by_workflow, by_model, lambda m: catalog.quote(m).price, normalise)
        dimensions = build_dimensions(
            window, self.ledger.daily_usage_by_price_key(first, window.end.isoformat()), by_model, normalise
        )
        unpriced = sorted({normalise(u.base_model_id) for u in in_window if u.unpriced_calls > 0})
        lambda_spend = self._lambda_spend(window) if self.include_lambda else None
        return ReconcileResult(
            window=window,
            frame=frame,
            models=models,
            unpriced_models=unpriced,
            api_calls=dict(sorted(self._calls.items())),
            estimated_days=sorted(by_service.estimated | by_workflow.estimated),
            billed_usage=billed_usage_frame(tagged),
            agents=build_agents(metrics),
            services=services,
            warnings=warnings,
            kinds=kinds,
            billed_summary=billed_summary_frame(window, by_model),
            tag_keys=list(self.tag_keys),
            drift_suppressed_days=suppressed,
            unclassified_usage=dict(sorted(by_model.unclassified.items())),
            lambda_spend=lambda_spend,
            dimensions=dimensions,
        )

    def _lambda_spend(self, window: Window) -> pd.DataFrame:
        from costguard.reconcile_lambda import LAMBDA_SERVICE, build_lambda_spend

        billed = parse_cost_pages(self._cost_pages(window, [LAMBDA_SERVICE], self.tag_key), self.tag_key, window)
        since_ms = int(datetime.combine(window.start, datetime.min.time(), UTC).timestamp() * 1000)
        return build_lambda_spend(window.days(), billed, self.ledger.actions(since_ms=since_ms))

    # -- Cost Explorer ------------------------------------------------------------------------------

    def _bedrock_services(self, window: Window, warnings: list[str]) -> tuple[list[str], bool]:
        """``Amazon Bedrock`` plus every service name with "Bedrock" CE knows in the window, and
        whether discovery worked."""
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
            return sorted(found), False
        return sorted(found), True

    def _cost_filter(self, services: Sequence[str], tag_key: str | None) -> dict[str, Any]:
        """The services, and for a tag query none of the tag keys before ``tag_key``."""
        service_filter: dict[str, Any] = {"Dimensions": {"Key": "SERVICE", "Values": list(services)}}
        earlier = [] if tag_key is None else self.tag_keys[: self.tag_keys.index(tag_key)]
        if not earlier:
            return service_filter
        # TagValues: "If Key is provided and Values isn't specified, the ABSENT MatchOption is
        # applied to the tag Key only" (botocore ce/2017-10-25 service-2.json).
        absent = [{"Tags": {"Key": key, "MatchOptions": ["ABSENT"]}} for key in earlier]
        return {"And": [service_filter, *absent]}

    def _cost_pages(self, window: Window, services: Sequence[str], tag_key: str | None) -> list[dict[str, Any]]:
        """Every page of one query: by SERVICE (``tag_key`` None) or by the TAG ``tag_key``."""
        group = {"Type": "DIMENSION", "Key": "SERVICE"} if tag_key is None else {"Type": "TAG", "Key": tag_key}
        params: dict[str, Any] = {
            "TimePeriod": window.time_period(),
            "Granularity": "DAILY",
            "Metrics": ["UnblendedCost", "UsageQuantity"],
            "Filter": self._cost_filter(services, tag_key),
            "GroupBy": [group, {"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        }
        pages: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            page = self._call(self.ce, "get_cost_and_usage", **params)
            if not isinstance(page, Mapping):
                raise page_error(len(pages) + 1, "response", "not an object")
            pages.append(page)
            token = page.get("NextPageToken")
            if not token:
                return pages
            if not isinstance(token, str):
                raise page_error(len(pages), "NextPageToken", f"expected a string, got {type(token).__name__}")
            if token in seen_tokens:
                raise page_error(len(pages), "NextPageToken", f"token {token!r} repeated: pagination loops")
            seen_tokens.add(token)
            params["NextPageToken"] = token

    # -- CloudWatch ---------------------------------------------------------------------------------

    def _list_metrics(self, namespace: str, dimension: str) -> list[dict[str, Any]]:
        """Every series of ``namespace`` that has ``dimension``: one listing per namespace, the
        metric names filtered here, rather than one listing per metric name."""
        params: dict[str, Any] = {"Namespace": namespace, "Dimensions": [{"Name": dimension}]}
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        while True:
            page = self._call(self.cloudwatch, "list_metrics", **params)
            found.extend(dict(m) for m in page.get("Metrics") or [] if isinstance(m, Mapping))
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

        def listed(namespace: str, dimension: str, names: Mapping[str, str]) -> Iterable[tuple[str, str, dict[str, str]]]:
            for m in self._list_metrics(namespace, dimension):
                name = m.get("MetricName")
                if name in names:
                    dims = {
                        str(d.get("Name")): str(d.get("Value"))
                        for d in m.get("Dimensions") or []
                        if isinstance(d, Mapping)
                    }
                    yield str(name), names[str(name)], dims

        for name, column, dims in listed("AWS/Bedrock", "ModelId", _BEDROCK_METRICS):
            if set(dims) == {"ModelId"}:
                add("AWS/Bedrock", name, (("ModelId", dims["ModelId"]),), "bedrock", dims["ModelId"], column)
        for model in sorted({u.base_model_id for u in usage}):
            for name, column in _BEDROCK_METRICS.items():
                add("AWS/Bedrock", name, (("ModelId", model),), "bedrock", model, column)
        if self.include_agents:
            for name, column, dims in listed("AWS/Bedrock/Agents", "AgentAliasArn", _AGENT_METRICS):
                if set(dims) == _AGENT_DIMENSIONS:
                    add("AWS/Bedrock/Agents", name, tuple(dims.items()), "agents", dims["AgentAliasArn"], column)
        for name, column, dims in listed(self.metrics_namespace, "Workflow", _COSTGUARD_METRICS):
            if set(dims) <= {"Workflow", "ModelId"}:
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
