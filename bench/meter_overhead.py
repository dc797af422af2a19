"""CPU the meter adds to a stock boto3 client: Guard.wrap vs the bare client, end to end.

For each API, a local endpoint in its own process (so it does not share the client's GIL or CPU
account) serves the same response over and over in the real wire format: InvokeAgent a loop of
``--steps`` action-group steps (40 steps: 42 model calls and ~165 event-stream events per
request), Converse one JSON answer. Three sides make the same warm-up requests, then ``--rounds``
rounds of ``--requests`` requests, the side that goes first rotating every round:

- **plain**: the bare client;
- **floor**: the bare client plus the least Python that reads what a meter must read (see
  :func:`floor_requester`), a reference for what any Python meter costs at the least;
- **wrapped**: the client wrapped by a ``costguard.Guard`` (SQLite ledger, budgets, per-request
  and per-session caps, all enforcing). Each of its rounds ends with ``guard.flush()``, so the
  rows its writer thread writes up to a second later are counted in that round.

The figure is CPU time of this process (``time.process_time``: the client's parsing plus
everything the meter does, including its ledger writes on the writer thread), not wall time.

Targets: wrapped/unwrapped CPU <= 1.05 for InvokeAgent and <= 1.10 for Converse. Exits 1 when a
target is missed, after printing every figure.

    python bench/meter_overhead.py [--requests 100] [--steps 40] [--rounds 6] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import costguard  # noqa: E402
from bench.guarded_workflow import POLICY  # noqa: E402
from costguard.policy import PolicySet  # noqa: E402
from tests.support.traces import agent_loop  # noqa: E402
from tests.support.wire import FakeBedrock  # noqa: E402

TARGETS = {"InvokeAgent": 1.05, "Converse": 1.10}
NOVA_MICRO = "amazon.nova-micro-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]


def serve(api: str, steps: int, total: int, conn: Connection) -> None:
    """The endpoint, in its own process: ``total`` identical responses for ``api``."""
    with FakeBedrock(pace_seconds=0) as fake:
        if api == "InvokeAgent":
            fake.queue_agent_response(agent_loop(steps, tool_bytes=1200).events, repeat=total)
        else:
            for _ in range(total):
                fake.queue_converse(1200, 300)
        conn.send(fake.url)
        conn.recv()  # until the parent is done


def client_for(url: str, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service, endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}),
    )


def requester(api: str, client: Any) -> Callable[[int], None]:
    """One request of ``api`` through ``client`` (bare or wrapped: the same call either way)."""
    if api == "InvokeAgent":
        def invoke(n: int) -> None:
            response = client.invoke_agent(
                agentId="AGENT1", agentAliasId="ALIAS1", sessionId=f"s-{n % 50}", inputText="x", enableTrace=True
            )
            for _ in response["completion"]:
                pass
        return invoke

    def converse(n: int) -> None:
        client.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    return converse


def floor_requester(api: str, client: Any) -> Callable[[int], None]:
    """The bare client plus the least Python that reads what a meter must read, as a reference:
    per event, find the trace kind; per model call, add its tokens, price them with two integer
    multiplications and keep a tuple; per tool call and tool response, keep a tuple and a size.
    No caps, budgets, ledger or error handling: no meter written in Python can cost less. The
    integer rates are stand-ins (nano-dollars per token): what is measured is the arithmetic."""
    rows: list[tuple[Any, ...]] = []
    if api == "InvokeAgent":
        def invoke(n: int) -> None:
            response = client.invoke_agent(
                agentId="AGENT1", agentAliasId="ALIAS1", sessionId=f"s-{n % 50}", inputText="x", enableTrace=True
            )
            tokens = 0
            for event in response["completion"]:
                part = event.get("trace")
                if part is None:
                    continue
                for body in part["trace"].values():
                    if "modelInvocationOutput" in body:
                        out = body["modelInvocationOutput"]
                        usage = out["metadata"]["usage"]
                        i, o = usage["inputTokens"], usage["outputTokens"]
                        tokens += i + o
                        rows.append((out.get("traceId"), i, o, i * 3000 + o * 15000, time.time()))
                    elif "invocationInput" in body:
                        call = body["invocationInput"]
                        rows.append((call.get("traceId"), call.get("invocationType"), time.time()))
                    elif "observation" in body:
                        output = body["observation"].get("actionGroupInvocationOutput")
                        if output is not None:
                            rows.append((len(output["text"].encode()),))
            if len(rows) > 100_000:
                rows.clear()
        return invoke

    def converse(n: int) -> None:
        usage = client.converse(modelId=NOVA_MICRO, messages=MESSAGES)["usage"]
        i, o = usage["inputTokens"], usage["outputTokens"]
        rows.append((i, o, i * 35 + o * 140, time.time()))
        if len(rows) > 100_000:
            rows.clear()
    return converse


def cpu_seconds(send: Callable[[int], None], requests: int, settle: Callable[[], None] | None = None) -> float:
    """CPU of ``requests`` requests, plus ``settle`` (the wrapped side's ledger flush) inside the window."""
    start = time.process_time()
    for n in range(requests):
        send(n)
    if settle is not None:
        settle()
    return time.process_time() - start


SIDES = ("plain", "floor", "wrapped")


@dataclass
class Result:
    api: str
    model_calls_per_request: int
    times: dict[str, list[float]]
    ledger_model_calls: int

    def ratio(self, side: str = "wrapped") -> float:
        return sum(self.times[side]) / sum(self.times["plain"])

    def round_ratios(self, side: str = "wrapped") -> list[float]:
        return [w / p for w, p in zip(self.times[side], self.times["plain"], strict=True)]


def bench(api: str, args: argparse.Namespace) -> Result:
    per_side = args.warmup + args.requests * args.rounds
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(api, args.steps, len(SIDES) * per_side, child), daemon=True
    )
    server.start()
    try:
        url = parent.recv()
        service = "bedrock-agent-runtime" if api == "InvokeAgent" else "bedrock-runtime"
        with tempfile.TemporaryDirectory() as scratch:
            guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=f"sqlite:///{scratch}/bench.db")
            # Converse names no session of its own: the caller gives one, as an application would
            binding = {"session_id": "bench-session"} if api == "Converse" else {}
            wrapped_client = guard.wrap(client_for(url, service), workflow="bench", **binding)
            sides = {
                "plain": requester(api, client_for(url, service)),
                "floor": floor_requester(api, client_for(url, service)),
                "wrapped": requester(api, wrapped_client),
            }
            # The wrapped side's rows are written on the ledger writer's thread, up to a second
            # later: flushed inside its own round, so none of that CPU lands in the next round.
            settles = {"plain": None, "floor": None, "wrapped": guard.flush}
            for side, send in sides.items():  # the same warm-up on every side: connection pools, caches
                cpu_seconds(send, args.warmup, settles[side])
            times: dict[str, list[float]] = {side: [] for side in SIDES}
            for round_no in range(args.rounds):
                order = SIDES[round_no % len(SIDES):] + SIDES[:round_no % len(SIDES)]
                for side in order:
                    times[side].append(cpu_seconds(sides[side], args.requests, settles[side]))
                print(f"{api} round {round_no + 1} ({order[0]} first): "
                      + ", ".join(f"{side} {times[side][-1]:.3f} s CPU" for side in SIDES), flush=True)
            guard.flush()
            model_calls = guard.ledger.connection().execute("SELECT COUNT(*) FROM model_calls").fetchone()[0]  # type: ignore[attr-defined]
            guard.close()
    finally:
        parent.send("done")
        server.join(10)
    per_request = agent_loop(args.steps).model_calls if api == "InvokeAgent" else 1
    if model_calls != per_request * per_side:
        raise SystemExit(f"{api}: the ledger holds {model_calls} model calls, expected {per_request * per_side}")
    return Result(api, per_request, times, model_calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="requests per side per round (default 100)")
    parser.add_argument("--steps", type=int, default=40, help="InvokeAgent loop steps (default 40: 42 model calls)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up requests per side (default 10)")
    parser.add_argument("--api", choices=("InvokeAgent", "Converse", "both"), default="both", help="which API to measure (default both)")
    parser.add_argument("--quick", action="store_true", help="a few requests, to check the bench runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds, args.warmup, args.steps = 3, 2, 1, 3

    apis = ("InvokeAgent", "Converse") if args.api == "both" else (args.api,)
    results = [bench(api, args) for api in apis]
    print()
    met = True
    for r in results:
        per_req = lambda seconds: 1000 * statistics.median(seconds) / args.requests  # noqa: E731
        print(f"{r.api}: {r.model_calls_per_request} model calls per request, {args.rounds} alternating rounds of "
              f"{args.requests} requests per side; ledger rows checked: {r.ledger_model_calls} model calls")
        print("  " + ", ".join(f"{side} {per_req(r.times[side]):.3f}" for side in SIDES) + " ms CPU/request (median round)")
        for side in ("floor", "wrapped"):
            print(f"  {side}/unwrapped per round: {', '.join(f'{x:.3f}' for x in r.round_ratios(side))}")
        ok = r.ratio() <= TARGETS[r.api]
        met = met and ok
        print(f"{r.api} floor/unwrapped CPU: {r.ratio('floor'):.3f} (the least any Python meter could add)")
        print(f"{r.api} ratio wrapped/unwrapped CPU: {r.ratio():.3f} (target <= {TARGETS[r.api]:.2f}: {'MET' if ok else 'NOT MET'})")
    print()
    print(f"targets: {'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
