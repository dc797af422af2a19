"""Reconciliation reports in S3: CSV, Parquet, HTML and a FOCUS 1.0 cost export.

Layout: ``s3://BUCKET/PREFIX/date=YYYY-MM-DD/{reconcile.csv, report.html, focus.csv}`` and
``s3://BUCKET/PREFIX/parquet/date=YYYY-MM-DD/reconcile.parquet`` (alone in its folder, so the Glue
table over ``PREFIX/parquet/`` reads nothing else), where the date is the **last day of the
reconciled window** (``window.end - 1 day``),
not the date of the run. The same window therefore always lands in the same folder, and a
re-run replaces its objects instead of adding new ones; an hourly run over
"yesterday..today" keeps refreshing today's folder until the day is over. ``date=`` is a Hive
partition: the template's Glue table projects it, so Athena needs no crawler. Every file has the
same Parquet schema (:data:`PARQUET_TYPES`).

Determinism: the content depends only on the reconciliation result, the policies and (for the
HTML of a SQLite ledger) the ledger rows of the window. No wall-clock time is written (the HTML
"generated" stamp is the window end), rows are sorted, Parquet is written without pandas
metadata. Re-running the same window with the same data writes byte-identical objects; an
object whose bytes are unchanged is not written again at all (its SHA-256 is kept in the
object's metadata), so a versioned bucket does not pile up identical versions.

Money: Decimal columns are written as exact decimal *strings* in CSV and Parquet. A Parquet
``decimal128`` needs one fixed scale for every value, and Cost Explorer amounts, nano-dollar
metered costs and percentages have different ones; rounding any of them would make the export
disagree with the ledger. In Athena: ``CAST(metered_cost_usd AS DECIMAL(38, 9))``.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from costguard._extras import require_reports
from costguard.ledger.base import Ledger
from costguard.policy import PolicySet

if TYPE_CHECKING:
    from costguard.reconcile import ReconcileResult

__all__ = [
    "FOCUS_COLUMNS",
    "FRAME_COLUMNS",
    "PARQUET_FOLDER",
    "PARQUET_TYPES",
    "ReportObject",
    "build_reports",
    "report_date",
    "write_reports",
]

logger = logging.getLogger("costguard.s3reports")

#: The reconciliation frame's columns, in the order the files carry them (extra columns follow).
FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "workflow", "day", "metered_cost_usd", "billed_cost_usd", "estimated", "drift_usd", "drift_pct",
    "metered_model_calls", "metered_input_tokens", "metered_output_tokens", "metered_cache_read_tokens",
    "metered_cache_write_tokens", "costguard_model_calls", "throttles", "budget_daily_usd",
    "budget_monthly_usd", "month_to_date_usd", "burn_rate_usd_per_day", "forecast_month_end_usd",
)

#: The Parquet type of each frame column, fixed rather than inferred from the day's values (an empty
#: day would otherwise write its counts as strings): the Glue table over ``PARQUET_FOLDER`` declares
#: exactly these, and Athena fails on a file whose column type differs from the table's.
PARQUET_TYPES: Final[dict[str, str]] = {
    **{column: "string" for column in FRAME_COLUMNS},
    "estimated": "bool",
    **{column: "int64" for column in (
        "metered_model_calls", "metered_input_tokens", "metered_output_tokens", "metered_cache_read_tokens",
        "metered_cache_write_tokens", "costguard_model_calls", "throttles")},
}

#: The Parquet file gets a folder of its own (``PREFIX/parquet/date=YYYY-MM-DD/``): Athena reads every
#: object under a partition's location, and the CSV and HTML files beside it are not Parquet.
PARQUET_FOLDER: Final = "parquet"

#: FOCUS 1.0 columns written to focus.csv; custom columns are prefixed ``x_`` as FOCUS requires.
FOCUS_COLUMNS: Final[tuple[str, ...]] = (
    "BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "BillingCurrency",
    "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency",
    "ConsumedQuantity", "ConsumedUnit", "ServiceName", "ServiceCategory", "ProviderName",
    "PublisherName", "InvoiceIssuerName", "RegionId", "ResourceId", "ResourceName", "Tags",
    "x_Workflow", "x_CostSource", "x_Estimated", "x_MeteredCost", "x_DriftUsd", "x_DriftPct",
    "x_MeteredModelCalls", "x_MeteredInputTokens", "x_MeteredOutputTokens",
    "x_MeteredCacheReadTokens", "x_MeteredCacheWriteTokens", "x_Throttles",
)

_CSV_TYPE: Final = "text/csv; charset=utf-8"
_PARQUET_TYPE: Final = "application/vnd.apache.parquet"
_HTML_TYPE: Final = "text/html; charset=utf-8"
_SHA_META: Final = "sha256"


@dataclass(frozen=True, slots=True)
class ReportObject:
    name: str
    body: bytes
    content_type: str
    #: Sub-folder of the prefix holding this file's ``date=`` folders ("" = the prefix itself).
    folder: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def report_date(result: ReconcileResult) -> date:
    """The folder date: the window's last day (``end`` is exclusive)."""
    start, end = result.window.start, result.window.end
    return end - timedelta(days=1) if end > start else start


