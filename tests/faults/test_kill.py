"""kill -9 of a process mid-call: its budget hold comes back after the lease expires, the usage
it lost is at most one checkpoint or flush interval, and the budget counter equals the recorded
rows. The child writes through the background writer (flushing every 0.2 s, 0.05 s in ``burst``).

Before (issue: budget holds that expire): twenty kills of a Converse loop left $1.00 of a daily
budget reserved for good; a process killed after 21 model calls of an InvokeAgent stream
recorded nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from costguard.ledger import open_ledger
from costguard.ledger.base import Ledger
from costguard.ledger.dynamodb import create_table
from tests.support.ledger_data import moto_dynamodb_endpoint
from tests.support.traces import agent_loop
from tests.support.wire import FakeBedrock

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT_CALLS = 5  # kill_child.py's checkpoint interval


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    with moto_dynamodb_endpoint() as endpoint:
        # moto's backends outlive a server: a table of its own per test
        table = f"kill-{uuid.uuid4().hex[:12]}"
        create_table(table, client=boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1"))
        yield f"dynamodb://{table}?region=us-east-1&endpoint_url={endpoint}"


FLUSH_S = 0.2  # kill_child.py's write interval


def start_child(endpoint: str, ledger_url: str, mode: str, pause_at: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "COSTGUARD_PAUSE_AT": str(pause_at),
           "COSTGUARD_WRITE_INTERVAL_S": str(0.05 if mode == "burst" else FLUSH_S)}
    return subprocess.Popen([sys.executable, "-m", "tests.faults.kill_child", endpoint, ledger_url, mode],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def seen_before_kill(
    child: subprocess.Popen[str], until: int, timeout_s: float = 60, ready: Callable[[], bool] = lambda: True
) -> int:
    """Read the child's progress until it reports ``until`` calls and ``ready()``, then kill -9 it."""
    assert child.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = 0
    while seen < until:
        assert time.monotonic() < deadline, "the child made no progress"
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "child exited"
        seen = int(line.split()[1])
    while not ready():
        assert time.monotonic() < deadline, "the child never reached the point to kill it at"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    return seen


def settle_after_lease_expiry(ledger: Ledger) -> None:
    time.sleep(1.3)  # the child's lease_ttl_s is 1 s
    ledger.reclaim_expired_leases(int(time.time() * 1000))


def counter_and_rows(ledger: Ledger) -> tuple[int, int, int]:
    (day,) = [c for c in ledger.budget_counters("wf") if c.period.startswith("day:")]
    usage = ledger.session_usage("s-kill")
    assert usage is not None
    return day.reserved_nanos, day.spent_nanos, int(usage.cost_usd * 10**9)


def test_kill_during_a_converse_call_gives_the_hold_back_after_the_lease(ledger_url: str) -> None:
    with FakeBedrock() as fake:
        for _ in range(3):
            fake.queue_converse(1_000, 100)
        fake.queue_converse(1_000, 100, delay=30)  # the 4th call hangs: the kill lands mid-call
        child = start_child(fake.url, ledger_url, "converse")
        # killed once its 4th call has reached the endpoint, is waiting for the answer, and the
        # writer has had more than one interval to write the first three
        reached: list[float] = []

        def ready() -> bool:
            if len(fake.requests) >= 4 and not reached:
                reached.append(time.monotonic())
            return bool(reached) and time.monotonic() - reached[0] > 3 * FLUSH_S

        seen = seen_before_kill(child, 3, ready=ready)
    ledger = open_ledger(ledger_url)
    try:
        reserved, spent, recorded = counter_and_rows(ledger)
        assert reserved > 0  # the in-flight call's hold, left behind by the kill
        settle_after_lease_expiry(ledger)
        reserved, spent, recorded = counter_and_rows(ledger)
        assert reserved == 0
        # Nova Micro $0.035 in / $0.14 out per 1M: 1,000 in + 100 out = 49,000 nano-dollars a call
        assert spent == recorded == seen * (1_000 * 35 + 100 * 140) == 3 * 49_000
    finally:
        ledger.close()


def test_kill_during_an_agent_stream_loses_at_most_one_checkpoint(ledger_url: str) -> None:
    loop = agent_loop(40, tool_bytes=50)
    with FakeBedrock(pace_seconds=0.02) as fake:
        fake.queue_agent_response(loop.events)
        child = start_child(fake.url, ledger_url, "stream", pause_at=22)
        paused: list[float] = []

        def ready() -> bool:  # standing still after its 22nd call for more than a flush interval
            paused.append(time.monotonic())
            return paused[-1] - paused[0] > 3 * FLUSH_S

        seen = seen_before_kill(child, 22, ready=ready)
    ledger = open_ledger(ledger_url)
    try:
        settle_after_lease_expiry(ledger)
        reserved, spent, recorded = counter_and_rows(ledger)
        usage = ledger.session_usage("s-kill")
        assert usage is not None
        assert reserved == 0
        assert spent == recorded > 0
        # checkpoints every 5 model calls: of the 22 the meter had seen, the 20 checkpointed are kept
        assert seen - CHECKPOINT_CALLS < usage.model_calls <= seen
        assert usage.model_calls == 20
        assert usage.requests == 1  # checkpoints are segments of one request
    finally:
        ledger.close()


def test_kill_during_flushes_leaves_counters_equal_to_rows(ledger_url: str) -> None:
    """Calls as fast as they come, the writer flushing every 50 ms, killed at an arbitrary point:
    whatever reached the ledger arrived whole (counters == rows), and the slice comes back."""
    with FakeBedrock(pace_seconds=0) as fake:
        for _ in range(400):
            fake.queue_converse(1_000, 100)
        child = start_child(fake.url, ledger_url, "burst")
        seen = seen_before_kill(child, 120)
    ledger = open_ledger(ledger_url)
    try:
        settle_after_lease_expiry(ledger)
        reserved, spent, recorded = counter_and_rows(ledger)
        usage = ledger.session_usage("s-kill")
        assert usage is not None and reserved == 0
        assert spent == recorded == usage.model_calls * 49_000
        # lost: what the writer had not flushed yet, at most a few intervals of calls
        assert 0 < usage.model_calls <= seen
    finally:
        ledger.close()
