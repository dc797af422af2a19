"""Issue 13's findings, each as the CLI behaves now: what-ifs never touch real budgets, reads never
write, names are checked, tables fit, and `report` reads the shared DynamoDB ledger too.

Prices are the published Amazon Bedrock on-demand prices (https://aws.amazon.com/bedrock/pricing/,
us-east-1, as in the shipped catalog retrieved 2026-11-01), USD per 1M tokens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from costguard import __version__
from costguard.cli import app
from costguard.ledger.dynamodb import create_table
from costguard.ledger.sqlite import SQLiteLedger
from costguard.usage import BudgetCounter

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
LOG = str(ROOT / "examples" / "recordings" / "converse-session-log.jsonl")
AGENT_FILES = [r for r in RECORDINGS if not r.endswith("converse-session-log.jsonl")]
PER_MILLION = {  # (input, output) USD per 1M tokens, published
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (Decimal("3.00"), Decimal("15.00")),
    "anthropic.claude-3-opus-20240229-v1:0": (Decimal("15.00"), Decimal("75.00")),
}


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def log_costs() -> list[Decimal]:
    """What each record of the invocation log cost, from its token counts and the published prices."""
    costs = []
    for line in Path(LOG).read_text().splitlines():
        record = json.loads(line)
        price_in, price_out = PER_MILLION[record["modelId"]]
        tokens_in, tokens_out = record["input"]["inputTokenCount"], record["output"]["outputTokenCount"]
        costs.append((tokens_in * price_in + tokens_out * price_out) / 1_000_000)
    return costs


# -- 1. simulate: throwaway by default, --into at the recorded times, --budget-from read-only ----


def test_simulate_writes_no_real_ledger_and_prints_the_same_thing_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared.db"
    monkeypatch.setenv("COSTGUARD_LEDGER", f"sqlite:///{shared}")
    first = run("simulate", *RECORDINGS, "--policies", POLICIES, "--format", "json")
    second = run("simulate", *RECORDINGS, "--policies", POLICIES, "--format", "json")
    assert first[0] == 0 and first[1] == second[1]
    assert not shared.exists()
    doc = json.loads(first[1])
    log = next(f for f in doc["files"] if f["file"] == LOG)
    assert (log["model_calls_full"], log["model_calls_kept"]) == (46, 40)
    # the report of what was replayed comes with it: 3 agent requests and 40 Converse calls
    assert [(r["workflow"], r["requests"]) for r in doc["report"]["rows"]] == [("claims-intake", 43)]
    # and the README's main job (table output) is byte-for-byte repeatable too
    table = [run("simulate", *RECORDINGS, "--policies", POLICIES)[1] for _ in range(2)]
    assert table[0] == table[1] and "Spend by workflow" in table[0] and "Every cap hit, by rule" in table[0]


def test_into_books_usage_at_the_recorded_times(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("simulate", *RECORDINGS, "--policies", POLICIES, "--into", ledger, "-q")[0] == 0
    code, out, _ = run("report", "--ledger", ledger, "--group-by", "day", "--format", "json")
    assert code == 0 and [r["day"] for r in json.loads(out)["rows"]] == ["2026-11-20"]
    # the budget counters are the recorded day's and month's, not today's
    led = SQLiteLedger(tmp_path / "l.db", read_only=True)
    assert {c.period for c in led.budget_counters()} == {"day:2026-11-20", "month:2026-11"}
    led.close()


def test_a_bad_file_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"chunk": {"bytes": "aGk="}}\nnot json\n')
    target = tmp_path / "target.db"
    code, _, err = run("simulate", *RECORDINGS, str(broken), "--policies", POLICIES, "--into", f"sqlite:///{target}")
    assert code == 1 and "broken.jsonl:2" in err
    assert not target.exists()


def test_budget_from_seeds_todays_counters_and_leaves_the_source_alone(tmp_path: Path) -> None:
    # GIVEN a shared ledger where claims-intake has spent $499.90 of its $500 daily budget today
    source = tmp_path / "shared.db"
    today = datetime.now(UTC)
    spent = 499_900_000_000  # nano-dollars
    led = SQLiteLedger(source)
    led.seed_budget_counters([BudgetCounter("claims-intake", f"day:{today:%Y-%m-%d}", spent, 0)])
    led.close()
    before = source.read_bytes()
    # WHEN the recordings are replayed against it
    code, out, _ = run("simulate", *AGENT_FILES, "--policies", POLICIES, "--budget-from", f"sqlite:///{source}", "--format", "json")
    # THEN the daily budget caps the replay, and the shared ledger did not change
    assert code == 0
    rules = {r["rule"] for r in json.loads(out)["caps_by_rule"]}
    assert "budget.daily_usd" in rules
    assert source.read_bytes() == before
    check = SQLiteLedger(source, read_only=True)
    assert [(c.period, c.spent_nanos) for c in check.budget_counters()] == [(f"day:{today:%Y-%m-%d}", spent)]
    check.close()


# -- 6. every cap, by rule; shadow mode shows what it would have capped --------------------------


def test_every_cap_is_listed_by_rule_with_the_cost_it_avoided() -> None:
    code, out, _ = run("simulate", LOG, "--policies", POLICIES, "--format", "json")
    assert code == 0
    costs = log_costs()
    by_rule = {r["rule"]: r for r in json.loads(out)["caps_by_rule"]}
    # record 20 names Opus, off the allow-list; the session cap of 40 calls blocks records 42-46
    assert by_rule["models.allow"] == {"rule": "models.allow", "hits": 1, "files": 1, "model_calls_avoided": 1,
                                       "cost_avoided_usd": str(costs[19])}
    assert Decimal(by_rule["per_session.max_model_calls"]["cost_avoided_usd"]) == sum(costs[41:46], Decimal(0))
    assert by_rule["per_session.max_model_calls"]["hits"] == 5
    assert list(by_rule) == ["per_session.max_model_calls", "models.allow"]  # most avoided first


def test_shadow_workflow_shows_would_have_capped_figures_and_quiet_is_quiet() -> None:
    # support-triage runs in shadow mode and allows Nova models only: every Claude call would be refused
    code, out, err = run("simulate", LOG, "--policies", POLICIES, "--workflow", "support-triage", "--format", "json")
    assert code == 0 and "shadow violation" not in err
    doc = json.loads(out)
    assert doc["mode"] == "shadow" and doc["caps_by_rule"] == []  # nothing was blocked
    would = doc["would_have_capped"]
    assert [(r["rule"], r["hits"]) for r in would["caps_by_rule"]] == [("models.allow", 46)]
    assert Decimal(would["cost_avoided_usd"]) == sum(log_costs(), Decimal(0))
    code, out, err = run("simulate", LOG, "--policies", POLICIES, "--workflow", "support-triage")
    assert code == 0 and "would: models.allow" in out and "would have capped" in out
    code, out, err = run("simulate", LOG, "--policies", POLICIES, "--workflow", "support-triage", "-q")
    assert (code, out, err) == (0, "", "")


# -- 2. reads never write; malformed URLs are bad input -------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("report",),
        ("budget", "status"),
        ("budget", "unblock", "claims-intake", "--policies", POLICIES),
        ("reconcile", "--dry-run"),
        ("simulate", RECORDINGS[0], "--policies", POLICIES, "--budget-from"),
    ],
)
def test_read_commands_on_a_missing_ledger_fail_and_create_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    args = [*command, url] if command[-1] == "--budget-from" else [*command, "--ledger", url]
    code, out, err = run(*args)
    assert code == 1 and f"no ledger at {url}" in err and "Traceback" not in out + err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("url", ["sqlite://x.db", "postgres://db/x", "dynamodb://", "dynamodb://t?colour=red", "dynamodb://t/extra"])
def test_a_malformed_ledger_url_is_invalid_input(url: str) -> None:
    code, _, err = run("report", "--ledger", url)
    assert code == 2 and url in err


# -- 3. workflow names are checked ---------------------------------------------------------------


def test_block_needs_a_known_workflow_or_force(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    code, _, err = run("budget", "block", "no-such-wf", "--reason", "incident", "--ledger", ledger)
    assert code == 2 and "--policies" in err and "--force" in err
    code, _, err = run("budget", "block", "claims-intak", "--reason", "incident", "--ledger", ledger, "--policies", POLICIES)
    assert code == 2 and "did you mean 'claims-intake'?" in err
    assert not (tmp_path / "l.db").exists()
    assert run("budget", "block", "claims-intake", "--reason", "incident", "--ledger", ledger, "--policies", POLICIES)[0] == 0
    assert run("budget", "block", "batch-jobs", "--reason", "incident", "--ledger", ledger, "--force")[0] == 0
    code, _, err = run("budget", "unblock", "claims-intak", "--ledger", ledger, "--policies", POLICIES)
    assert code == 2 and "did you mean 'claims-intake'?" in err


def test_simulate_unknown_workflow_suggests_the_closest() -> None:
    code, _, err = run("simulate", RECORDINGS[0], "--policies", POLICIES, "--workflow", "claims-intak")
    assert code == 2 and "did you mean 'claims-intake'?" in err


# -- 4. tables at 80 columns, COLUMNS when piped, one money format ----------------------------------


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> str:
    ledger = f"sqlite:///{tmp_path_factory.mktemp('trust')}/l.db"
    assert run("simulate", *RECORDINGS, "--policies", POLICIES, "--into", ledger, "-q")[0] == 0
    return ledger


def _rounded(amount: Decimal, places: int) -> str:
    return f"${amount.quantize(Decimal(1).scaleb(-places)):,}"


@pytest.mark.parametrize("group_by", ["workflow", "day", "model", "user", "agent"])
def test_tables_fit_80_columns_and_never_cut_money_or_the_key(filled: str, group_by: str) -> None:
    code, out, _ = run("report", "--ledger", filled, "--group-by", group_by, "--format", "json")
    rows = json.loads(out)["rows"]
    code, out, _ = run("report", "--ledger", filled, "--group-by", group_by, env={"COLUMNS": "80"})
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    for row in rows:
        key = row[group_by] if row[group_by] is not None else "-"
        cost = Decimal(row["cost_usd"])
        assert key in out and _rounded(cost, 2 if cost >= 100 else 4 if cost >= Decimal("0.01") else 6) in out


def test_simulate_and_budget_status_fit_80_columns(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("budget", "block", "claims-intake", "--reason", "a runaway loop in production, see the incident channel",
               "--ledger", ledger, "--policies", POLICIES)[0] == 0
    for args in (("simulate", *RECORDINGS, "--policies", POLICIES),
                 ("simulate", LOG, "--policies", POLICIES, "--workflow", "support-triage"),
                 ("budget", "status", "--ledger", ledger, "--policies", POLICIES)):
        code, out, _ = run(*args, env={"COLUMNS": "80"})
        assert code == 0 and max(len(line) for line in out.splitlines()) <= 80 and "…" not in out, out
    # the switch's who, when and why are printed whole, below the table
    assert "BLOCKED by" in out and "incident channel" in out and "$9,000.00" in out and "$500.00" in out


def test_columns_is_respected_when_piped(filled: str) -> None:
    narrow = run("report", "--ledger", filled, env={"COLUMNS": "80"})[1]
    wide = run("report", "--ledger", filled, env={"COLUMNS": "200"})[1]
    assert max(len(line) for line in wide.splitlines()) > 80
    assert "not shown at 80 columns" in narrow and "cache write tokens" in narrow.split("not shown")[1]
    assert "not shown" not in wide and "cache" in wide


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("1234.5", "$1,234.50"),
        ("100", "$100.00"),
        ("99.99995", "$100.0000"),
        ("1.5745", "$1.5745"),
        ("0.012345", "$0.0123"),
        ("0.000003007", "$0.000003"),
        ("0", "$0.00"),
        ("-12.5", "-$12.5000"),
    ],
)
def test_one_money_format(amount: str, shown: str) -> None:
    from costguard.display import usd

    assert usd(Decimal(amount)) == shown


def test_json_keeps_exact_decimal_strings(filled: str) -> None:
    code, out, _ = run("report", "--ledger", filled, "--format", "json")
    row = json.loads(out)["rows"][0]
    # 3 agent requests and the 40 kept Converse calls, to the nano-dollar
    kept_log = sum(log_costs()[:19] + log_costs()[20:41], Decimal(0))
    code, sim, _ = run("simulate", *AGENT_FILES, "--policies", POLICIES, "--format", "json")
    agents = sum(Decimal(f["cost_kept_usd"]) for f in json.loads(sim)["files"])
    assert Decimal(row["cost_usd"]) == kept_log + agents and row["cost_usd"] == format(kept_log + agents, "f")


# -- 8. --version, --output, agent ids, who set a switch ---------------------------------------------


def test_version() -> None:
    assert run("--version") == (0, f"costguard {__version__}\n", "")


def test_output_infers_the_format_or_refuses(filled: str, tmp_path: Path) -> None:
    code, _, err = run("report", "--ledger", filled, "--output", str(tmp_path / "x.txt"))
    assert code == 2 and ".txt" in err and not (tmp_path / "x.txt").exists()
    for name, starts in (("r.csv", "workflow,"), ("r.json", "{"), ("r.md", "# costguard"), ("r.html", "<!DOCTYPE html>")):
        assert run("report", "--ledger", filled, "--output", str(tmp_path / name))[0] == 0
        assert (tmp_path / name).read_text().startswith(starts)
    code, _, err = run("report", "--ledger", filled, "--output", str(tmp_path / "r.csv"), "--format", "json")
    assert code == 2 and "csv" in err


def test_group_by_agent_shows_the_recorded_agent_id(filled: str) -> None:
    code, out, _ = run("report", "--ledger", filled, "--group-by", "agent", "--format", "json")
    rows = {r["agent"]: r for r in json.loads(out)["rows"]}
    # the three InvokeAgent recordings name agent CLAIMS01; the Converse log has no agent
    assert rows["CLAIMS01"]["requests"] == 3 and rows["(invoked agent)"]["requests"] == 40


def test_budget_status_shows_who_set_a_switch_and_when(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    ledger = f"sqlite:///{tmp_path}/l.db"
    assert run("budget", "block", "claims-intake", "--reason", "runaway loop", "--ledger", ledger, "--policies", POLICIES)[0] == 0
    code, out, _ = run("budget", "status", "--ledger", ledger, "--format", "json")
    line = json.loads(out)["budgets"][0]
    assert (line["blocked_by"], line["block_reason"]) == ("alice", "runaway loop")
    assert line["blocked_at"][:10] == f"{datetime.now(UTC):%Y-%m-%d}"
    code, out, _ = run("budget", "status", "--ledger", ledger, env={"COLUMNS": "200"})
    assert "BLOCKED by alice at " + f"{datetime.now(UTC):%Y-%m-%d}" in out


# -- 7. report on the shared DynamoDB ledger: the same figures as SQLite ------------------------


@pytest.fixture(scope="module")
def both_ledgers(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shipped recordings replayed into a SQLite file and into a DynamoDB table (moto)."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            env.setenv(key, value)
        create_table("shared", client=boto3.client("dynamodb", region_name="us-east-1"))
        sqlite = f"sqlite:///{tmp_path_factory.mktemp('pair')}/l.db"
        dynamodb = "dynamodb://shared?region=us-east-1"
        for target in (sqlite, dynamodb):
            assert run("simulate", *RECORDINGS, "--policies", POLICIES, "--into", target, "-q")[0] == 0
        yield sqlite, dynamodb


@pytest.mark.parametrize("group_by", ["workflow", "day", "model", "user", "agent"])
def test_dynamodb_report_matches_sqlite(both_ledgers: tuple[str, str], group_by: str) -> None:
    docs = []
    for target in both_ledgers:
        code, out, err = run("report", "--ledger", target, "--group-by", group_by, "--format", "json")
        assert code == 0, err
        doc = json.loads(out)
        doc["cost_per_request"] = sorted(doc["cost_per_request"], key=Decimal)
        for row in doc["rows"]:
            # wall-clock timings of two separate replays: present on both, equal by chance only
            for timing in ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms"):
                assert (timing in row) == (group_by == "workflow")
                row.pop(timing, None)
        docs.append(doc)
    assert docs[0] == docs[1]
    assert docs[0]["rows"]
    code, out, _ = run("report", "--ledger", both_ledgers[1], "--group-by", group_by, "--workflow", "claims-intake", "--format", "csv")
    assert code == 0 and out.startswith(group_by)


def test_dynamodb_read_commands_on_a_missing_table_create_nothing(both_ledgers: tuple[str, str]) -> None:
    missing = "dynamodb://nope?region=us-east-1"
    for command in (("report",), ("budget", "status")):
        code, _, err = run(*command, "--ledger", missing)
        assert code == 1 and "no ledger at dynamodb://nope" in err
    assert boto3.client("dynamodb", region_name="us-east-1").list_tables()["TableNames"] == ["shared"]
