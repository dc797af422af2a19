"""Every format of every command shows what its JSON says: same rows, same columns, same totals.

The JSON output is pinned once against the known figures of the four example recordings; every
other format (terminal table, CSV, Markdown, HTML) is parsed back (``tests.support.cli_output``)
and compared with the JSON row for row and cell for cell. Counts compare exactly. CSV keeps exact
money; the formats people read (table, Markdown, HTML) show money through
``costguard.display.usd``, so their money cells are compared with the JSON value rounded the same
way (``shown_usd``), and HTML's exact ``title`` on each money cell with the exact JSON value.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from costguard import budgets, cli
from costguard.cli import app
from costguard.ledger.sqlite import SQLiteLedger
from costguard.pricing.listing import describe_set
from costguard.usage import ActionRecord
from tests.functional.test_cli_reconcile import aws, yesterday_over_budget  # noqa: F401  (aws: the moto fixture)
from tests.functional.test_pricing_refresh import _StubSession, bedrock_client, pricing_client, stub_models, stub_pages
from tests.support.cli_output import (
    RichTable,
    column,
    html_tables,
    parse_csv,
    parse_markdown_tables,
    rich_tables,
    shown_usd,
    value,
)

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
# Wide enough that no table drops a column; narrow terminals are tested on their own below.
WIDE = {"COLUMNS": "400"}
runner = CliRunner()

# Published on-demand price of Claude 3.5 Sonnet, the one model the kept calls use, per 1M tokens
# (https://aws.amazon.com/bedrock/pricing/, us-east-1, retrieved 2026-11-01; test_cli.PRICES).
SONNET_IN, SONNET_OUT = Decimal("3.00"), Decimal("15.00")
# Tokens of the calls each session keeps (read from the replay; test_cli.py derives them per call
# from the recordings): session -> (workflow requests, model calls, input, output tokens).
KEPT = {
    "sess-converse": (40, 40, 396_450, 6_000),
    "sess-loop": (1, 12, 60_570, 2_040),
    "sess-normal": (1, 6, 17_720, 1_000),
    "sess-verbose": (1, 2, 3_700, 240),
}


def sonnet_usd(input_tokens: int, output_tokens: int) -> Decimal:
    return (input_tokens * SONNET_IN + output_tokens * SONNET_OUT) / 10**6


KEPT_USD = sum((sonnet_usd(i, o) for _, _, i, o in KEPT.values()), Decimal(0))
# The replay of all four files: 86 model calls recorded, 60 kept; what the 26 capped calls would
# have cost (test_cli.py::test_simulate_then_report_json works both out call by call).
RECORDED_CALLS, RECORDED_USD, AVOIDED_USD = 86, Decimal("3.283311"), Decimal("1.708791")
# The report over the filled ledger, by workflow.
TOTALS = {
    "requests": 43, "model_calls": 60, "tool_calls": 16, "input_tokens": 478_440, "output_tokens": 9_280,
    "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": "1.57452", "violations": 8,
    "shadow_violations": 0, "lambda_cost_usd": "0",
}
# Action group records added to the filled ledger: (action, bytes before, bytes after, outcome).
# The "|" checks that Markdown escapes a pipe inside a cell.
ACTIONS = (
    ("claims GET /claims/{id}/history", 36_571, 16_000, "trimmed"),
    ("claims GET /claims/{id}/history", 40_000, 300, "replaced"),
    ("claims lookup|v2", 800, 800, "passed"),
)
GROUP_BYS = ("workflow", "day", "model", "user", "agent", "action")
# Rich headers and HTML headers of the columns whose shown name is not the JSON key with spaces.
TABLE_NAMES = {"budget_used_pct": "budget_used"}
HTML_NAMES = {"cost_usd": "cost", "monthly_budget_usd": "monthly_budget", "budget_used_pct": "budget_used",
              "est_input_usd_saved": "est._input_saved", "est_tokens_saved": "est._tokens_saved"}


def run(*args: str, env: dict[str, str] = WIDE) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str, env: dict[str, str] = WIDE) -> str:
    code, out, err = run(*args, env=env)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """The four recordings replayed into one ledger at their recorded times, plus three action
    group records; and the replay's JSON."""
    path = tmp_path_factory.mktemp("formats") / "l.db"
    with pytest.MonkeyPatch.context() as env:
        # a module fixture runs before conftest's per-test isolation: no user price override here
        env.setenv("COSTGUARD_HOME", str(tmp_path_factory.mktemp("formats-home")))
        env.delenv("COSTGUARD_PRICING", raising=False)
        doc = json.loads(ok("simulate", *RECORDINGS, "--policies", POLICIES, "--into", f"sqlite:///{path}", "--format", "json"))
    ledger = SQLiteLedger(path)
    at = int(datetime(2026, 11, 20, 10, tzinfo=UTC).timestamp() * 1000)
    for n, (name, before, after, outcome) in enumerate(ACTIONS):
        ledger.record_action(ActionRecord(at + n, "claims-intake", name, "sess-verbose", None, before, after,
                                          3 if outcome == "trimmed" else 0, 0, 0, outcome))
    ledger.close()
    return f"sqlite:///{path}", doc


