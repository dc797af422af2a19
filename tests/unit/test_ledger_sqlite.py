"""SQLite-only ledger behaviour: files, schema versions, URLs and many processes on one file.

What every backend must do is in tests/functional/test_ledger_contract.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger, open_ledger
from costguard.ledger.sqlite import SCHEMA_VERSION
from costguard.usage import LeaseSettle, PeriodLimit
from tests.support.ledger_data import segment
from tests.support.workers import run_processes, run_threads


def test_corrupt_file_is_a_ledger_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="bad.db"):
        SQLiteLedger(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    led = SQLiteLedger(tmp_path / "l.db")
    led.connection().execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    led.close()
    with pytest.raises(LedgerError, match="newer costguard"):
        SQLiteLedger(tmp_path / "l.db")


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    led = open_ledger(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(led, SQLiteLedger) and led.path == tmp_path / "a.db"
    assert open_ledger(led) is led
    led.close()
    monkeypatch.chdir(tmp_path)
    rel = open_ledger("sqlite:///rel.db")
    assert isinstance(rel, SQLiteLedger) and rel.path == Path("rel.db")
    rel.close()
    monkeypatch.setenv("COSTGUARD_LEDGER", f"sqlite:///{tmp_path}/env.db")
    env = open_ledger(None)
    assert isinstance(env, SQLiteLedger) and env.path == tmp_path / "env.db"
    env.close()
    for bad in ("sqlite:///", "ftp://x", "sqlite://host/x"):
        with pytest.raises(LedgerError):
            open_ledger(bad)
    with pytest.raises(LedgerError, match="unknown parameter"):
        open_ledger("dynamodb://table?bogus=1")


def _spend(path: str, workflow: str, rounds: int, amount: int) -> None:
    led = SQLiteLedger(path)
    for _ in range(rounds):
        result = led.reserve(workflow, [PeriodLimit("day:2026-11-22", 50_000)], amount)
        if result.ok:
            led.record(segment(uuid.uuid4().hex, amount, session=uuid.uuid4().hex, workflow=workflow, reservation=result.reservation))
    led.close()


def _check_budget_invariants(path: Path, workflow: str, *, calls: int, amount: int) -> None:
    led = SQLiteLedger(path)
    conn = led.connection()
    spent, reserved = conn.execute(
        "SELECT spent_nanos, reserved_nanos FROM budget_counters WHERE workflow = ? AND period = 'day:2026-11-22'",
        (workflow,),
    ).fetchone()
    rows, recorded = conn.execute("SELECT COUNT(*), SUM(cost_nanos) FROM model_calls WHERE workflow = ?", (workflow,)).fetchone()
    led.close()
    # THEN the budget filled to the last whole call that fits, no increment was lost and nothing
    # is left reserved
    assert (rows, spent, recorded, reserved) == (calls, calls * amount, calls * amount, 0)


def test_threads_sharing_one_budget_never_lose_an_increment(tmp_path: Path) -> None:
    # GIVEN 8 threads asking 40 times each for 700 nano-dollars of a 50,000 budget (224,000 asked)
    path = tmp_path / "shared.db"
    SQLiteLedger(path).close()
    # WHEN they all run at once, every one of them to the end
    run_threads(_spend, [(str(path), "wf", 40, 700)] * 8, start_together=True)
    # THEN exactly 71 calls were granted: 71 * 700 = 49,700 <= 50,000 < 72 * 700
    _check_budget_invariants(path, "wf", calls=71, amount=700)


def test_processes_sharing_one_budget_never_lose_an_increment(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteLedger(path).close()
    run_processes(_spend, [(str(path), "wf", 30, 900)] * 4, timeout_s=60)
    # 55 * 900 = 49,500 <= 50,000 < 56 * 900
    _check_budget_invariants(path, "wf", calls=55, amount=900)


def _tables(ledger: SQLiteLedger) -> dict[str, list[tuple[object, ...]]]:
    """Every usage, budget and rollup table, rows sorted, without generated row ids or lease ids."""
    conn = ledger.connection()
    queries = {
        "requests": "SELECT * FROM requests",
        "sessions": "SELECT * FROM sessions",
        "model_calls": "SELECT request_id, workflow, session_id, user_id, ts_ms, model_id, base_model_id, step_type, agent, "
        "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, priced, latency_ms, price_key, flags "
        "FROM model_calls",
        "tool_calls": "SELECT request_id, workflow, session_id, ts_ms, kind, name, agent, response_bytes, latency_ms FROM tool_calls",
        "budget_counters": "SELECT * FROM budget_counters",
        "budget_leases": "SELECT workflow, periods, amount_nanos FROM budget_leases",
        "rollup_calls": "SELECT * FROM rollup_calls",
        "rollup_requests": "SELECT * FROM rollup_requests",
    }
    return {name: sorted(conn.execute(sql).fetchall(), key=repr) for name, sql in queries.items()}


def test_a_batch_writes_what_its_segments_write_one_by_one(tmp_path: Path) -> None:
    # GIVEN a request in two segments (a checkpoint, then its end) around another request, each
    # settling spend against the same budget lease, as the background writer hands them over
    periods = (PeriodLimit("day:1970-01-01", 10_000), PeriodLimit("month:1970-01", None))
    ledgers = [SQLiteLedger(tmp_path / f"{name}.db") for name in ("one-by-one", "batched")]
    batches = []
    for ledger in ledgers:
        held = ledger.reserve("wf", periods, 5_000, owner="test", now_ms=1_000)
        assert held.ok and held.reservation is not None
        lease = held.reservation.lease_id
        first = segment("r1", 300, model_calls=3)
        first.status, first.keep_reservation = "running", True
        other = segment("r2", 200, session="s-2", model="other")
        last = segment("r1", 700, previous=first.totals, model_calls=2)
        for seg, release in ((first, 300), (other, 200), (last, 4_000)):
            seg.lease_settle = LeaseSettle("wf", tuple(p.period for p in periods), lease, seg.delta.cost_nanos, release)
        batches.append([first, other, last])
    # WHEN one ledger writes them one by one and the other as one batch
    for seg in batches[0]:
        ledgers[0].record(seg)
    ledgers[1].record_many(batches[1])
    # THEN every table holds the same: the request once with both segments counted, its
    # running totals, the session's sums, every call row, the budget spent and the lease's
    # release capped by what it held (4,500 asked for, 5,000 held), the rollups
    one_by_one, batched = (_tables(ledger) for ledger in ledgers)
    assert batched == one_by_one
    conn = ledgers[1].connection()
    assert conn.execute("SELECT segments, model_calls, cost_nanos FROM requests WHERE request_id = 'r1'").fetchone() == (2, 5, 1_000)
    assert conn.execute("SELECT spent_nanos, reserved_nanos FROM budget_counters WHERE period = 'day:1970-01-01'").fetchone() == (1_200, 500)
    assert conn.execute("SELECT amount_nanos FROM budget_leases").fetchone() == (500,)
    assert len(batched["model_calls"]) == 6
