"""8 processes x 50 sessions spending one daily budget through their slices (issue 11).

Each call costs exactly 49,000 nano-dollars (Nova Micro, $0.035 in / $0.14 out per 1M tokens;
1,000 in + 100 out = 35,000 + 14,000). The $0.05 budget holds 1,020 such calls; the processes
want 1,600. The documented bound (docs/ledgers.md): spend exceeds a limit only by calls that
cost more than their hold, and none does here once a call's cost is learned, so spend stays
within the limit; slices are returned at close, so nothing stays reserved; and the counter
equals the rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from costguard.ledger import open_ledger
from tests.faults.budget_child import CALLS_PER_SESSION, SESSIONS
from tests.faults.test_kill import ledger_url  # noqa: F401 - the SQLite / DynamoDB (moto server) fixture
from tests.support.wire import FakeBedrock

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 8
CALL_NANOS = 1_000 * 35 + 100 * 140
LIMIT_NANOS = 50_000_000


def test_eight_processes_share_a_budget_within_the_bound(ledger_url: str) -> None:  # noqa: F811
    assert CALL_NANOS == 49_000
    wanted = PROCESSES * SESSIONS * CALLS_PER_SESSION
    with FakeBedrock(pace_seconds=0) as fake:
        for _ in range(wanted):
            fake.queue_converse(1_000, 100)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        children = [
            subprocess.Popen([sys.executable, "-m", "tests.faults.budget_child", fake.url, ledger_url, str(n)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for n in range(PROCESSES)
        ]
        outputs = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    sent = sum(int(out.split()[1]) for out, _ in outputs)
    refused = sum(int(out.split()[3]) for out, _ in outputs)
    assert sent + refused == wanted and len(fake.requests) == sent
    ledger = open_ledger(ledger_url)
    try:
        (day,) = [c for c in ledger.budget_counters("wf") if c.period.startswith("day:")]
        recorded = sum(
            usage.cost_usd
            for n in range(PROCESSES)
            for s in range(SESSIONS)
            if (usage := ledger.session_usage(f"p{n}-s{s}")) is not None
        )
        # the counter equals the rows, every call sent was recorded, nothing is left reserved
        assert day.spent_nanos == int(recorded * 10**9) == sent * CALL_NANOS
        assert day.reserved_nanos == 0 and ledger.leases("wf") == []
        # within the limit, and the limit was used: at most one call's worth per process unspent
        assert day.spent_nanos <= LIMIT_NANOS
        assert LIMIT_NANOS - day.spent_nanos < PROCESSES * CALL_NANOS
    finally:
        ledger.close()