# -- cell conversion -------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    pd = require_reports("pandas")
    return value is pd.NA or value is pd.NaT


def _text(value: Any) -> str | None:
    """A cell as exact text (None when missing): Decimal in plain notation, bools lower-case."""
    if _missing(value):
        return None
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _text(value.item())
    if isinstance(value, float):
        # Not expected (money is Decimal); repr is the shortest exact round-trip of the float.
        return repr(value)
    return str(value)


def _columns(frame: Any) -> list[str]:
    present = [str(c) for c in frame.columns]
    known = [c for c in FRAME_COLUMNS if c in present]
    return known + sorted(c for c in present if c not in FRAME_COLUMNS)


def _rows(frame: Any) -> list[dict[str, Any]]:
    if frame is None or len(frame) == 0:
        return []
    records = frame.to_dict("records")
    return sorted(records, key=lambda r: (str(r.get("workflow")), str(r.get("day"))))


def _csv(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if cell is None else cell for cell in row])
    return buffer.getvalue().encode("utf-8")


# -- the four files ----------------------------------------------------------------------------------


def reconcile_csv(result: ReconcileResult) -> bytes:
    columns = _columns(result.frame)
    return _csv(columns, [[_text(r.get(c)) for c in columns] for r in _rows(result.frame)])


def _arrow_type(values: list[Any]) -> str:
    present = [v.item() if hasattr(v, "item") and not isinstance(v, (str, Decimal)) else v
               for v in values if not _missing(v)]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    return "string"


