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
from costguard.usage import PeriodLimit
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
