"""The SQLite ledger under thread churn and fd exhaustion.

Before (issue 12): one connection per thread, kept forever: 500 short-lived threads left about
1,000 open file descriptors, and with the fd limit at 256, 178 of 300 calls went through
unmetered. After: a bounded pool, and every storage failure is a LedgerError.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger
from costguard.ledger.sqlite import DEFAULT_MAX_CONNECTIONS
from costguard.usage import PeriodLimit
from tests.support.ledger_data import segment

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_500_short_lived_threads_leave_a_bounded_number_of_fds(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    before = open_fds()
    errors: list[BaseException] = []

    def one_call(index: int) -> None:
        try:
            ledger.record(segment(f"r-{index}", 10, session=f"s-{index}"))
            assert ledger.session_totals(f"s-{index}").cost_nanos == 10
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    for batch in range(0, 500, 50):  # 50 alive at once, 500 in all
        threads = [threading.Thread(target=one_call, args=(i,)) for i in range(batch, batch + 50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    # each pooled connection holds the db, its -wal and its -shm: 3 fds
    assert open_fds() - before <= 3 * DEFAULT_MAX_CONNECTIONS
    assert ledger.budget_counters() == [] and len(ledger.violations()) == 0
    assert sum(ledger.session_totals(f"s-{i}").cost_nanos for i in range(500)) == 5_000
    ledger.close()
    assert open_fds() <= before


def test_more_threads_than_connections_wait_their_turn(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db", max_connections=2)
    before = open_fds()
    period = PeriodLimit("day:2026-11-22", None)
    results: list[bool] = []

    def reserve() -> None:
        results.append(ledger.reserve("wf", [period], 7).ok)

    threads = [threading.Thread(target=reserve) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 40
    assert [(c.period, c.reserved_nanos) for c in ledger.budget_counters("wf")] == [("day:2026-11-22", 280)]
    assert open_fds() - before <= 3 * 2
    ledger.close()


def test_a_closed_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.session_totals("s")
    with pytest.raises(LedgerError, match="closed"):
        ledger.connection()


def test_values_sqlite_cannot_bind_are_ledger_errors(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    with pytest.raises(LedgerError):
        ledger.record(segment("r-big", 2**64))  # beyond SQLite's 64-bit INTEGER
    with pytest.raises(LedgerError):
        ledger.session_totals("\ud800")
    # the failed write left nothing half-done and the pool still works
    ledger.record(segment("r-ok", 5))
    assert ledger.session_totals("s-1").cost_nanos == 5
    ledger.close()


_EMFILE_SCRIPT = textwrap.dedent(
    """
    import os, resource, sys
    from costguard.errors import LedgerError
    from costguard.ledger import SQLiteLedger

    path = sys.argv[1]
    ledger = SQLiteLedger(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    hog = []
    try:
        while True:
            hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    outcomes = []
    try:
        SQLiteLedger(path)
        outcomes.append("opened")
    except LedgerError:
        outcomes.append("LedgerError")
    with ledger._lease():  # the pooled connection is busy: the next call needs a new one
        try:
            ledger.session_totals("s")
            outcomes.append("read")
        except LedgerError:
            outcomes.append("LedgerError")
    for fd in hog[:20]:
        os.close(fd)
    outcomes.append(str(ledger.session_totals("s").cost_nanos))
    print(" ".join(outcomes))
    """
)


def test_fd_exhaustion_is_a_ledger_error_not_silence(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EMFILE_SCRIPT, str(tmp_path / "l.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["LedgerError", "LedgerError", "0"]
