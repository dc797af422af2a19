"""`report --group-by action`: which action groups are verbose and what the trim saved."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from costguard.cli import app
from costguard.ledger.sqlite import SQLiteLedger
from costguard.usage import ActionRecord
from tests.support.ledger_data import segment

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def action(name: str, before: int, after: int, outcome: str, ts_ms: int = 2_000) -> ActionRecord:
    return ActionRecord(ts_ms, "claims", name, "s-1", None, before, after, 3 if outcome == "trimmed" else 0,
                        10 if outcome == "trimmed" else 0, 0, outcome)


def test_action_report_ranks_verbose_tools_and_prices_the_saving(tmp_path: Path) -> None:
    # GIVEN a verbose search trimmed twice, one replaced, and a small lookup passed through
    path = tmp_path / "l.db"
    ledger = SQLiteLedger(path)
    ledger.record(segment("r-1", 1_000, workflow="claims", model=SONNET))
    for record in (
        action("claims GET /claims/search", 200_000, 4_000, "trimmed"),
        action("claims GET /claims/search", 180_000, 4_000, "trimmed"),
        action("claims GET /claims/search", 900_000, 300, "replaced"),
        action("claims.get_policy", 800, 800, "passed"),
    ):
        ledger.record_action(record)
    ledger.close()
    # WHEN the action report is asked for
    result = CliRunner().invoke(app, ["report", "--ledger", f"sqlite:///{path}", "--group-by", "action", "--format", "json"])
    # THEN the verbose action comes first with exact sizes and a priced estimate
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    search, lookup = doc["rows"]
    assert search["action"] == "claims GET /claims/search" and search["workflow"] == "claims"
    assert (search["invocations"], search["trimmed"], search["replaced"]) == (3, 2, 1)
    assert search["bytes_before"] == 1_280_000 and search["bytes_after"] == 8_300
    assert search["bytes_saved"] == 1_271_700 and search["max_bytes_before"] == 900_000
    assert search["est_tokens_saved"] == 1_271_700 // 4
    # Claude 3.5 Sonnet input: $3.00 per 1M tokens
    assert Decimal(search["est_input_usd_saved"]) == (Decimal(1_271_700 // 4) * 3 / 1_000_000).quantize(Decimal("0.000001"))
    assert lookup["bytes_saved"] == 0 and Decimal(lookup["est_input_usd_saved"]) == 0
    assert Decimal(doc["totals"]["est_input_usd_saved"]) == Decimal(search["est_input_usd_saved"])
    assert "workflow" not in doc["totals"] and "max_bytes_before" not in doc["totals"]
    for fmt in ("table", "csv", "markdown", "html"):
        shown = CliRunner().invoke(app, ["report", "--ledger", f"sqlite:///{path}", "--group-by", "action", "--format", fmt])
        assert shown.exit_code == 0 and "/claims/search" in shown.stdout


def test_action_report_on_a_ledger_without_actions_is_empty(tmp_path: Path) -> None:
    SQLiteLedger(tmp_path / "e.db").close()
    result = CliRunner().invoke(app, ["report", "--ledger", f"sqlite:///{tmp_path}/e.db", "--group-by", "action", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == []
