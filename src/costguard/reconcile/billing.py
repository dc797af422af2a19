"""What Cost Explorer billed: its pages parsed, every usage type classified, spend attributed.

Two views of the same bill come out of one run:

* **per model and day** (:func:`billed_by_model`), from the query grouped by SERVICE and
  USAGE_TYPE: first-party usage types name the model, Marketplace editions are named by their
  service. Always available: no tag is needed.
* **per workflow and day** (:func:`billed_by_workflow`), from one query per cost allocation tag
  key grouped by that TAG and USAGE_TYPE. Keys are tried in order and each later query excludes
  spend carrying an earlier key (``MatchOptions: ABSENT``), so no dollar is counted twice; what
  carries none of the keys is :data:`~costguard.reconcile.base.UNTAGGED`.

Only on-demand token spend (:data:`~costguard.reconcile.usage_types.TOKEN`) is compared with
what the meter priced. Batch, provisioned throughput, knowledge bases, guardrails, flows,
customization, embeddings, AgentCore and unclassified usage types are kept in their own
columns: reported beside the drift, never inside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

from costguard._extras import require_reports
from costguard.reconcile.base import UNTAGGED, ReconcileError, Window
from costguard.reconcile.model_names import ModelNames
from costguard.reconcile.usage_types import (
    AGENTCORE,
    NON_TOKEN_CATEGORIES,
    TOKEN,
    UNCLASSIFIED,
    UsageClass,
    classify,
)

if TYPE_CHECKING:
    import pandas as pd
else:  # the report and reconcile paths need the reports extra
    pd = require_reports("pandas")

__all__ = [
    "BILLED_SUMMARY_COLUMNS",
    "BILLED_USAGE_COLUMNS",
    "COMPARED_KINDS",
    "OTHER_CATEGORIES",
    "Billed",
    "BilledCell",
    "BilledCosts",
    "billed_by_model",
    "billed_by_workflow",
    "billed_summary_frame",
    "billed_usage_frame",
    "compared_kind",
    "parse_cost_pages",
    "page_error",
    "parse_tag_key",
    "price_dimensions",
]

#: Token kinds as the meter can compare them: the ledger does not split cache writes by TTL, so
#: the 5-minute and 1-hour writes are compared as one (the split stays in ``billed_usage``).
COMPARED_KINDS: Final[tuple[str, ...]] = ("input", "output", "cache_read", "cache_write")
#: Spend reported beside the drift, one column each.
OTHER_CATEGORIES: Final[tuple[str, ...]] = (*NON_TOKEN_CATEGORIES, AGENTCORE, UNCLASSIFIED)
BILLED_USAGE_COLUMNS: Final[tuple[str, ...]] = (
    "workflow", "tag_key", "day", "usage_type", "cost_usd", "usage_quantity", "category", "kind", "model",
    "marketplace", "scope", "tier", "long_context", "latency_optimized", "tokens",
)
BILLED_SUMMARY_COLUMNS: Final[tuple[str, ...]] = (
    "day", "estimated", "token_usd", *(f"{c}_usd" for c in OTHER_CATEGORIES), "total_usd",
)


# Categories whose lines belong to a model (the rest belong to their service).
_MODEL_CATEGORIES: Final = frozenset({TOKEN, "batch", "embeddings"})


def compared_kind(kind: str) -> str:
    return "cache_write" if kind.startswith("cache_write") else kind


# -- Cost Explorer pages ------------------------------------------------------------------------------


@dataclass
class BilledCosts:
    """What Cost Explorer billed, parsed from every page of one ``GetCostAndUsage`` query."""

    costs: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (group, day)
    usage: dict[tuple[str, str, str], tuple[Decimal, Decimal]] = field(default_factory=dict)
    days: set[str] = field(default_factory=set)  # days CE returned (billed is known, maybe 0)
    estimated: set[str] = field(default_factory=set)
    pages: int = 0



def page_error(page_no: int, where: str, message: str) -> ReconcileError:
    return ReconcileError(f"malformed Cost Explorer page {page_no}: {where}: {message}")


def _amount(value: Any, page_no: int, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise page_error(page_no, where, f"not a number: {value!r}")
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
        raise page_error(page_no, where, f"not a number: {value!r}") from None
    if not number.is_finite():
        raise page_error(page_no, where, f"not a finite number: {value!r}")
    return number


def _get(mapping: Any, key: str, page_no: int, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(mapping, Mapping):
        raise page_error(page_no, where, f"expected an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise page_error(page_no, f"{where}.{key}" if where else key, "missing")
    value = mapping[key]
    if not isinstance(value, kind):
        raise page_error(page_no, f"{where}.{key}" if where else key, f"unexpected {type(value).__name__}")
    return value


def parse_tag_key(key: str, tag_key: str) -> str | None:
    """``tag_key$value`` -> ``value``; ``tag_key$`` (untagged) -> :data:`UNTAGGED`; else None."""
    prefix = f"{tag_key}$"
    if not key.startswith(prefix):
        return None
    value = key[len(prefix):]
    return value if value else UNTAGGED


def parse_cost_pages(
    pages: Iterable[Mapping[str, Any]], tag_key: str | None, window: Window | None = None
) -> BilledCosts:
    """Fold ``GetCostAndUsage`` pages (grouped by TAG ``tag_key`` and USAGE_TYPE) into costs.

    With ``tag_key`` None the pages are grouped by SERVICE and USAGE_TYPE: the group is the
    service name as Cost Explorer spells it.

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
                raise page_error(page_no, f"{where}.TimePeriod.Start", f"not a date: {start!r}") from None
            if window is not None and not window.start <= day < window.end:
                continue
            day_key = day.isoformat()
            estimated = entry.get("Estimated", False)
            if not isinstance(estimated, bool):
                raise page_error(page_no, f"{where}.Estimated", f"not a boolean: {estimated!r}")
            billed.days.add(day_key)
            if estimated:
                billed.estimated.add(day_key)
            groups = entry.get("Groups", [])
            if not isinstance(groups, list):
                raise page_error(page_no, f"{where}.Groups", f"expected a list, got {type(groups).__name__}")
            for j, group in enumerate(groups):
                gwhere = f"{where}.Groups[{j}]"
                keys = _get(group, "Keys", page_no, gwhere, list)
                if not keys or not all(isinstance(k, str) for k in keys):
                    raise page_error(page_no, f"{gwhere}.Keys", f"expected a list of strings, got {keys!r}")
                workflow = keys[0] if tag_key is None else parse_tag_key(keys[0], tag_key)
                if workflow is None:
                    raise page_error(
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
                    raise page_error(page_no, f"{gwhere}.Metrics.UnblendedCost.Unit", f"expected USD, got {unit!r}")
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
            raise page_error(page_no, "NextPageToken", f"expected a string, got {type(token).__name__}")
    return billed


# -- classified spend ----------------------------------------------------------------------------


def price_dimensions(cls: UsageClass) -> tuple[str, str, str, bool]:
    """The price key dimensions a token usage type is billed under: (scope, context band, tier,
    latency-optimized). Region and cache-write TTL are left out (see docs/pricing.md)."""
    return cls.scope, "long" if cls.long_context else "standard", cls.tier, cls.latency_optimized


@dataclass
class BilledCell:
    """Classified spend of one (workflow or model, day)."""

    token_usd: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    other_usd: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    #: token spend by the price dimensions the usage type names: (scope, context band, tier,
    #: latency-optimized), as a price key spells them
    dimension_usd: dict[tuple[str, str, str, bool], Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def add(self, cls: UsageClass, cost: Decimal, quantity: Decimal) -> None:
        if cls.category == TOKEN and cls.kind is not None:
            kind = compared_kind(cls.kind)
            self.token_usd[kind] += cost
            self.tokens[kind] += usage_tokens(cls, quantity)
            self.dimension_usd[price_dimensions(cls)] += cost
        else:
            self.other_usd[cls.category] += cost

    @property
    def token_total(self) -> Decimal:
        return sum(self.token_usd.values(), Decimal(0))

    def other(self, category: str) -> Decimal:
        return self.other_usd.get(category, Decimal(0))

    @property
    def non_token_total(self) -> Decimal:
        return sum((self.other(c) for c in NON_TOKEN_CATEGORIES), Decimal(0))

    @property
    def total(self) -> Decimal:
        """Everything billed: token spend plus every other column."""
        return self.token_total + sum(self.other_usd.values(), Decimal(0))


def usage_tokens(cls: UsageClass, quantity: Decimal) -> int:
    """``UsageQuantity`` in tokens: it is counted in the usage type's pricing unit (1K or 1M)."""
    if not cls.tokens_per_unit:
        return 0
    return int((quantity * cls.tokens_per_unit).to_integral_value(ROUND_HALF_EVEN))


@dataclass
class Billed:
    """Classified spend per (key, day): the key is a workflow or a model id."""

    cells: dict[tuple[str, str], BilledCell] = field(default_factory=dict)
    days: set[str] = field(default_factory=set)
    estimated: set[str] = field(default_factory=set)
    #: how each key's spend was attributed: ``tag:<key>`` (workflows) or ``usage type`` (models)
    sources: dict[str, str] = field(default_factory=dict)
    #: usage types no pattern recognised, with their cost: reported, never dropped
    unclassified: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def cell(self, key: str, day: str) -> BilledCell:
        found = self.cells.get((key, day))
        if found is None:
            found = self.cells[(key, day)] = BilledCell()
        return found

    def keys(self) -> set[tuple[str, str]]:
        return set(self.cells)

    def _add(self, key: str, day: str, cls: UsageClass, cost: Decimal, quantity: Decimal) -> None:
        self.cell(key, day).add(cls, cost, quantity)
        if cls.category == UNCLASSIFIED:
            self.unclassified[cls.usage_type] += cost


def billed_by_workflow(results: Sequence[tuple[str, BilledCosts]]) -> Billed:
    """Spend per workflow from one query per tag key (in priority order, each excluding the
    keys before it). The untagged group of an earlier key is what the later keys break down, so
    only the last query's untagged group is :data:`UNTAGGED`."""
    billed = Billed()
    for i, (tag_key, costs) in enumerate(results):
        billed.days |= costs.days
        billed.estimated |= costs.estimated
        last = i == len(results) - 1
        for (workflow, day, usage_type), (cost, quantity) in sorted(costs.usage.items()):
            if workflow == UNTAGGED and not last:
                continue
            billed.sources.setdefault(workflow, "untagged" if workflow == UNTAGGED else f"tag:{tag_key}")
            billed._add(workflow, day, classify(usage_type), cost, quantity)
    return billed


def model_of(service: str, cls: UsageClass, names: ModelNames) -> str:
    """The model a service-grouped line belongs to; the service itself for non-model spend."""
    if cls.category not in _MODEL_CATEGORIES:
        return service
    if cls.marketplace:
        return names.resolve(service)
    return names.resolve(cls.model) if cls.model else service


def billed_by_model(costs: BilledCosts, names: ModelNames) -> Billed:
    """Spend per model from the query grouped by SERVICE and USAGE_TYPE."""
    billed = Billed(days=set(costs.days), estimated=set(costs.estimated))
    for (service, day, usage_type), (cost, quantity) in sorted(costs.usage.items()):
        cls = classify(usage_type)
        if AGENTCORE in service.lower().replace(" ", ""):
            # "Amazon Bedrock AgentCore" is its own service: its spend is AgentCore's, whatever
            # its usage types say (they name runtimes, gateways and memory, not models)
            cls = UsageClass(usage_type, AGENTCORE)
        key = model_of(service, cls, names)
        billed.sources.setdefault(key, "usage type")
        billed._add(key, day, cls, cost, quantity)
    return billed


def billed_summary_frame(window: Window, billed: Billed) -> pd.DataFrame:
    """Per day, the whole Bedrock bill split into token spend and every other column."""
    rows: list[dict[str, Any]] = []
    for day in window.days():
        if day not in billed.days:
            continue
        cells = [c for (_, d), c in billed.cells.items() if d == day]
        token = sum((c.token_total for c in cells), Decimal(0))
        others = {f"{cat}_usd": sum((c.other(cat) for c in cells), Decimal(0)) for cat in OTHER_CATEGORIES}
        rows.append({"day": day, "estimated": day in billed.estimated, "token_usd": token, **others,
                     "total_usd": token + sum(others.values(), Decimal(0))})
    return pd.DataFrame(rows, columns=list(BILLED_SUMMARY_COLUMNS))


def billed_usage_frame(results: Sequence[tuple[str, BilledCosts]]) -> pd.DataFrame:
    """Every (workflow, day, usage type) Cost Explorer billed, with its classification."""
    rows: list[dict[str, Any]] = []
    for i, (tag_key, costs) in enumerate(results):
        last = i == len(results) - 1
        for (workflow, day, usage_type), (cost, quantity) in sorted(costs.usage.items()):
            if workflow == UNTAGGED and not last:
                continue
            cls = classify(usage_type)
            rows.append({
                "workflow": workflow, "tag_key": tag_key, "day": day, "usage_type": usage_type,
                "cost_usd": cost, "usage_quantity": quantity, "category": cls.category, "kind": cls.kind,
                "model": cls.model, "marketplace": cls.marketplace, "scope": cls.scope, "tier": cls.tier,
                "long_context": cls.long_context, "latency_optimized": cls.latency_optimized,
                "tokens": usage_tokens(cls, quantity),
            })
    return pd.DataFrame(rows, columns=list(BILLED_USAGE_COLUMNS))
