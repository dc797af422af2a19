"""Every command in every format, global options, and the bad-input cases a new user hits first."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from costguard.cli import app
from tests.support.cli_output import parse_csv, parse_html, parse_markdown, parse_rich, value

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    ledger = f"sqlite:///{tmp_path_factory.mktemp('ledger')}/l.db"
    code, out, err = run("simulate", *RECORDINGS, "--policies", POLICIES, "--ledger", ledger, "--quiet")
    assert code == 0 and out == "", err
    return ledger


# The ledger the four recordings leave (see test_cli.py for the per-file arithmetic): 3 agent
# requests + 40 Converse calls; 6 + 12 + 2 + 40 model calls; 4 + 11 + 1 tool calls (the runaway
# loop's 11th is the one over its cap of 10); tokens and cost of the kept calls at Claude 3.5
# Sonnet's $3.00 / $15.00 per 1M tokens; 2 agent violations + 6 in the invocation log.
TOTALS = {
    "requests": 43,
    "model_calls": 60,
    "tool_calls": 16,
    "input_tokens": 17_720 + 60_570 + 3_700 + 396_450,
    "output_tokens": 1_000 + 2_040 + 240 + 6_000,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "cost_usd": ((17_720 + 60_570 + 3_700 + 396_450) * Decimal("3.00") + 9_280 * Decimal("15.00")) / 10**6,
    "violations": 8,
    "shadow_violations": 0,
    "lambda_cost_usd": 0,  # the recordings hold no action group Lambda invocations
}
PARSERS = {"csv": parse_csv, "markdown": parse_markdown, "table": parse_rich}


def comparable(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    return [{c: value(row[c]) for c in columns} for row in rows]


def report(ledger: str, *args: str) -> str:
    code, out, err = run("report", "--ledger", ledger, *args)
    assert code == 0, err
    return out


@pytest.mark.parametrize("policies", [(), ("--policies", POLICIES)], ids=["plain", "with-budgets"])
@pytest.mark.parametrize("group_by", ["workflow", "day", "model", "user", "agent"])
def test_report_every_format_round_trips_the_json_rows_and_totals(filled: str, group_by: str, policies: tuple[str, ...]) -> None:
    # GIVEN the JSON report: its rows add up to its totals, and the totals are the known figures
    doc = json.loads(report(filled, "--group-by", group_by, "--format", "json", *policies))
    columns, rows = doc["columns"], doc["rows"]
    assert columns[0] == group_by and rows
    for name, total in doc["totals"].items():
        assert value(total) == sum(value(row[name]) for row in rows), name
    # (by model, a request's counts are not additive across models, so the totals leave them out)
    assert {"model_calls", "input_tokens", "output_tokens", "cost_usd"} <= set(doc["totals"]) <= set(TOTALS)
    assert {name: value(total) for name, total in doc["totals"].items()} == {k: value(TOTALS[k]) for k in doc["totals"]}
    assert isinstance(doc["totals"]["cost_usd"], str)  # exact decimal text, never a float
    expected = comparable(rows, columns)
    # WHEN the same report is printed in every other format
    for fmt, parse in PARSERS.items():
        parsed = parse(report(filled, "--group-by", group_by, "--format", fmt, *policies))
        # THEN it carries the same columns in the same order and the same rows, cell for cell
        # (rich cuts a header that does not fit 160 characters to "violati…": it must still be the
        # start of the column's name)
        shown = list(parsed[0])
        assert len(shown) == len(columns) and all(c.startswith(h.rstrip("…")) for h, c in zip(shown, columns)), (fmt, shown)
        parsed = [dict(zip(columns, row.values(), strict=True)) for row in parsed]
        assert comparable(parsed, columns) == expected, fmt
    # AND the HTML summary table has the same rows in its columns and the same totals in its footer
    body, footer = parse_html(report(filled, "--group-by", group_by, "--format", "html", *policies))
    shown = [c for c in body[0] if c in columns]
    assert shown[0] == group_by and "cost_usd" in shown and "model_calls" in shown
    assert comparable(body, shown) == comparable(rows, shown)
    footer_totals = {c: value(footer[c]) for c in shown if c in doc["totals"]}
    assert footer_totals == {c: value(doc["totals"][c]) for c in footer_totals} and "cost_usd" in footer_totals


def test_report_top_sessions_agree_in_every_format(filled: str) -> None:
    doc = json.loads(report(filled, "--format", "json"))
    sessions = doc["top_sessions"]
    assert [(s["session_id"], value(s["cost_usd"])) for s in sessions] == [
        ("sess-converse", Decimal("1.27935")), ("sess-loop", Decimal("0.21231")),
        ("sess-normal", Decimal("0.06816")), ("sess-verbose", Decimal("0.0147")),
    ]
    markdown = report(filled, "--format", "markdown")
    second_table = markdown[markdown.index("## Top sessions"):]
    assert comparable(parse_markdown(second_table), list(sessions[0])) == comparable(sessions, list(sessions[0]))


def test_report_date_filters(filled: str) -> None:
    code, out, _ = run("report", "--ledger", filled, "--since", "2000-01-01", "--until", "2000-01-31", "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == []
    assert run("report", "--ledger", filled, "--since", "yesterday")[0] == 2
    assert run("report", "--ledger", filled, "--since", "2026-02-30")[0] == 2
    code, _, err = run("report", "--ledger", filled, "--since", "2026-03-02", "--until", "2026-03-01")
    assert code == 2 and "before" in err


def test_unknown_workflow_and_missing_policy_paths(filled: str, tmp_path: Path) -> None:
    code, _, err = run("report", "--ledger", filled, "--workflow", "no-such-flow")
    assert code == 1 and "no-such-flow" in err
    code, _, err = run("report", "--ledger", filled, "--format", "html", "--policies", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err
    code, _, err = run("budget", "status", "--ledger", filled, "--policies", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err


def test_empty_ledger_prints_an_empty_report_not_an_error(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/empty.db"
    code, out, _ = run("report", "--ledger", ledger)
    assert code == 0 and "no usage" in out
    code, out, _ = run("budget", "status", "--ledger", ledger, "--format", "json")
    assert code == 0 and json.loads(out) == {"budgets": []}
    code, out, _ = run("budget", "status", "--ledger", ledger)
    assert code == 0 and "no budgets" in out


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--format", "json"),
        ("budget", "status"),
        ("budget", "block", "wf", "--reason", "x"),
        ("budget", "unblock", "wf"),
    ],
)
def test_corrupt_ledger_is_a_message_not_a_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite " * 300)
    code, out, err = run(*args, "--ledger", f"sqlite:///{corrupt}")
    assert code == 1 and "corrupt.db" in err and "Traceback" not in out + err


def test_simulate_and_budget_and_pricing_formats(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    code, out, _ = run("simulate", RECORDINGS[0], "--policies", POLICIES, "--ledger", ledger)
    assert code == 0 and "What-if replay" in out
    assert run("simulate", RECORDINGS[0], "--policies", POLICIES, "--ledger", ledger, "--format", "yaml")[0] == 2
    code, out, _ = run("budget", "status", "--ledger", ledger, "--policies", POLICIES)
    assert code == 0 and "claims-intake" in out
    assert run("budget", "status", "--ledger", ledger, "--format", "csv")[0] == 2
    code, out, _ = run("pricing", "show")
    assert code == 0 and "anthropic.claude-3-5-sonnet-20240620-v1:0" in out
    code, out, _ = run("pricing", "show", "--format", "json")
    assert code == 0 and len(json.loads(out)["models"]) > 40
    assert run("pricing", "show", "--format", "xml")[0] == 2
    code, out, _ = run("policy", "schema")
    assert code == 0 and "workflows" in json.loads(out)["properties"]


def test_global_ledger_and_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    global_ledger = f"sqlite:///{tmp_path}/global.db"
    env_ledger = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("COSTGUARD_LEDGER", env_ledger)
    # GIVEN a block through the global --ledger, given before the command
    code, out, _ = run("--ledger", global_ledger, "budget", "block", "wf", "--reason", "r")
    assert code == 0 and "blocked wf" in out
    # THEN the global ledger holds it and the environment's ledger does not
    assert "BLOCKED" in run("--ledger", global_ledger, "budget", "status")[1]
    assert "BLOCKED" not in run("budget", "status")[1]
    # a command's own --ledger wins over the global one
    assert "BLOCKED" not in run("--ledger", global_ledger, "budget", "status", "--ledger", env_ledger)[1]
    # --quiet silences commands that act, but not data
    code, out, err = run("--quiet", "budget", "unblock", "wf", "--ledger", global_ledger)
    assert code == 0 and out == "" and err == ""
    code, out, _ = run("--quiet", "policy", "check", POLICIES)
    assert code == 0 and out == ""
    code, out, _ = run("-q", "simulate", RECORDINGS[0], "--policies", POLICIES, "--ledger", global_ledger)
    assert code == 0 and out == ""
    code, out, _ = run("-q", "report", "--ledger", global_ledger, "--format", "json")
    assert code == 0 and json.loads(out)["rows"]
    report = tmp_path / "r.csv"
    code, out, err = run("-q", "report", "--ledger", global_ledger, "--format", "csv", "--output", str(report))
    assert code == 0 and err == "" and report.read_text().startswith("workflow")


def test_help_documents_exit_codes_and_completion() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "Exit codes" in out and "--install-completion" in out
    for command in (("report",), ("simulate",), ("budget", "status"), ("pricing", "refresh"), ("policy", "check")):
        assert run(*command, "--help")[0] == 0


def test_budget_block_needs_a_reason(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("budget", "block", "wf", "--ledger", ledger)[0] == 2
    assert run("budget", "block", "wf", "--reason", "  ", "--ledger", ledger)[0] == 2
    code, out, _ = run("budget", "unblock", "wf", "--ledger", ledger)
    assert code == 0 and "was not blocked" in out


def test_report_with_policies_shows_this_months_budget_use(filled: str) -> None:
    from decimal import Decimal

    code, out, _ = run("report", "--ledger", filled, "--policies", POLICIES, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    row = doc["rows"][0]
    assert row["monthly_budget_usd"] == "9000"
    # the simulated spend lands in the current month's counter; the report's window is everything
    expected = (100 * Decimal(row["cost_usd"]) / 9000).quantize(Decimal("0.1"))
    assert Decimal(row["budget_used_pct"]) == expected
    assert "budget_used_pct" not in doc["totals"]
    for fmt in ("table", "csv", "markdown", "html"):
        code, out, _ = run("report", "--ledger", filled, "--policies", POLICIES, "--format", fmt)
        assert code == 0 and ("budget" in out.lower())


def test_simulate_table_round_trips_the_json_files_and_totals(tmp_path: Path) -> None:
    args = ("simulate", *RECORDINGS, "--policies", POLICIES)
    code, out, err = run(*args, "--ledger", f"sqlite:///{tmp_path}/json.db", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    code, out, err = run(*args, "--ledger", f"sqlite:///{tmp_path}/table.db")
    assert code == 0, err
    *files, total = parse_rich(out)
    assert comparable(files, list(files[0])) == [
        {
            "file": Path(f["file"]).name,
            "model_calls": value(f["model_calls_full"]),
            "cost_as_recorded": value(f["cost_full_usd"]),
            "capped_by": f["capped_by"],
            "at_event": value(f["capped_at_event"]),
            "kept_calls": value(f["model_calls_kept"]),
            "cost_avoided": value(f["cost_avoided_usd"]),
        }
        for f in doc["files"]
    ]
    assert value(total["file"]) == "total"
    assert (value(total["cost_as_recorded"]), value(total["cost_avoided"])) == (
        value(doc["total"]["cost_full_usd"]), value(doc["total"]["cost_avoided_usd"])
    ) == (TOTALS["cost_usd"] + Decimal("1.708791"), Decimal("1.708791"))
    assert (value(total["model_calls"]), value(total["kept_calls"])) == (6 + 26 + 8 + 46, TOTALS["model_calls"])


def test_budget_status_table_round_trips_the_json(filled: str) -> None:
    code, out, err = run("budget", "status", "--ledger", filled, "--policies", POLICIES, "--format", "json")
    assert code == 0, err
    budgets = json.loads(out)["budgets"]
    code, out, err = run("budget", "status", "--ledger", filled, "--policies", POLICIES)
    assert code == 0, err
    table = parse_rich(out)
    # The forecast extrapolates to the period's end from the time of the call: two calls differ.
    assert [{k: value(v) for k, v in row.items() if k != "forecast"} for row in table] == [
        {
            "workflow": b["workflow"],
            "period": f"{b['period']} {b['period_key']}",
            "budget": value(b["budget_usd"]),
            "spent": value(b["spent_usd"]),
            "reserved": value(b["reserved_usd"]),
            "remaining": value(b["remaining_usd"]),
            "used_%": value(b["used_pct"]),
            "kill_switch": "BLOCKED" if b["blocked"] else None,
        }
        for b in budgets
    ]
    claims = [b for b in budgets if b["workflow"] == "claims-intake"]
    assert [(b["period"], value(b["budget_usd"]), value(b["spent_usd"])) for b in claims] == [
        ("day", Decimal(500), TOTALS["cost_usd"]), ("month", Decimal(9000), TOTALS["cost_usd"]),
    ]


def test_pricing_table_round_trips_the_json() -> None:
    code, out, _ = run("pricing", "show", "--format", "json")
    assert code == 0
    models = json.loads(out)["models"]
    code, out, _ = run("pricing", "show")
    assert code == 0
    # Long ids wrap onto continuation lines (no provider there): one table row per JSON model.
    providers = [row["provider"] for row in parse_rich(out) if row["provider"]]
    assert providers == [m["provider"] for m in models]
    code, out, _ = run("pricing", "show", "anthropic.claude-3-5-sonnet-20240620-v1:0", "--format", "json")
    assert code == 0
    (sonnet,) = json.loads(out)["models"]
    assert (Decimal(sonnet["input"]), Decimal(sonnet["output"])) == (Decimal("3.00"), Decimal("15.00"))
