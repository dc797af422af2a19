"""Global options, and the bad-input cases a new user hits first (every format of every command is
checked against its JSON in test_cli_formats.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costguard.cli import app
from costguard.ledger.sqlite import SQLiteLedger

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    ledger = f"sqlite:///{tmp_path_factory.mktemp('ledger')}/l.db"
    code, out, err = run("simulate", *RECORDINGS, "--policies", POLICIES, "--ledger", ledger, "--quiet")
    assert code == 0 and out == "", err
    return ledger


def test_report_date_filters(filled: str) -> None:
    code, out, _ = run("report", "--ledger", filled, "--since", "2000-01-01", "--until", "2000-01-31", "--format", "json")
    assert code == 0 and json.loads(out)["rows"] == []
    assert run("report", "--ledger", filled, "--since", "yesterday")[0] == 2
    assert run("report", "--ledger", filled, "--since", "2026-02-30")[0] == 2
    code, _, err = run("report", "--ledger", filled, "--since", "2026-03-02", "--until", "2026-03-01")
    assert code == 2 and "before" in err


def test_unknown_workflow_and_missing_policy_paths(filled: str, tmp_path: Path) -> None:
    code, _, err = run("report", "--ledger", filled, "--workflow", "no-such-flow")
    assert code == 2 and "no-such-flow" in err
    code, _, err = run("report", "--ledger", filled, "--format", "html", "--policies", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err
    code, _, err = run("budget", "status", "--ledger", filled, "--policies", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err


def test_empty_ledger_prints_an_empty_report_not_an_error(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/empty.db"
    SQLiteLedger(tmp_path / "empty.db").close()
    code, out, _ = run("report", "--ledger", ledger)
    assert code == 0 and "no usage" in out
    code, out, _ = run("budget", "status", "--ledger", ledger, "--format", "json")
    assert code == 0 and json.loads(out) == {"budgets": [], "leases": []}
    code, out, _ = run("budget", "status", "--ledger", ledger)
    assert code == 0 and "no budgets" in out


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--format", "json"),
        ("budget", "status"),
        ("budget", "block", "wf", "--reason", "x", "--force"),
        ("budget", "unblock", "wf", "--force"),
    ],
)
def test_corrupt_ledger_is_a_message_not_a_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite " * 300)
    code, out, err = run(*args, "--ledger", f"sqlite:///{corrupt}")
    assert code == 1 and "corrupt.db" in err and "Traceback" not in out + err


def test_unknown_formats_are_invalid_input(tmp_path: Path) -> None:
    # what each format shows is checked against the JSON in test_cli_formats.py
    ledger = f"sqlite:///{tmp_path}/l.db"
    for args in (
        ("simulate", RECORDINGS[0], "--policies", POLICIES, "--format", "yaml"),
        ("budget", "status", "--ledger", ledger, "--format", "csv"),
        ("pricing", "show", "--format", "xml"),
        ("report", "--ledger", ledger, "--format", "pdf"),
    ):
        code, _, err = run(*args)
        assert code == 2 and f"--format {args[-1]!r}: choose one of" in err, args
    code, out, _ = run("policy", "schema")
    assert code == 0 and "workflows" in json.loads(out)["properties"]


def test_global_ledger_and_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    global_ledger = f"sqlite:///{tmp_path}/global.db"
    env_ledger = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("COSTGUARD_LEDGER", env_ledger)
    # GIVEN a block through the global --ledger, given before the command
    code, out, _ = run("--ledger", global_ledger, "budget", "block", "wf", "--reason", "r", "--force")
    assert code == 0 and "blocked wf" in out
    # THEN the global ledger holds it and the environment's ledger does not
    assert "BLOCKED" in run("--ledger", global_ledger, "budget", "status")[1]
    assert "BLOCKED" not in run("budget", "status")[1]
    # a command's own --ledger wins over the global one
    assert "BLOCKED" not in run("--ledger", global_ledger, "budget", "status", "--ledger", env_ledger)[1]
    # --quiet silences commands that act, but not data
    code, out, err = run("--quiet", "budget", "unblock", "wf", "--ledger", global_ledger, "--force")
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
    assert run("budget", "block", "wf", "--reason", "  ", "--ledger", ledger, "--force")[0] == 2
    SQLiteLedger(tmp_path / "l.db").close()
    code, out, _ = run("budget", "unblock", "wf", "--ledger", ledger, "--force")
    assert code == 0 and "was not blocked" in out
