"""Rollups stay equal to the rows they summarise: written through the meter (SQLite and DynamoDB on
a moto server), by threads sharing a ledger, and across an old ledger's one-time build."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import costguard
from costguard.cli import app
from costguard.ledger import SQLiteLedger, open_ledger
from costguard.policy import PolicySet
from costguard.reports import GROUP_BYS, ReportQuery
from costguard.usage import ViolationRecord
from tests.faults.test_kill import ledger_url  # noqa: F401 - the SQLite / DynamoDB (moto server) fixture
from tests.support.ledger_data import DAY_START_MS, segment
from tests.support.rollup_checks import assert_dynamodb_rollups_match_rows, assert_sqlite_rollups_match_rows, rollup_rows
from tests.support.traces import agent_loop
from tests.support.wire import FakeBedrock
from tests.support.workers import run_threads

DAY = 86_400_000
POLICY = "version: 1\nworkflows:\n  wf:\n    budget: {daily_usd: 1000}\n  other:\n    budget: {daily_usd: 1000}\n"
NOVA_MICRO = "amazon.nova-micro-v1:0"
# Nova Micro, us-east-1 on-demand: $0.035 per 1M input tokens, $0.14 per 1M output tokens.
NOVA_MICRO_NANOS_IN, NOVA_MICRO_NANOS_OUT = 35, 140


def assert_rollups_match_rows(url: str) -> None:
    if url.startswith("sqlite:///"):
        assert_sqlite_rollups_match_rows(url[len("sqlite:///"):])
        return
    ledger = open_ledger(url)
    try:
        assert assert_dynamodb_rollups_match_rows(ledger) > 0
    finally:
        ledger.close()


def test_converse_calls_through_the_meter_keep_rollups_equal_to_rows(ledger_url: str) -> None:  # noqa: F811
    with FakeBedrock() as fake:
        for n in range(6):
            fake.queue_converse(1_000 + n, 100)
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=ledger_url)
        runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1", user_id="u-1")
        for _ in range(6):
            runtime.converse(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "hi"}]}])
        guard.close()
    assert_rollups_match_rows(ledger_url)
    ledger = open_ledger(ledger_url, read_only=True)
    try:
        report = ledger.usage_report(ReportQuery("price-key"))
    finally:
        ledger.close()
    (row,) = report.rows
    expected = sum((1_000 + n) * NOVA_MICRO_NANOS_IN + 100 * NOVA_MICRO_NANOS_OUT for n in range(6))
    assert row["model"] == "amazon.nova-micro-v1:0"
    assert row["price_key"] is not None and row["price_key"].startswith("amazon.nova-micro-v1:0|us-east-1|")
    assert (row["requests"], row["model_calls"], int(row["cost_usd"] * 10**9)) == (6, 6, expected)


def test_an_agent_stream_through_the_meter_keeps_rollups_equal_to_rows(ledger_url: str) -> None:  # noqa: F811
    loop = agent_loop(12, tool_bytes=50)
    with FakeBedrock() as fake:
        fake.queue_agent_response(loop.events)
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=ledger_url, checkpoint_every_calls=5,
                                checkpoint_every_s=3600)
        agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", user_id="u-2")
        response = agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-agent", inputText="hi")
        for _ in response["completion"]:
            pass
        guard.close()
    assert_rollups_match_rows(ledger_url)


def test_threads_sharing_a_ledger_keep_rollups_equal_to_rows(ledger_url: str) -> None:  # noqa: F811
    with FakeBedrock() as fake:
        for n in range(8 * 5):
            fake.queue_converse(500 + n, 50)
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=ledger_url)

        def worker(n: int) -> None:
            runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf" if n % 2 else "other",
                                 session_id=f"s-{n}", user_id=f"u-{n % 3}")
            for _ in range(5):
                runtime.converse(modelId=NOVA_MICRO, messages=[{"role": "user", "content": [{"text": "hi"}]}])

        run_threads(worker, [(n,) for n in range(8)], start_together=True)
        guard.close()
    assert_rollups_match_rows(ledger_url)
    ledger = open_ledger(ledger_url, read_only=True)
    try:
        rows = {r["workflow"]: r for r in ledger.usage_report(ReportQuery("workflow")).rows}
    finally:
        ledger.close()
    expected = sum((500 + n) * NOVA_MICRO_NANOS_IN + 50 * NOVA_MICRO_NANOS_OUT for n in range(40))
    assert sum(int(r["cost_usd"] * 10**9) for r in rows.values()) == expected
    assert (rows["wf"]["sessions"], rows["wf"]["requests"], rows["other"]["requests"]) == (4, 20, 20)


def record_every_shape(ledger: SQLiteLedger) -> None:
    """Requests over five days in four workflows, two models, collaborators, price keys,
    continuations on the next day (of two requests of day 0), violations with and without a request."""
    for i in range(24):
        ts = DAY_START_MS + (i % 5) * DAY + 1_000 * i
        violations = [ViolationRecord(ts + 5, f"wf{i % 4}", f"s{i % 4}", f"r{i}", "k", "r", "1", "2", i % 8 == 0)] if i % 4 == 0 else None
        first = segment(f"r{i}", 1_000 + 7 * i, session=f"s{i % 4}", workflow=f"wf{i % 4}", ts_ms=ts, model=f"m{i % 2}",
                        model_calls=1 + i % 3, violations=violations)
        for j, call in enumerate(first.model_calls):
            call.price_key = f"m{i % 2}|us-east-1|{'geo' if j else 'global'}|standard|5m|standard|-"
            call.agent = None if j == 0 else "collaborator"
        ledger.record(first)
        if i in (0, 5):
            ledger.record(segment(f"r{i}", 333, session=f"s{i % 4}", workflow=f"wf{i % 4}", ts_ms=ts + DAY,
                                  previous=first.totals, model="m9"))
    ledger.record_violation(ViolationRecord(DAY_START_MS + 3, "wf9", None, None, "k", "r", "1", "2", True))
    ledger.record_violation(ViolationRecord(DAY_START_MS + 3, "wf1", "s1", "r1", "k", "r", "1", "2", False))


def test_rollups_equal_rows_for_every_grouping_window_and_workflow(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    record_every_shape(ledger)
    ledger.close()
    queries = [ReportQuery(g) for g in GROUP_BYS] + [ReportQuery(g, workflow="wf1") for g in GROUP_BYS]
    # A window whose requests all start and end inside it (the continuations are on day 1).
    queries += [ReportQuery(g, since_ms=DAY_START_MS + 2 * DAY, until_ms=DAY_START_MS + 5 * DAY) for g in GROUP_BYS]
    assert_sqlite_rollups_match_rows(tmp_path / "ledger.db", queries)


def test_a_continuation_counts_its_request_once_per_key_on_the_day_of_its_first_call(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    first = segment("r-1", 3_000, model="m", model_calls=3, ts_ms=DAY_START_MS + 1_000)
    ledger.record(first)
    second = segment("r-1", 1_000, model="m", ts_ms=DAY_START_MS + DAY + 1_000, previous=first.totals)
    ledger.record(second)
    third = segment("r-1", 500, model="n", ts_ms=DAY_START_MS + DAY + 2_000, previous=second.totals)
    ledger.record(third)
    ledger.close()
    day = DAY_START_MS // DAY
    calls = rollup_rows(tmp_path / "ledger.db")["rollup_calls"]
    models = [r for r in calls if r[0] == "model"]
    # dimension, day, workflow, key, variant, requests, calls, in, out, cache read, cache write, cost, unpriced
    assert models == [
        ("model", day, "wf", "m", "", 1, 3, 300, 30, 0, 0, 3_000, 0),
        ("model", day + 1, "wf", "m", "", 0, 1, 100, 10, 0, 0, 1_000, 0),
        ("model", day + 1, "wf", "n", "", 1, 1, 100, 10, 0, 0, 500, 0),
    ]
    requests = rollup_rows(tmp_path / "ledger.db")["rollup_requests"]
    # every segment adds to the request's start day, as the request row keeps its first start
    assert requests == [(day, "wf", "=u-1", "=s-1", 1, 5, 3, 500, 50, 0, 0, 4_500, 1_500, 0, 0)]


def make_old_ledger(path: Path) -> None:
    """A ledger as costguard wrote it before rollups: rows, schema 1, no rollup tables."""
    ledger = SQLiteLedger(path)
    record_every_shape(ledger)
    ledger.close()
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TABLE rollup_calls; DROP TABLE rollup_requests; DELETE FROM meta WHERE key = 'rollups'; "
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.close()


def test_an_old_ledger_is_read_from_its_rows_then_built_once_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_old_ledger(path)
    reader = SQLiteLedger(path, read_only=True)  # a report on an old ledger builds nothing
    try:
        before = {g: reader.usage_report(ReportQuery(g)).to_json_dict() for g in GROUP_BYS}
    finally:
        reader.close()
    steps: list[tuple[str, int, int]] = []
    SQLiteLedger(path, rollup_progress=lambda step, done, total: steps.append((step, done, total))).close()
    assert [s[1] for s in steps] == list(range(len(steps)))
    assert steps[-1] == ("done", len(steps) - 1, len(steps) - 1)
    SQLiteLedger(path, rollup_progress=lambda *a: steps.append(a)).close()  # once only
    assert len(steps) == steps[-1][2] + 1
    assert_sqlite_rollups_match_rows(path)
    reader = SQLiteLedger(path, read_only=True)
    try:
        assert {g: reader.usage_report(ReportQuery(g)).to_json_dict() for g in GROUP_BYS} == before
    finally:
        reader.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    conn.close()


def test_cli_report_by_price_key(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    record_every_shape(ledger)
    ledger.close()
    result = CliRunner().invoke(app, ["report", "--ledger", f"sqlite:///{tmp_path}/ledger.db", "--group-by", "price-key",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("price_key,model,requests,model_calls,input_tokens,output_tokens,cache_read_tokens,"
                        "cache_write_tokens,cost_usd")
    by_key = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    # the 2 continuations' calls were priced before price keys: no label, their model only
    assert by_key[""][1:4] == ["m9", "2", "2"]
    assert by_key[""][-1] == "0.000000666"
    assert set(by_key) == {"", "m0|us-east-1|global|standard|5m|standard|-", "m0|us-east-1|geo|standard|5m|standard|-",
                           "m1|us-east-1|global|standard|5m|standard|-", "m1|us-east-1|geo|standard|5m|standard|-"}


def test_a_command_that_writes_to_an_old_ledger_shows_the_rollup_build(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_old_ledger(path)
    result = CliRunner().invoke(app, ["budget", "block", "wf", "--reason", "test", "--force",
                                      "--ledger", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("building report rollups")]
    assert lines and lines[-1].endswith(")") and "done" in lines[-1]
    assert_sqlite_rollups_match_rows(path)
    # once only: a second write open builds nothing
    again = CliRunner().invoke(app, ["budget", "unblock", "wf", "--force", "--ledger", f"sqlite:///{path}"])
    assert again.exit_code == 0 and "building report rollups" not in again.stderr
