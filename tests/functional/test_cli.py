from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from costguard.cli import app

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
runner = CliRunner()


# Published on-demand prices per 1M tokens (https://aws.amazon.com/bedrock/pricing/, us-east-1,
# retrieved 2026-11-01): Claude 3.5 Sonnet $3.00 in / $15.00 out, Claude 3 Opus $15.00 / $75.00.
PRICES = {
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (Decimal("3.00"), Decimal("15.00")),
    "anthropic.claude-3-opus-20240229-v1:0": (Decimal("15.00"), Decimal("75.00")),
}


def recorded_costs(name: str) -> list[Decimal]:
    """The USD cost of each model call in a recording, from its token counts and PRICES."""
    costs: list[Decimal] = []
    model = None
    for line in (ROOT / "examples" / "recordings" / name).read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        if "schemaType" in event:  # a model invocation log record
            tokens = (event["input"]["inputTokenCount"], event["output"]["outputTokenCount"])
            model = event["modelId"]
        elif "trace" in event:
            (step,) = [s for s in event["trace"]["trace"].values() if isinstance(s, dict)] or [{}]
            if "modelInvocationInput" in step:
                model = step["modelInvocationInput"]["foundationModel"]
            if "modelInvocationOutput" not in step:
                continue
            usage = step["modelInvocationOutput"]["metadata"]["usage"]
            tokens = (usage["inputTokens"], usage["outputTokens"])
        else:
            continue
        price_in, price_out = PRICES[str(model)]
        costs.append((tokens[0] * price_in + tokens[1] * price_out) / 10**6)
    return costs


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_simulate_then_report_json(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    code, out, _ = run("simulate", *RECORDINGS, "--policies", str(ROOT / "policies"), "--ledger", ledger, "--format", "json")
    assert code == 0, out
    doc = json.loads(out)
    by_file = {Path(f["file"]).name: f for f in doc["files"]}
    assert by_file["claim-normal.jsonl"]["capped_by"] is None
    # claims-intake allows 10 tool calls and 12 model calls: the 11th tool call comes first.
    assert by_file["claim-runaway-loop.jsonl"]["capped_by"] == "per_request.max_tool_calls"
    assert by_file["claim-runaway-loop.jsonl"]["model_calls_kept"] == 12
    assert by_file["claim-verbose-tool.jsonl"]["capped_by"] == "per_request.max_tool_response_bytes"
    # the invocation log: the 20th record names a model off the allow-list, and the session cap
    # of 40 model calls blocks the last five records before they are sent
    log = by_file["converse-session-log.jsonl"]
    assert (log["capped_by"], log["capped_at_event"]) == ("models.allow", 20)
    assert (log["model_calls_full"], log["model_calls_kept"]) == (46, 40)
    assert [v["rule"] for v in log["violations"]] == ["models.allow"] + ["per_session.max_model_calls"] * 5
    # The calls each file keeps: the agent loops up to their cap; the log without its 20th call
    # (index 19, off the allow-list) and its last five (over the session cap)
    costs = {name: recorded_costs(name) for name in by_file}
    kept_calls = {
        "claim-normal.jsonl": costs["claim-normal.jsonl"],
        "claim-runaway-loop.jsonl": costs["claim-runaway-loop.jsonl"][:12],
        "claim-verbose-tool.jsonl": costs["claim-verbose-tool.jsonl"][:2],
        "converse-session-log.jsonl": costs["converse-session-log.jsonl"][:19] + costs["converse-session-log.jsonl"][20:41],
    }
    for name, entry in by_file.items():
        assert (entry["model_calls_full"], entry["model_calls_kept"]) == (len(costs[name]), len(kept_calls[name]))
        assert Decimal(entry["cost_full_usd"]) == sum(costs[name])
        assert Decimal(entry["cost_kept_usd"]) == sum(kept_calls[name])
        assert Decimal(entry["cost_avoided_usd"]) == sum(costs[name]) - sum(kept_calls[name])
    kept_usd = sum(sum(c) for c in kept_calls.values())
    avoided_usd = sum(sum(c) for c in costs.values()) - kept_usd
    assert (kept_usd, avoided_usd) == (Decimal("1.57452"), Decimal("1.708791"))
    assert Decimal(doc["total"]["cost_avoided_usd"]) == avoided_usd
    assert Decimal(doc["total"]["cost_full_usd"]) == kept_usd + avoided_usd
    code, out, _ = run("report", "--ledger", ledger, "--format", "json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert [r["workflow"] for r in rows] == ["claims-intake"]
    # three agent requests plus forty Converse calls; 2 agent violations plus 6 in the log
    assert rows[0]["requests"] == 3 + 40 and rows[0]["violations"] == 2 + 6
    kept = sum(f["model_calls_kept"] for f in doc["files"])
    assert rows[0]["model_calls"] == kept == 6 + 12 + 2 + 40
    assert Decimal(rows[0]["cost_usd"]) == kept_usd
    for fmt in ("csv", "markdown", "table"):
        code, out, _ = run("report", "--ledger", ledger, "--format", fmt)
        assert code == 0 and "claims-intake" in out
    code, out, _ = run("report", "--ledger", ledger, "--group-by", "model", "--format", "json")
    assert code == 0
    models = json.loads(out)["rows"]
    assert [m["model"] for m in models] == ["anthropic.claude-3-5-sonnet-20240620-v1:0"]
    assert models[0]["cost_usd"] == rows[0]["cost_usd"]
    page = tmp_path / "report.html"
    code, _, _ = run("report", "--ledger", ledger, "--format", "html", "--output", str(page), "--policies", str(ROOT / "policies"))
    assert code == 0 and "<svg" in page.read_text() and "claims-intake" in page.read_text()
    assert run("report", "--ledger", ledger, "--group-by", "colour")[0] == 2


def test_report_bad_input(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("report", "--ledger", ledger, "--since", "2026-13-01")[0] == 2
    assert run("report", "--ledger", ledger, "--format", "pdf")[0] == 2
    # a read command on a ledger that does not exist says so and creates nothing
    code, _, err = run("report", "--ledger", ledger, "--format", "json")
    assert code == 1 and f"no ledger at {ledger}" in err and not (tmp_path / "l.db").exists()
    assert run("budget", "block", "wf", "--reason", "r", "--force", "--ledger", ledger)[0] == 0
    code, out, _ = run("report", "--ledger", ledger, "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == []
    assert run("report", "--ledger", ledger, "--workflow", "nope")[0] == 1
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 500)
    code, _, err = run("report", "--ledger", f"sqlite:///{corrupt}")
    assert code == 1 and "corrupt.db" in err


def test_policy_check_reports_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nworkflows:\n  wf:\n    per_request:\n      max_modle_calls: 3\n    mode: loud\n")
    code, out, err = run("policy", "check", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{bad}:") for line in lines)
    assert any(":5: workflows.wf.per_request.max_modle_calls" in line for line in lines)
    assert run("policy", "check", str(ROOT / "policies"))[0] == 0
    assert run("policy", "check", str(tmp_path / "missing"))[0] == 2
    code, out, _ = run("policy", "schema")
    assert code == 0 and json.loads(out)["title"]


def test_simulate_errors(tmp_path: Path) -> None:
    code, _, _ = run("simulate", RECORDINGS[0], "--policies", str(tmp_path / "none"), "--ledger", f"sqlite:///{tmp_path}/l.db")
    assert code == 2
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"chunk": {"bytes": "aGk="}}\nnot json\n')
    code, _, err = run("simulate", str(broken), "--policies", str(ROOT / "policies"), "--ledger", f"sqlite:///{tmp_path}/l.db")
    assert code == 1 and "broken.jsonl:2" in err


def test_pricing_and_budget(tmp_path: Path) -> None:
    code, out, _ = run("pricing", "show", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", "--format", "json")
    assert code == 0 and Decimal(json.loads(out)["models"][0]["input"]) == Decimal("3.00")
    code, out, _ = run("pricing", "show", "acme.unknown-model", "--format", "json")
    assert code == 0 and json.loads(out)["models"][0]["priced"] is False
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("budget", "block", "wf", "--reason", "runaway", "--ledger", ledger, "--force")[0] == 0
    code, out, _ = run("budget", "unblock", "wf", "--ledger", ledger, "--force")
    assert code == 0 and "unblocked wf" in out
    assert run("budget", "status", "--ledger", ledger)[0] == 0


def test_budget_status_with_policies_and_kill_switch(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    run("simulate", RECORDINGS[0], "--policies", str(ROOT / "policies"), "--ledger", ledger, "--quiet")
    run("budget", "block", "claims-intake", "--reason", "manual stop", "--ledger", ledger, "--policies", str(ROOT / "policies"))
    code, out, _ = run("budget", "status", "--ledger", ledger, "--policies", str(ROOT / "policies"), "--format", "json")
    assert code == 0
    lines = {(b["workflow"], b["period"]): b for b in json.loads(out)["budgets"]}
    day = lines[("claims-intake", "day")]
    assert day["budget_usd"] == "500" and day["blocked"] is True and day["block_reason"] == "manual stop"

    assert Decimal(day["remaining_usd"]) == Decimal("500") - Decimal(day["spent_usd"]) - Decimal(day["reserved_usd"])
    # the recordings are dated 2026-11-20 and are booked then: nothing lands on today's counter
    assert Decimal(day["forecast_usd"]) == Decimal(day["spent_usd"]) == 0
    assert lines[("claims-intake", "month")]["budget_usd"] == "9000"
    code, out, _ = run("budget", "status", "--ledger", ledger, "--policies", str(ROOT / "policies"))
    assert code == 0 and "BLOCKED" in out