def reconcile_parquet(result: ReconcileResult) -> bytes:
    """The frame as Parquet: ints as int64, flags as bool, money and the rest as exact strings."""
    pa = require_reports("pyarrow")
    pq = require_reports("pyarrow.parquet")

    columns = _columns(result.frame)
    rows = _rows(result.frame)
    arrays: list[Any] = []
    fields: list[Any] = []
    for column in columns:
        values = [r.get(column) for r in rows]
        kind = PARQUET_TYPES.get(column) or (_arrow_type(values) if rows else "string")
        if kind == "bool":
            arrays.append(pa.array([None if _missing(v) else bool(v) for v in values], pa.bool_()))
            fields.append(pa.field(column, pa.bool_()))
        elif kind == "int64":
            arrays.append(pa.array([None if _missing(v) else int(v) for v in values], pa.int64()))
            fields.append(pa.field(column, pa.int64()))
        else:
            arrays.append(pa.array([_text(v) for v in values], pa.string()))
            fields.append(pa.field(column, pa.string()))
    schema = pa.schema(fields, metadata={b"costguard.money": b"exact decimal strings, USD"})
    table = pa.Table.from_arrays(arrays, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue()


def _iso(moment: date) -> str:
    return datetime.combine(moment, time(0), tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_bounds(day: date) -> tuple[date, date]:
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def focus_csv(result: ReconcileResult, *, tag_key: str = "costguard:workflow", region: str | None = None) -> bytes:
    """One FOCUS 1.0 row per (workflow, day) of Bedrock spend.

    ``BilledCost`` is what Cost Explorer billed when it has a figure, else the metered cost
    (``x_CostSource`` says which, ``x_Estimated`` whether CE still calls it an estimate).
    ``ListCost`` is the metered cost: costguard prices calls at on-demand list prices.
    ``EffectiveCost``/``ContractedCost`` equal ``BilledCost``: on-demand Bedrock tokens carry no
    commitment discount that costguard could know about. ``ResourceId`` is empty: spend is
    attributed to a workflow through the cost allocation tag, not to a single resource.
    """
    rows_out: list[list[str | None]] = []
    for r in _rows(result.frame):
        day = date.fromisoformat(str(r["day"]))
        metered = r.get("metered_cost_usd")
        billed = r.get("billed_cost_usd")
        billed_known = not _missing(billed)
        cost = billed if billed_known else metered
        period_start, period_end = _month_bounds(day)
        workflow = str(r["workflow"])
        tokens = sum(
            int(r.get(c) or 0) for c in ("metered_input_tokens", "metered_output_tokens",
                                         "metered_cache_read_tokens", "metered_cache_write_tokens")
            if not _missing(r.get(c))
        )
        values: dict[str, str | None] = {
            "BilledCost": _text(cost) or "0",
            "EffectiveCost": _text(cost) or "0",
            "ListCost": _text(metered) or "0",
            "ContractedCost": _text(cost) or "0",
            "BillingCurrency": "USD",
            "BillingPeriodStart": _iso(period_start),
            "BillingPeriodEnd": _iso(period_end),
            "ChargePeriodStart": _iso(day),
            "ChargePeriodEnd": _iso(day + timedelta(days=1)),
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": f"Amazon Bedrock model usage of workflow {workflow}",
            "ChargeFrequency": "Usage-Based",
            "ConsumedQuantity": str(tokens),
            "ConsumedUnit": "Tokens",
            "ServiceName": "Amazon Bedrock",
            "ServiceCategory": "AI and Machine Learning",
            "ProviderName": "AWS",
            "PublisherName": "AWS",
            "InvoiceIssuerName": "AWS",
            "RegionId": region,
            "ResourceId": None,
            "ResourceName": None,
            "Tags": json.dumps({tag_key: workflow}, sort_keys=True, separators=(",", ":")),
            "x_Workflow": workflow,
            "x_CostSource": "billed" if billed_known else "metered",
            "x_Estimated": _text(bool(r.get("estimated")) if not _missing(r.get("estimated")) else None),
            "x_MeteredCost": _text(metered),
            "x_DriftUsd": _text(r.get("drift_usd")),
            "x_DriftPct": _text(r.get("drift_pct")),
            "x_MeteredModelCalls": _text(r.get("metered_model_calls")),
            "x_MeteredInputTokens": _text(r.get("metered_input_tokens")),
            "x_MeteredOutputTokens": _text(r.get("metered_output_tokens")),
            "x_MeteredCacheReadTokens": _text(r.get("metered_cache_read_tokens")),
            "x_MeteredCacheWriteTokens": _text(r.get("metered_cache_write_tokens")),
            "x_Throttles": _text(r.get("throttles")),
        }
        rows_out.append([values[c] for c in FOCUS_COLUMNS])
    return _csv(FOCUS_COLUMNS, rows_out)


def _window_ms(result: ReconcileResult) -> tuple[int, int]:
    start = datetime.combine(result.window.start, time(0), tzinfo=UTC)
    end = datetime.combine(result.window.end, time(0), tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _monthly_budgets(policies: PolicySet) -> dict[str, Decimal]:
    return {
        name: policy.budget.monthly_usd
        for name, policy in policies.workflows.items()
        if policy.budget is not None and policy.budget.monthly_usd is not None
    }


def report_html(result: ReconcileResult, ledger: Ledger, policies: PolicySet) -> bytes:
    """The usage report page for the window.

    With a ledger that has SQL behind it (``connection()``: SQLite) this is
    :func:`costguard.reports.render` of :func:`~costguard.reports.usage_report`, the same page
    ``costguard report --format html`` prints. A ledger without one (DynamoDB) cannot run that
    query, so the page is built from the reconciliation frame instead: metered vs billed per
    workflow and day. Either way the "generated" stamp is the window end, not the wall clock.
    """
    since_ms, until_ms = _window_ms(result)
    connection: Callable[[], Any] | None = getattr(ledger, "connection", None)
    if callable(connection):
        from costguard.reports import render, usage_report

        report = usage_report(connection(), since_ms=since_ms, until_ms=until_ms, group_by="workflow")
        report.generated_ms = until_ms
        return render(report, "html", budgets=_monthly_budgets(policies) or None).encode("utf-8")
    logger.info("ledger %s has no SQL connection: report.html is built from the reconciliation frame",
                getattr(ledger, "url", type(ledger).__name__))
    return _frame_html(result).encode("utf-8")


def _frame_html(result: ReconcileResult) -> str:
    columns = ["workflow", "day", "metered_cost_usd", "billed_cost_usd", "estimated", "drift_usd",
               "drift_pct", "metered_model_calls", "throttles", "budget_monthly_usd",
               "month_to_date_usd", "forecast_month_end_usd"]
    esc = html.escape
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(_text(r.get(c)) or '')}</td>" for c in columns) + "</tr>"
        for r in _rows(result.frame)
    ) or f'<tr><td colspan="{len(columns)}">No usage in this window.</td></tr>'
    title = f"costguard reconciliation {result.window.start.isoformat()} to {report_date(result).isoformat()}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        f"</style></head><body><h1>{esc(title)}</h1><p>Money is exact (USD). Estimated days are "
        "Cost Explorer estimates and may still change.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def build_reports(
    result: ReconcileResult,
    ledger: Ledger,
    policies: PolicySet,
    *,
    tag_key: str = "costguard:workflow",
    region: str | None = None,
) -> list[ReportObject]:
    """The four report files of ``result``, in memory (what :func:`write_reports` uploads)."""
    return [
        ReportObject("reconcile.csv", reconcile_csv(result), _CSV_TYPE),
        ReportObject("reconcile.parquet", reconcile_parquet(result), _PARQUET_TYPE, PARQUET_FOLDER),
        ReportObject("report.html", report_html(result, ledger, policies), _HTML_TYPE),
        ReportObject("focus.csv", focus_csv(result, tag_key=tag_key, region=region), _CSV_TYPE),
    ]


