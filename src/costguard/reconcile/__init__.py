"""Reconciliation against real billing data: Cost Explorer, CloudWatch and the ledger.

:mod:`.usage_types` classifies Cost Explorer usage types, :mod:`.model_names` maps billing names
to model ids, :mod:`.billing` parses and attributes what Cost Explorer billed, and
:mod:`.reconciler` joins it with CloudWatch and the ledger.
"""

from costguard.reconcile.base import UNTAGGED, ReconcileError, Window, parse_day
from costguard.reconcile.billing import (
    BILLED_SUMMARY_COLUMNS,
    BILLED_USAGE_COLUMNS,
    COMPARED_KINDS,
    Billed,
    BilledCell,
    BilledCosts,
    billed_by_model,
    billed_by_workflow,
    billed_summary_frame,
    billed_usage_frame,
    parse_cost_pages,
)
from costguard.reconcile.reconciler import (
    AGENT_COLUMNS,
    BEDROCK_SERVICE,
    DEFAULT_TAG_KEY,
    FRAME_COLUMNS,
    KIND_COLUMNS,
    MAX_QUERIES_PER_REQUEST,
    METER_ATTRIBUTION,
    MODEL_COLUMNS,
    MetricSeries,
    MetricTotals,
    ReconcileResult,
    Reconciler,
    build_agents,
    build_frame,
    build_kinds,
    build_models,
    collect_metric_results,
    tag_keys_of,
)
from costguard.reconcile.usage_types import UsageClass, classify

__all__ = [
    "AGENT_COLUMNS",
    "BEDROCK_SERVICE",
    "BILLED_SUMMARY_COLUMNS",
    "BILLED_USAGE_COLUMNS",
    "COMPARED_KINDS",
    "DEFAULT_TAG_KEY",
    "FRAME_COLUMNS",
    "KIND_COLUMNS",
    "MAX_QUERIES_PER_REQUEST",
    "METER_ATTRIBUTION",
    "MODEL_COLUMNS",
    "UNTAGGED",
    "Billed",
    "BilledCell",
    "BilledCosts",
    "MetricSeries",
    "MetricTotals",
    "ReconcileError",
    "ReconcileResult",
    "Reconciler",
    "UsageClass",
    "Window",
    "billed_by_model",
    "billed_by_workflow",
    "billed_summary_frame",
    "billed_usage_frame",
    "build_agents",
    "build_frame",
    "build_kinds",
    "build_models",
    "classify",
    "collect_metric_results",
    "parse_cost_pages",
    "parse_day",
    "tag_keys_of",
]
