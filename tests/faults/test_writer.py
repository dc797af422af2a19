"""The background writer when the ledger fails, fills up or is asked to flush (issue 11).

A ledger that refuses writes keeps the rows queued, retries them in order and writes them when
it is back; the metric of the failure goes out; a ``deny`` workflow refuses its next call while
the ledger refuses writes; beyond ``max_pending`` the oldest rows are dropped and counted.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

import costguard
from costguard.cli import app
from costguard.errors import LedgerError
from costguard.ledger.sqlite import SQLiteLedger
from costguard.metrics import EMFMetricsSink
from costguard.meter.writer import UsageWriter
from costguard.policy import PolicySet
from costguard.usage import RequestSegment
from tests.support.wire import FakeBedrock

NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
CALL_NANOS = 1_000 * 35 + 100 * 140  # Nova Micro: $0.035 in / $0.14 out per 1M tokens


class FlakyLedger(SQLiteLedger):
    down = False
    batches: list[int]
    tries = 0  # calls to record_many, refused or not
    #: When set, a refused write first signals ``entered`` and waits for ``gate``: the test
    #: decides when an attempt that began while the ledger was down ends.
    gate: threading.Event | None = None
    entered: threading.Event | None = None

    def record_many(self, segments: Sequence[RequestSegment]) -> None:
        self.tries += 1
        if self.down:
            if self.gate is not None and self.entered is not None:
                self.entered.set()
                self.gate.wait(10)
            raise LedgerError("ledger unreachable")
        self.batches.append(len(segments))
        super().record_many(segments)


def flaky(tmp_path: Path) -> FlakyLedger:
    ledger = FlakyLedger(tmp_path / "l.db")
    ledger.batches = []
    return ledger


def policy(on_error: str) -> PolicySet:
    return PolicySet.from_yaml(f"version: 1\nworkflows:\n  wf:\n    on_ledger_error: {on_error}\n    budget: {{daily_usd: 10}}\n")


def converse(guard: costguard.Guard, fake: FakeBedrock, session: str = "s-1") -> None:
    fake.queue_converse(1_000, 100)
    guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id=session).converse(modelId=NOVA_MICRO, messages=MESSAGES)


def test_rows_wait_for_a_ledger_that_is_down_and_are_written_once_it_is_back(fake: FakeBedrock, tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    stream = io.StringIO()
    guard = costguard.Guard(policy("allow"), ledger=ledger, write_interval_s=0.05, metrics=EMFMetricsSink(stream=stream))
    converse(guard, fake)  # the slice is taken while the ledger is up
    ledger.down = True
    for _ in range(3):
        converse(guard, fake)
    guard.flush(timeout=0.5)  # allow: logged, not raised
    assert guard.writer is not None and guard.writer.failing and guard.writer.pending >= 3
    assert guard.ledger_gaps == 0  # nothing lost, only late
    errors = [json.loads(line) for line in stream.getvalue().splitlines() if "LedgerErrors" in line]
    assert errors and errors[0]["Workflow"] == "wf"
    ledger.down = False
    guard.flush()
    usage = guard.session_usage("s-1")
    assert (usage.model_calls, usage.requests) == (4, 4)
    assert int(usage.cost_usd * 10**9) == 4 * CALL_NANOS
    guard.close()
    (day,) = [c for c in SQLiteLedger(tmp_path / "l.db").budget_counters("wf") if c.period.startswith("day:")]
    assert (day.spent_nanos, day.reserved_nanos) == (4 * CALL_NANOS, 0)


def test_a_deny_workflow_refuses_calls_while_the_ledger_refuses_writes(fake: FakeBedrock, tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    guard = costguard.Guard(policy("deny"), ledger=ledger, write_interval_s=0.05)
    converse(guard, fake)
    ledger.down = True
    converse(guard, fake)  # its row cannot be written: the writer starts failing
    with pytest.raises(LedgerError):
        guard.flush(timeout=1.0)
    sent = len(fake.requests)
    with pytest.raises(LedgerError):
        guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1").converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert len(fake.requests) == sent == 2  # refused before it was sent
    fake.queue_converse(1_000, 100)  # (the unsent call's scripted answer, consumed below)
    ledger.down = False
    guard.flush()
    guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1").converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert guard.session_usage("s-1").model_calls == 3
    guard.close()


def bare_segment() -> RequestSegment:
    return RequestSegment("r", "wf", "s", None, "Converse", None, None, 0, 0, "ok", costguard.usage.Totals(), costguard.usage.Totals(), 0, 0, 0, 0, 0, None, [], [], [])


def test_a_flush_that_fails_leaves_the_writer_backing_off_not_retrying_without_pause(tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    ledger.down = True
    writer = UsageWriter(ledger, interval_s=0.05)
    writer.submit(bare_segment())
    assert writer.flush(timeout=0.3) is False
    before, started = ledger.tries, time.monotonic()
    time.sleep(0.5)
    elapsed = time.monotonic() - started
    # backoff from 0.05 s, doubling: about log2(elapsed / 0.05) tries (three in half a second),
    # where a writer retrying without pause makes thousands
    assert 1 <= ledger.tries - before <= 2 + math.ceil(math.log2(1 + elapsed / 0.05))
    ledger.down = False
    assert writer.flush(timeout=5) is True
    assert ledger.batches == [1] and writer.last_error is None
    writer.close()


def test_an_attempt_begun_while_the_ledger_was_down_does_not_fail_a_later_flush(tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    ledger.down = True
    ledger.gate, ledger.entered = threading.Event(), threading.Event()
    writer = UsageWriter(ledger, interval_s=0.05)
    writer.submit(bare_segment(), deny=True)
    assert ledger.entered.wait(5)  # an attempt is under way, and will be refused
    ledger.down = False
    release = threading.Timer(0.2, ledger.gate.set)
    release.start()
    try:
        # the flush is answered by an attempt that begins after it, at once, not after a backoff
        started = time.monotonic()
        assert writer.flush(timeout=5) is True
        assert time.monotonic() - started < 2
    finally:
        release.cancel()
        ledger.gate.set()
    assert ledger.batches == [1] and writer.last_error is None and not writer.failing_deny
    writer.close()


def test_beyond_max_pending_the_oldest_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    ledger.down = True
    dropped: list[int] = []
    writer = UsageWriter(ledger, interval_s=60, max_rows=10_000, max_pending=5, on_dropped=dropped.append)
    segment = bare_segment()
    for _ in range(8):
        writer.submit(segment)
    assert writer.pending == 5 and writer.dropped == 3 and sum(dropped) == 3
    writer.abandon()


def test_batches_form_at_the_row_limit_and_at_the_interval(fake: FakeBedrock, tmp_path: Path) -> None:
    ledger = flaky(tmp_path)
    guard = costguard.Guard(policy("allow"), ledger=ledger, write_interval_s=30, write_batch_rows=4)
    for n in range(8):
        converse(guard, fake, session=f"s-{n}")
    deadline = time.monotonic() + 5
    while sum(ledger.batches) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    # the 30 s interval never came: two batches of 4 rows, written because of the row limit
    assert ledger.batches == [4, 4]
    guard.close()
    (tmp_path / "q").mkdir()
    quick = flaky(tmp_path / "q")
    guard = costguard.Guard(policy("allow"), ledger=quick, write_interval_s=0.1)
    converse(guard, fake)
    deadline = time.monotonic() + 5
    while not quick.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quick.batches == [1]  # written by the interval, with no flush
    guard.close()


def test_budget_status_lists_live_and_expired_leases(fake: FakeBedrock, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    guard = costguard.Guard(policy("allow"), ledger=url, lease_ttl_s=0.5)
    converse(guard, fake)
    guard.flush()
    out = CliRunner().invoke(app, ["budget", "status", "--ledger", url, "--format", "json"]).stdout
    (lease,) = json.loads(out)["leases"]
    assert lease["state"] == "live" and lease["owner"] == guard.lease_owner and lease["workflow"] == "wf"
    held = lease["held_usd"]
    guard.writer.abandon()  # type: ignore[union-attr] - the process "dies": nobody renews the lease
    time.sleep(0.6)
    (lease,) = json.loads(CliRunner().invoke(app, ["budget", "status", "--ledger", url, "--format", "json"]).stdout)["leases"]
    assert lease["state"] == "expired" and lease["held_usd"] == held
    table = CliRunner().invoke(app, ["budget", "status", "--ledger", url], env={"COLUMNS": "200"}).stdout
    assert "expired" in table and guard.lease_owner in table
    SQLiteLedger(tmp_path / "l.db").reclaim_expired_leases(int(time.time() * 1000))
    assert json.loads(CliRunner().invoke(app, ["budget", "status", "--ledger", url, "--format", "json"]).stdout)["leases"] == []


def test_a_forked_child_spends_from_slices_of_its_own(fake: FakeBedrock, tmp_path: Path) -> None:
    """One lease must never have two spenders: a child forked from a process holding a slice
    takes its own (with its own owner), and both settle exactly."""
    import os

    url = f"sqlite:///{tmp_path}/l.db"
    guard = costguard.Guard(policy("allow"), ledger=url)
    converse(guard, fake)
    guard.flush()
    parent_owner = guard.lease_owner
    fake.queue_converse(1_000, 100)
    pid = os.fork()
    if pid == 0:  # the child: one call, then out, flushing its writer and returning its slice
        code = 0
        try:
            guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-child").converse(
                modelId=NOVA_MICRO, messages=MESSAGES)
            code = 0 if guard.lease_owner != parent_owner else 3
            guard.close()
        except BaseException:  # noqa: BLE001 - the child reports through its exit code
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    guard.close()
    ledger = SQLiteLedger(tmp_path / "l.db")
    (day,) = [c for c in ledger.budget_counters("wf") if c.period.startswith("day:")]
    assert (day.spent_nanos, day.reserved_nanos) == (2 * CALL_NANOS, 0) and ledger.leases() == []


def test_a_living_process_keeps_its_slice_past_the_lease_ttl_and_an_idle_one_gives_it_back(
    fake: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costguard.meter import slices

    url = f"sqlite:///{tmp_path}/l.db"
    guard = costguard.Guard(policy("allow"), ledger=url, lease_ttl_s=0.6, write_interval_s=0.05)
    converse(guard, fake)
    guard.flush()
    time.sleep(1.5)  # 2.5 TTLs: the writer renews the slice's lease while the process lives
    ledger = SQLiteLedger(tmp_path / "l.db")
    assert ledger.reclaim_expired_leases(int(time.time() * 1000)) == 0
    (lease,) = ledger.leases("wf")
    assert lease.owner == guard.lease_owner and lease.expires_at_ms > time.time() * 1000
    # idle for longer than SLICE_IDLE_S: the slice goes back by itself, spend stays counted
    monkeypatch.setattr(slices, "SLICE_IDLE_S", 0.2)
    deadline = time.monotonic() + 5
    while ledger.leases("wf") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.leases("wf") == []
    (day,) = [c for c in ledger.budget_counters("wf") if c.period.startswith("day:")]
    assert (day.spent_nanos, day.reserved_nanos) == (CALL_NANOS, 0)
    converse(guard, fake)  # and a new slice is taken when spend resumes
    guard.close()
    (day,) = [c for c in ledger.budget_counters("wf") if c.period.startswith("day:")]
    assert (day.spent_nanos, day.reserved_nanos) == (2 * CALL_NANOS, 0)