def _folder(prefix: str, day: date, sub_folder: str = "") -> str:
    base = "/".join(part for part in (prefix.strip("/"), sub_folder) if part)
    return f"{base}/date={day.isoformat()}/" if base else f"date={day.isoformat()}/"


def _unchanged(client: Any, bucket: str, key: str, sha: str) -> bool:
    """True when the object already holds these bytes (so writing it again is pointless)."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError):  # missing object, or no s3:GetObject permission: just write it
        return False
    return head.get("Metadata", {}).get(_SHA_META) == sha


def write_reports(
    result: ReconcileResult,
    ledger: Ledger,
    policies: PolicySet,
    bucket: str,
    prefix: str,
    *,
    s3_client: Any | None = None,
    session: Any | None = None,
    tag_key: str = "costguard:workflow",
    dry_run: bool = False,
) -> list[str]:
    """Write the reports under ``s3://bucket/prefix/[parquet/]date=YYYY-MM-DD/``; returns the object keys.

    ``dry_run`` builds everything and returns the keys it would write, writing nothing.
    """
    objects = build_reports(result, ledger, policies, tag_key=tag_key,
                            region=getattr(session, "region_name", None))
    day = report_date(result)
    keys = [_folder(prefix, day, obj.folder) + obj.name for obj in objects]
    if dry_run:
        return keys
    if s3_client is None:
        if session is None:
            import boto3

            session = boto3.session.Session()
        s3_client = session.client("s3")
    for key, obj in zip(keys, objects, strict=True):
        sha = obj.sha256
        if _unchanged(s3_client, bucket, key, sha):
            logger.info("s3://%s/%s unchanged", bucket, key)
            continue
        s3_client.put_object(
            Bucket=bucket,
            Key=key,
            Body=obj.body,
            ContentType=obj.content_type,
            Metadata={_SHA_META: sha},
        )
    return keys
