"""Reconcile compares like with like: metered spend by price key against the usage types Cost
Explorer bills with the same scope, context band, tier and latency mode."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from costguard.reconcile.base import Window
from costguard.reconcile.billing import Billed
from costguard.reconcile.reconciler import build_dimensions
from costguard.reconcile.usage_types import classify
from costguard.usage import DailyUsage

MODEL = "anthropic.claude-sonnet-4-20250514-v1:0"
DAY = "2026-11-22"


def usage(price_key: str, cost_nanos: int) -> DailyUsage:
    return DailyUsage(DAY, "wf", MODEL, 1, 0, 0, 0, 0, cost_nanos, 0, price_key=price_key)


def test_long_context_global_and_geo_spend_are_compared_apart() -> None:
    billed = Billed(days={DAY})
    for usage_type, cost in (
        ("USE1-Claude4Sonnet-input-tokens-long-context-cross-region-global", Decimal("1.20")),
        ("USE1-Claude4Sonnet-output-tokens-long-context-cross-region-global", Decimal("0.30")),
        ("USE1-Claude4Sonnet-input-tokens-cross-region-geo", Decimal("0.50")),
    ):
        billed._add(MODEL, DAY, classify(usage_type), cost, Decimal(1))
    metered = [
        usage(f"{MODEL}|us-east-1|global|long|none|standard|-", 1_400_000_000),
        usage(f"{MODEL}|us-east-1|geo|standard|none|standard|-", 500_000_000),
        usage("", 7),  # a call written before price keys were kept
    ]
    window = Window(date(2026, 11, 22), date(2026, 11, 23))
    rows = build_dimensions(window, metered, billed).to_dict("records")
    assert rows == [
        {"day": DAY, "model_id": MODEL, "scope": "geo", "context": "standard", "tier": "standard",
         "latency_optimized": False, "metered_cost_usd": Decimal("0.5"), "billed_cost_usd": Decimal("0.50"),
         "drift_usd": Decimal("0.00")},
        {"day": DAY, "model_id": MODEL, "scope": "global", "context": "long", "tier": "standard",
         "latency_optimized": False, "metered_cost_usd": Decimal("1.4"), "billed_cost_usd": Decimal("1.50"),
         "drift_usd": Decimal("0.10")},
        {"day": DAY, "model_id": MODEL, "scope": "unrecorded", "context": "unrecorded", "tier": "unrecorded",
         "latency_optimized": False, "metered_cost_usd": Decimal("7E-9"), "billed_cost_usd": Decimal("0"),
         "drift_usd": Decimal("-7E-9")},
    ]


def test_a_day_cost_explorer_has_no_figure_for_has_no_drift() -> None:
    window = Window(date(2026, 11, 22), date(2026, 11, 23))
    (row,) = build_dimensions(window, [usage(f"{MODEL}|us-east-1|global|standard|none|standard|-", 9)], Billed()).to_dict("records")
    assert (row["billed_cost_usd"], row["drift_usd"]) == (None, None)
