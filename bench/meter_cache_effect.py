"""Why the meter costs more inside a real client than alone: the same metered call, hot and cold.

``bench/meter_overhead.py`` measures the meter in place, between botocore's parsing of one
response (or event) and the next. There it costs several times what it costs when the same
calls run back to back. This script shows where that factor comes from, with no network and no
botocore parsing: a client whose method returns a prepared response (a Converse answer; an
InvokeAgent stream of a 40-step loop, 42 model calls), wrapped by a ``costguard.Guard`` with the
same policy as ``meter_overhead.py`` (SQLite ledger, budgets and caps enforcing), is called

- **hot**: back to back, so the meter's code and data stay in the CPU caches;
- **cold**: before each call, something else touches ``--sweep-mib`` of memory and parses a JSON
  document, as a client's HTTP stack and response parser do between two calls.

An InvokeAgent stream's events are metered back to back here; in a real client botocore parses
each event in between (about 35 us of Python per event on the bench machine), which a data sweep
between events does not reproduce (tried: 256 KiB and a JSON parse per event moved it by 4 %).
So the InvokeAgent line shows the per-request part only; ``meter_overhead.py`` has the rest.

Beside it, the same for the bench's floor reader (the least Python that reads the usage: see
``meter_overhead.floor_requester``). Wall time per call on the calling thread (``perf_counter``:
a CPU-bound thread; ``thread_time`` is a system call here and would cool the caches itself).
Ledger writes happen on the writer thread and are not in these figures. No target: a diagnosis.

    python bench/meter_cache_effect.py [--calls 300] [--sweep-mib 16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costguard  # noqa: E402
from bench.guarded_workflow import POLICY  # noqa: E402
from bench.meter_overhead import floor_requester, requester  # noqa: E402
from costguard.policy import PolicySet  # noqa: E402
from tests.support.traces import agent_loop  # noqa: E402

CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "x" * 1200}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 1200, "outputTokens": 300, "totalTokens": 1500},
    "metrics": {"latencyMs": 100},
    "ResponseMetadata": {"HTTPStatusCode": 200},
}


class PreparedStream:
    """An event stream over prepared events (``PreparedClient.prepare`` makes them fresh for each
    call, as a real stream's are)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._events)

    def close(self) -> None:
        pass


class PreparedClient:
    """Answers every call with the prepared response; ``meta`` is a real client's, so the guard
    sees the service, region and event hooks it would see on a boto3 client."""

    def __init__(self, real: Any, agent_events: bytes) -> None:
        self.meta = real.meta
        self._agent_events = agent_events
        self.next_events: list[dict[str, Any]] = []

    def prepare(self) -> None:
        """Fresh event objects for the next InvokeAgent call (outside the timed window)."""
        self.next_events = pickle.loads(self._agent_events)

    def converse(self, **kwargs: Any) -> dict[str, Any]:
        return dict(CONVERSE_RESPONSE)

    def invoke_agent(self, **kwargs: Any) -> dict[str, Any]:
        return {"completion": PreparedStream(self.next_events), "ResponseMetadata": {"HTTPStatusCode": 200}}


def per_call_us(send: Callable[[int], None], before: Callable[[], None], calls: int) -> float:
    clock = time.perf_counter_ns
    total = 0
    for n in range(calls):
        before()
        start = clock()
        send(n)
        total += clock() - start
    return total / calls / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per measurement (default 300)")
    parser.add_argument("--sweep-mib", type=int, default=16, help="memory touched between cold calls (default 16 MiB)")
    parser.add_argument("--quick", action="store_true", help="a few calls, to check the bench runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.sweep_mib = 5, 1

    import boto3

    sweep = bytearray(args.sweep_mib * 2**20)
    line_marks = b"\1" * len(sweep[::64])
    document = json.dumps({f"k{i}": {"a": [1, 2, 3], "b": "x" * 50} for i in range(2000)})
    events = pickle.dumps(agent_loop(40, tool_bytes=1200).events)
    print(f"{args.calls} calls per figure; cold: {args.sweep_mib} MiB touched and a {len(document) // 1024} KiB JSON "
          "document parsed between calls; microseconds per call on the calling thread")
    print(f"{'call':<26} {'side':<8} {'hot us':>9} {'cold us':>9} {'cold/hot':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=f"sqlite:///{scratch}/bench.db")
        try:
            for api, service in (("Converse", "bedrock-runtime"), ("InvokeAgent", "bedrock-agent-runtime")):
                real = boto3.client(service, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
                client = PreparedClient(real, events)
                binding = {"session_id": "bench-session"} if api == "Converse" else {}
                sides = {
                    "floor": floor_requester(api, client),
                    "metered": requester(api, guard.wrap(client, workflow="bench", **binding)),
                }

                def hot(client: PreparedClient = client) -> None:
                    client.prepare()

                def cold(client: PreparedClient = client) -> None:
                    client.prepare()
                    sweep[::64] = line_marks
                    json.loads(document)

                label = "Converse (1 model call)" if api == "Converse" else "InvokeAgent (42 calls)"
                for side, send in sides.items():
                    per_call_us(send, hot, max(5, args.calls // 5))  # warm-up
                    hot_us = min(per_call_us(send, hot, args.calls) for _ in range(2))
                    cold_us = min(per_call_us(send, cold, args.calls) for _ in range(2))
                    print(f"{label:<26} {side:<8} {hot_us:>9.1f} {cold_us:>9.1f} {cold_us / hot_us:>8.2f}x", flush=True)
        finally:
            guard.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
