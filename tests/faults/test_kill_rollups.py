"""kill -9 of a metering process leaves rollups exactly equal to the rows it managed to write:
never ahead of them (a rollup of a write that was lost), never behind (rows not rolled up)."""

from __future__ import annotations

import time

from tests.faults.test_kill import FLUSH_S, ledger_url, seen_before_kill, start_child  # noqa: F401 - the fixture
from tests.functional.test_rollups import assert_rollups_match_rows
from tests.support.traces import agent_loop
from tests.support.wire import FakeBedrock


def test_kill_during_an_agent_stream_keeps_rollups_equal_to_rows(ledger_url: str) -> None:  # noqa: F811
    loop = agent_loop(40, tool_bytes=50)
    with FakeBedrock(pace_seconds=0.02) as fake:
        fake.queue_agent_response(loop.events)
        child = start_child(fake.url, ledger_url, "stream", pause_at=17)
        paused: list[float] = []

        def ready() -> bool:  # standing still after its 17th call, for more than a flush interval
            paused.append(time.monotonic())
            return paused[-1] - paused[0] > 3 * FLUSH_S

        seen_before_kill(child, 17, ready=ready)  # checkpoints every 5 calls: 15 written, 2 lost
    assert_rollups_match_rows(ledger_url)


def test_kill_during_a_converse_call_keeps_rollups_equal_to_rows(ledger_url: str) -> None:  # noqa: F811
    with FakeBedrock() as fake:
        for _ in range(4):
            fake.queue_converse(1_000, 100)
        fake.queue_converse(1_000, 100, delay=30)
        child = start_child(fake.url, ledger_url, "converse")
        reached: list[float] = []

        def ready() -> bool:  # the 5th call hangs; the writer has had time to write the first 4
            if len(fake.requests) >= 5 and not reached:
                reached.append(time.monotonic())
            return bool(reached) and time.monotonic() - reached[0] > 3 * FLUSH_S

        seen_before_kill(child, 4, ready=ready)
    assert_rollups_match_rows(ledger_url)