def test_the_json_carries_the_known_figures(filled: tuple[str, dict[str, Any]]) -> None:
    ledger, replay = filled
    # the replay: 86 calls recorded, 60 kept, and what was kept and avoided to the nano-dollar
    assert sum(f["model_calls_full"] for f in replay["files"]) == RECORDED_CALLS
    assert sum(f["model_calls_kept"] for f in replay["files"]) == sum(calls for _, calls, _, _ in KEPT.values()) == 60
    assert replay["total"] == {"cost_full_usd": "3.283311", "cost_avoided_usd": "1.708791"}
    assert Decimal(replay["total"]["cost_full_usd"]) - Decimal(replay["total"]["cost_avoided_usd"]) == KEPT_USD
    # the report: 3 agent requests and 40 Converse calls; 2 agent violations and 6 in the log
    doc = json.loads(ok("report", "--ledger", ledger, "--format", "json"))
    assert doc["totals"] == TOTALS and Decimal(TOTALS["cost_usd"]) == KEPT_USD
    # (the latency percentiles are the replay's own wall-clock time per request: not pinned)
    (row,) = doc["rows"]
    assert {k: v for k, v in row.items() if not k.endswith("_ms")} == {"workflow": "claims-intake", "sessions": 4, **TOTALS}
    assert [k for k in row if k.endswith("_ms")] == ["ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms"]
    assert doc["top_sessions"] == [
        {"session_id": session, "workflow": "claims-intake", "requests": requests, "model_calls": calls,
         "cost_usd": f"{sonnet_usd(i, o):f}"}
        for session, (requests, calls, i, o) in KEPT.items()
    ]
    actions = json.loads(ok("report", "--ledger", ledger, "--group-by", "action", "--format", "json"))
    history, lookup = actions["rows"]
    assert (history["action"], history["invocations"], history["trimmed"], history["replaced"]) == (ACTIONS[0][0], 2, 1, 1)
    assert (history["bytes_before"], history["bytes_after"], history["max_bytes_before"]) == (76_571, 16_300, 40_000)
    # 4 bytes a token, at Sonnet's input price, to the micro-dollar
    assert Decimal(history["est_input_usd_saved"]) == (Decimal(60_271 // 4) * SONNET_IN / 10**6).quantize(Decimal("0.000001"))
    assert (lookup["action"], lookup["bytes_saved"], lookup["est_input_usd_saved"]) == ("claims lookup|v2", 0, "0.000000")


def _json_report(ledger: str, group_by: str, policies: tuple[str, ...]) -> dict[str, Any]:
    doc = json.loads(ok("report", "--ledger", ledger, "--group-by", group_by, "--format", "json", *policies))
    assert doc["columns"][0] == group_by and doc["rows"], doc
    # the rows add up to the totals, and every total is the known figure
    for name, total in doc["totals"].items():
        assert value(total) == sum(value(row[name]) for row in doc["rows"]), name
    if group_by != "action":
        assert {k: value(v) for k, v in doc["totals"].items()} == {k: value(TOTALS[k]) for k in doc["totals"]}
        assert {"model_calls", "input_tokens", "output_tokens", "cost_usd"} <= set(doc["totals"])
    return doc


def _money(column: str) -> bool:
    return "_usd" in column  # cost_usd, lambda_cost_usd, monthly_budget_usd, est_input_usd_saved


def _as_read(column: str, cell: Any) -> Any:
    """A JSON cell as a table, Markdown or HTML shows it: money rounded by ``display.usd``."""
    return shown_usd(cell) if _money(column) else value(cell)


def _as_markdown(column: str, cell: Any) -> Any:
    # Markdown shows money as the table does, the estimated saving included
    # (see test_markdown_shows_the_estimated_saving_as_money)
    return _as_read(column, cell)


@pytest.mark.parametrize("policies", [(), ("--policies", POLICIES)], ids=["plain", "with-budgets"])
@pytest.mark.parametrize("group_by", GROUP_BYS)
def test_report_every_format_shows_the_json_rows_and_totals(filled: tuple[str, dict[str, Any]], group_by: str, policies: tuple[str, ...]) -> None:
    ledger = filled[0]
    doc = _json_report(ledger, group_by, policies)
    columns, rows, totals = doc["columns"], doc["rows"], doc["totals"]
    exact = [{c: value(row[c]) for c in columns} for row in rows]
    as_read = [{c: _as_read(c, row[c]) for c in columns} for row in rows]

    def fmt(name: str) -> str:
        return ok("report", "--ledger", ledger, "--group-by", group_by, "--format", name, *policies)

    # CSV: the same columns in order, every cell exact (money to the nano-dollar); no totals row
    csv_rows = parse_csv(fmt("csv"))
    assert [list(r) for r in csv_rows] == [columns] * len(rows)
    assert [{c: value(r[c]) for c in columns} for r in csv_rows] == exact

    # Markdown: the same columns and rows, money as display.usd rounds it; then the top sessions
    summary, *rest = parse_markdown_tables(fmt("markdown"))
    assert [list(r) for r in summary] == [columns] * len(rows)
    assert [{c: value(r[c]) for c in columns} for r in summary] == [{c: _as_markdown(c, row[c]) for c in columns} for row in rows]
    sessions = [{c: _as_read(c, s[c]) for c in s} for s in doc["top_sessions"]]
    assert [[{c: value(v) for c, v in r.items()} for r in t] for t in rest] == [sessions]

    # The terminal table: the same, a footer with the JSON totals, then the top sessions
    _assert_report_tables(doc, *rich_tables(fmt("table")))

    # HTML: the summary table shows the rounded figure and carries the exact one in its title;
    # the footer holds the totals; the top sessions table and the total spend card agree
    page = fmt("html")
    summary_html, top_html = html_tables(page)
    assert summary_html.columns == [HTML_NAMES.get(c, c) for c in columns]
    assert [dict(zip(columns, map(value, r.values()), strict=True)) for r in summary_html.rows] == as_read
    assert [{c: value(r[h]) for c, h in zip(columns, summary_html.columns, strict=True) if r[h] is not None}
            for r in summary_html.exact] == [{c: value(row[c]) for c in columns if _money(c) and row[c] is not None} for row in rows]
    assert summary_html.footer is not None and summary_html.footer_exact is not None
    html_footer = dict(zip(columns, map(value, summary_html.footer.values()), strict=True))
    assert html_footer == {columns[0]: "Total", **{c: _as_read(c, totals[c]) if c in totals else None for c in columns[1:]}}
    assert {c: value(v) for c, v in zip(columns, summary_html.footer_exact.values(), strict=True) if v is not None} == {
        c: value(totals[c]) for c in columns if _money(c) and c in totals
    }
    assert [dict(zip(doc["top_sessions"][0], map(value, r.values()), strict=True)) for r in top_html.rows] == sessions
    assert [value(e["cost"]) for e in top_html.exact] == [value(s["cost_usd"]) for s in doc["top_sessions"]]
    card = re.search(r'<div class="l">total spend</div><div class="v">([^<]*)</div>', page)
    assert card is not None and value(card.group(1)) == shown_usd(TOTALS["cost_usd"])


def _assert_simulation_tables(doc: dict[str, Any], tables: list[RichTable]) -> None:
    """The replay's tables show its JSON: by file with a totals footer, by rule, then the spend
    report. In shadow mode the capping columns are what enforce mode would have done."""
    files, rules, spend, top = tables
    would = doc.get("would_have_capped")
    capping = {f["file"]: f for f in (would or doc)["files"]}
    assert files.columns == ["file", "model_calls", "cost_as_recorded", "would_have_capped" if would else "first_cap",
                             "at_event", "caps", "would_keep" if would else "kept_calls", "would_avoid" if would else "cost_avoided"]
    expected = [
        [Path(f["file"]).name, value(f["model_calls_full"]), shown_usd(f["cost_full_usd"]),
         None if capping[f["file"]]["capped_by"] is None else ("would: " if would else "") + capping[f["file"]]["capped_by"],
         value(capping[f["file"]]["capped_at_event"]), value(len(capping[f["file"]]["caps"])),
         value(capping[f["file"]]["model_calls_kept"]), shown_usd(capping[f["file"]]["cost_avoided_usd"])]
        for f in doc["files"]
    ]
    assert [[value(v) for v in row.values()] for row in files.rows] == expected
    assert files.footer is not None
    assert [value(v) for v in files.footer.values()] == [
        "total", sum(row[1] for row in expected), shown_usd(doc["total"]["cost_full_usd"]), None, None,
        sum(row[5] for row in expected), sum(row[6] for row in expected),
        shown_usd((would or doc["total"])["cost_avoided_usd"]),
    ]
    assert rules.columns == ["rule", "hits", "files", "model_calls_avoided", "would_avoid" if would else "cost_avoided"]
    assert [[value(v) for v in row.values()] for row in rules.rows] == [
        [r["rule"], r["hits"], r["files"], r["model_calls_avoided"], shown_usd(r["cost_avoided_usd"])]
        for r in (would or doc)["caps_by_rule"]
    ]
    # two replays: the latency percentiles (the replay's own wall-clock time) may differ
    _assert_report_tables(doc["report"], spend, top, same_run=False)


def _assert_report_tables(doc: dict[str, Any], report_table: RichTable, top: RichTable, *, same_run: bool = True) -> None:
    """A report's terminal tables show its JSON: rows, a totals footer, then the top sessions."""
    columns, totals = doc["columns"], doc["totals"]
    assert report_table.title == f"Spend by {doc['group_by']}" and report_table.caption is None
    assert report_table.columns == [TABLE_NAMES.get(c, c) for c in columns]
    compared = [c for c in columns if same_run or not c.endswith("_ms")]
    assert [{c: value(r[TABLE_NAMES.get(c, c)]) for c in compared} for r in report_table.rows] == [
        {c: _as_read(c, row[c]) for c in compared} for row in doc["rows"]
    ]
    assert report_table.footer is not None
    footer = dict(zip(columns, map(value, report_table.footer.values()), strict=True))
    assert footer == {columns[0]: "total", **{c: _as_read(c, totals[c]) if c in totals else None for c in columns[1:]}}
    assert top.title == "Top sessions by cost" and top.columns == ["session", "workflow", "requests", "model_calls", "cost"]
    assert [[value(v) for v in r.values()] for r in top.rows] == [
        [_as_read(c, v) for c, v in s.items()] for s in doc["top_sessions"]
    ]


def test_simulate_table_shows_the_json_files_rules_and_report() -> None:
    args = ("simulate", *RECORDINGS, "--policies", POLICIES)
    doc = json.loads(ok(*args, "--format", "json"))
    tables = rich_tables(ok(*args))
    _assert_simulation_tables(doc, tables)
    # 86 calls recorded, 60 kept; what the 26 capped ones would have cost; the report is the ledger's
    footer = tables[0].footer or {}
    assert (value(footer["model_calls"]), value(footer["kept_calls"])) == (RECORDED_CALLS, 60)
    assert doc["total"] == {"cost_full_usd": f"{RECORDED_USD}", "cost_avoided_usd": f"{AVOIDED_USD}"}
    assert sum(Decimal(r["cost_avoided_usd"]) for r in doc["caps_by_rule"]) == AVOIDED_USD
    assert doc["report"]["totals"] == TOTALS


def test_shadow_simulate_table_shows_the_json_would_have_capped_figures() -> None:
    # support-triage runs in shadow mode and allows Nova models only: every Claude call would be refused
    args = ("simulate", RECORDINGS[3], RECORDINGS[0], "--policies", POLICIES, "--workflow", "support-triage")
    doc = json.loads(ok(*args, "--format", "json"))
    assert doc["mode"] == "shadow" and doc["total"]["cost_avoided_usd"] == "0.00000"
    _assert_simulation_tables(doc, rich_tables(ok(*args)))
    # nothing was blocked: the whole recorded cost is what enforce mode would have avoided; that is
    # the two sessions' kept Sonnet calls plus the $0.468 the log's caps avoid under claims-intake
    recorded = sonnet_usd(KEPT["sess-converse"][2] + KEPT["sess-normal"][2], KEPT["sess-converse"][3] + KEPT["sess-normal"][3])
    assert doc["would_have_capped"]["cost_avoided_usd"] == doc["total"]["cost_full_usd"] == f"{recorded + Decimal('0.468')}"


@pytest.fixture
def on_the_recorded_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget status as of noon on the recordings' day: their spend is today's, and the forecast
    (spend extrapolated to the period's end) is the same in both calls."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Frozen:
            return cls(2026, 11, 20, 12, tzinfo=tz)

    monkeypatch.setattr(budgets, "datetime", Frozen)


@pytest.mark.parametrize("blocked", [False, True], ids=["running", "blocked"])
def test_budget_status_table_shows_the_json(filled: tuple[str, dict[str, Any]], on_the_recorded_day: None, tmp_path: Path, blocked: bool) -> None:
    ledger = filled[0]
    if blocked:  # a copy of the filled ledger, with support-triage's kill switch set
        shutil.copy(ledger.removeprefix("sqlite:///"), tmp_path / "l.db")
        ledger = f"sqlite:///{tmp_path / 'l.db'}"
        ok("budget", "block", "support-triage", "--reason", "runaway | loop", "--ledger", ledger, "--force")
    lines = json.loads(ok("budget", "status", "--ledger", ledger, "--policies", POLICIES, "--format", "json"))["budgets"]
    out = ok("budget", "status", "--ledger", ledger, "--policies", POLICIES)
    (table,) = rich_tables(out)
    assert table.columns == ["workflow", "period", "budget", "spent", "reserved", "remaining", "used_%", "forecast", "kill_switch"]
    assert [{k: value(v) for k, v in row.items()} for row in table.rows] == [
        {
            "workflow": b["workflow"], "period": b["period_key"], "budget": shown_usd(b["budget_usd"]),
            "spent": shown_usd(b["spent_usd"]), "reserved": shown_usd(b["reserved_usd"]),
            "remaining": shown_usd(b["remaining_usd"]), "used_%": value(b["used_pct"]),
            "forecast": shown_usd(b["forecast_usd"]), "kill_switch": "BLOCKED" if b["blocked"] else None,
        }
        for b in lines
    ]
    # who set a switch, when and why: a sentence under the table per blocked workflow
    assert [line for line in out.splitlines() if line.startswith("kill switch:")] == [
        f"kill switch: {b['workflow']} BLOCKED by {b['blocked_by']} at "
        f"{datetime.fromisoformat(b['blocked_at']):%Y-%m-%d %H:%M UTC}: {b['block_reason']}"
        for b in lines if b["blocked"] and b["period"] == "day"
    ]
    # (a blocked workflow gets a day line even without a daily budget)
    assert [(b["workflow"], b["period"]) for b in lines if b["blocked"]] == ([("support-triage", "day"), ("support-triage", "month")] if blocked else [])
    # the replay's spend is the recorded day's and month's; at noon, half the day has gone
    claims = {b["period"]: b for b in lines if b["workflow"] == "claims-intake"}
    assert (claims["day"]["spent_usd"], claims["month"]["spent_usd"]) == (TOTALS["cost_usd"], TOTALS["cost_usd"])
    assert (claims["day"]["budget_usd"], claims["month"]["budget_usd"]) == ("500", "9000")
    assert Decimal(claims["day"]["forecast_usd"]) == (KEPT_USD / (Decimal(43_201) / 86_400)).quantize(Decimal("0.000001"))


def _pricing(*args: str) -> tuple[list[dict[str, Any]], RichTable]:
    models = json.loads(ok("pricing", "show", *args, "--format", "json"))["models"]
    (table,) = rich_tables(ok("pricing", "show", *args))
    return models, table


def test_pricing_tables_show_the_json() -> None:
    models, table = _pricing()
    assert table.columns == ["model", "name", "provider", "status", "dimensions", "regions"]
    assert table.rows == [
        {"model": m["model_id"], "name": m["name"] or "-", "provider": m["provider"] or "-",
         "status": f"{m['status']} {m['end_of_life']}" if m["end_of_life"] else m["status"],
         "dimensions": ", ".join(m["dimensions"][2:]) or "-", "regions": ", ".join(m["regions"])}
        for m in models
    ]
    # one region's rates: a "*" marks a rate assumed from the catalog's region
    models, table = _pricing("--region", "us-west-2")
    assert table.columns[-2:] == ["input", "output"]
    assert [(r["model"], r["input"], r["output"]) for r in table.rows] == [
        (m["model_id"], m["input"] + (" *" if m["region_assumed"] else ""), m["output"] + (" *" if m["region_assumed"] else ""))
        for m in models
    ]
    assert any(m["region_assumed"] for m in models) and not all(m["region_assumed"] for m in models)
    # one model: every rate card, exact; Claude 3.5 Sonnet at its published $3 / $15 per 1M tokens
    (sonnet,), table = _pricing("anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert [[value(v) for v in row.values()] for row in table.rows] == [
        [describe_set(name), *(value(r.get(k)) for k in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h"))]
        for name, r in sonnet["rates"].items()
    ]
    assert [value(table.rows[0][k]) for k in ("input", "output")] == [SONNET_IN, SONNET_OUT]


def _dropped(table: RichTable, width: int) -> list[str]:
    if table.caption is None:
        return []
    match = re.fullmatch(rf"not shown at {width} columns: (.*) \(widen COLUMNS or use --format csv/json\)", table.caption)
    assert match is not None, table.caption
    return [column(name) for name in match.group(1).split(", ")]


NARROW_COMMANDS = {
    **{f"report-{g}": ("report", "--group-by", g, "--policies", POLICIES) for g in GROUP_BYS},
    "simulate": ("simulate", *RECORDINGS, "--policies", POLICIES),
    "budget-status": ("budget", "status", "--policies", POLICIES),
}
MONEY_HEADERS = {"cost_usd", "lambda_cost_usd", "monthly_budget_usd", "est_input_usd_saved", "cost_as_recorded",
                 "cost_avoided", "cost", "budget", "spent", "reserved", "remaining"}


@pytest.mark.parametrize("width", [30, 60, 80])
@pytest.mark.parametrize("command", list(NARROW_COMMANDS))
def test_a_narrow_table_names_every_column_it_drops_and_never_cuts_money(
    filled: tuple[str, dict[str, Any]], on_the_recorded_day: None, command: str, width: int
) -> None:
    args = NARROW_COMMANDS[command]
    if not args[0] == "simulate":
        args = (*args, "--ledger", filled[0])
    wide = rich_tables(ok(*args))
    narrow_out = ok(*args, env={"COLUMNS": str(width)})
    narrow = rich_tables(narrow_out)
    # no cell or header is cut short
    assert "…" not in narrow_out
    assert [t.title for t in narrow] == [t.title for t in wide]
    for full, shown in zip(wide, narrow, strict=True):
        dropped = _dropped(shown, width)
        # the caption names exactly the columns missing; the key and money columns stay
        assert [c for c in full.columns if c not in dropped] == shown.columns, (shown.columns, dropped)
        assert shown.columns[0] == full.columns[0] and not MONEY_HEADERS & set(dropped)
        # and what is shown is what the wide table shows, cell for cell
        assert shown.rows == [{c: row[c] for c in shown.columns} for row in full.rows]
        assert shown.footer == (None if full.footer is None else {c: full.footer[c] for c in shown.columns})
        # a table is wider than the terminal only when its key and money columns alone are
        if any(len(line) > width for line in narrow_out.splitlines()):
            assert all(c == shown.columns[0] or c in MONEY_HEADERS for c in shown.columns) or shown.rows == []


def test_markdown_shows_the_estimated_saving_as_money(filled: tuple[str, dict[str, Any]]) -> None:
    doc = json.loads(ok("report", "--ledger", filled[0], "--group-by", "action", "--format", "json"))
    (summary, _) = parse_markdown_tables(ok("report", "--ledger", filled[0], "--group-by", "action", "--format", "markdown"))
    assert [value(r["est_input_usd_saved"]) for r in summary] == [shown_usd(r["est_input_usd_saved"]) for r in doc["rows"]]


def test_reconcile_table_and_csv_show_the_json_frame(tmp_path: Path, aws: Any) -> None:
    # GIVEN yesterday's metered $12.345678901 against a $10 daily budget, and $15.00 billed (3 runs)
    yesterday, path, policies = yesterday_over_budget(tmp_path, 12_345_678_901, runs=3)
    args = ("reconcile", "--since", yesterday, "--until", yesterday, "--dry-run", "--policies", str(policies),
            "--ledger", f"sqlite:///{path}")
    doc = json.loads(ok(*args, "--format", "json"))
    frame = doc["frame"]
    (row,) = frame
    assert (row["metered_cost_usd"], row["billed_cost_usd"], row["drift_usd"]) == ("12.345678901", "15.00", "2.654321099")
    # CSV: the whole frame, every cell exact
    csv_rows = parse_csv(ok(*args, "--format", "csv"))
    assert [list(r) for r in csv_rows] == [list(frame[0])]
    assert [{k: value(v) for k, v in r.items()} for r in csv_rows] == [
        {k: value(str(v) if isinstance(v, bool) else v) for k, v in r.items()} for r in frame
    ]
    # the table: the chosen columns, money rounded by display.usd; then the alerts it would send
    table, alerts = rich_tables(ok(*args))
    shown = ["workflow", "day", "metered_cost_usd", "billed_cost_usd", "estimated", "drift_usd", "drift_pct",
             "attribution", "throttles", "budget_daily_usd", "month_to_date_usd", "forecast_month_end_usd"]
    assert table.columns == shown and table.caption is None
    assert [{k: value(v) for k, v in r.items()} for r in table.rows] == [
        {c: ("yes" if r[c] else "no") if isinstance(r[c], bool) else _as_read(c, r[c]) for c in shown} for r in frame
    ]
    assert alerts.columns == ["kind", "workflow", "period", "subject"]
    assert alerts.rows == [{c: a[c] for c in alerts.columns} for a in doc["alert_list"]]
    assert [a["kind"] for a in doc["alert_list"]] == ["budget_threshold", "drift"]


def test_pricing_refresh_table_shows_the_json_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    client, models = pricing_client(), bedrock_client()
    monkeypatch.setattr(cli, "_aws_session", lambda profile: _StubSession(client, models))

    def refresh(*args: str) -> tuple[str, str]:
        with Stubber(client) as pages, Stubber(models) as listing:
            stub_pages(pages)
            stub_models(listing)
            result = runner.invoke(app, ["pricing", "refresh", "--dry-run", *args], env=WIDE)
        assert result.exit_code == 0, result.output
        return result.stdout, result.stderr

    doc = json.loads(refresh("--format", "json")[0])
    out, err = refresh()
    (table,) = rich_tables(out)
    assert table.columns == ["model", "input", "output", "cache_read", "cache_write"]

    def cell(before: str | None, after: str | None) -> str:
        return (after or "-") if before == after else f"{before or '-'} -> {after or '-'}"

    assert table.rows == [
        {"model": model, **{k: cell(change["before"].get(k), change["after"].get(k)) for k in table.columns[1:]}}
        for model, change in sorted(doc["changed"].items())
    ]
    assert "amazon.nova-pro-v1:0" in doc["changed"] and table.rows[1]["input"] == "0.8 -> 0.9"
    # the summary under the table counts what the JSON lists
    assert (f"{len(doc['updated'])} models priced from {doc['products_seen']} products in {doc['requests']} requests; "
            f"{len(doc['new_models'])} not in the shipped catalog; {len(doc['unmatched_names'])} product names match "
            f"no Bedrock model; {len(doc['incomplete'])} models incomplete") in err
    assert f"new: {', '.join(doc['new_models'])}" in err and "dry run: nothing written" in err
