"""What hostile inputs cost after issue 12's fixes: the figures behind tests/hostile.

* ``policy``: time to refuse a 20 MB policy file (``load_policies``), best of ROUNDS, and to
  load a file of 20,000 (empty) workflows, which must grow linearly;
* ``threads``: open file descriptors left after 500 short-lived threads each recorded a
  segment in one SQLite ledger (Linux: counted in /proc/self/fd);
* ``depth``: time of a whole guarded invocation on a 201 KB body nested 1,000 levels, under a
  16 KiB limit (withheld).

    python bench/hostile_inputs.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costguard.action_guard import action_guard  # noqa: E402
from costguard.errors import PolicyError  # noqa: E402
from costguard.ledger import SQLiteLedger  # noqa: E402
from costguard.policy import PolicySet, load_policies  # noqa: E402
from tests.support.ledger_data import segment  # noqa: E402


def best_ms(fn: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def bench_policy(folder: Path, rounds: int) -> None:
    path = folder / "huge.yaml"
    with path.open("w") as handle:
        handle.write("version: 1\n")
        line = "# " + "x" * 98 + "\n"
        handle.write(line * (20 * 1024 * 1024 // len(line)))

    def refuse() -> None:
        try:
            load_policies(path)
        except PolicyError:
            return
        raise AssertionError("a 20 MB policy file was accepted")

    print(f"policy: 20 MB file refused in {best_ms(refuse, rounds):.2f} ms")
    many = "version: 1\nworkflows: {" + ",".join(f"w{i}: {{}}" for i in range(20_000)) + "}"
    ms = best_ms(lambda: PolicySet.from_yaml(many), 1)
    print(f"policy: {len(many)} bytes with 20,000 workflows loaded in {ms:.0f} ms")


def bench_threads(folder: Path) -> None:
    ledger = SQLiteLedger(folder / "l.db")
    before = len(os.listdir("/proc/self/fd"))
    for batch in range(0, 500, 50):
        threads = [
            threading.Thread(target=ledger.record, args=(segment(f"r-{i}", 1, session=f"s-{i}"),))
            for i in range(batch, batch + 50)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    after = len(os.listdir("/proc/self/fd"))
    print(f"threads: 500 short-lived threads left {after - before} more open fds")
    ledger.close()


def bench_depth(folder: Path, rounds: int) -> None:
    body = "[" * 1000 + json.dumps("x" * 201_000) + "]" * 1000
    policies = PolicySet.from_dict(
        {"version": 1, "workflows": {"bench": {"actions": {"g": {"max_response_bytes": 16384}}}}}
    )
    ledger = SQLiteLedger(folder / "a.db")

    @action_guard(policies, workflow="bench", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "messageVersion": "1.0",
            "response": {"actionGroup": "g", "function": "f", "functionResponse": {"responseBody": {"TEXT": {"body": body}}}},
        }

    event = {"messageVersion": "1.0", "actionGroup": "g", "function": "f", "sessionId": "s"}
    outcome = handler(event, None)["response"]["functionResponse"]["responseState"]
    ms = best_ms(lambda: handler(event, None), rounds)
    print(f"depth: guarded invocation on {len(body)} bytes nested 1,000 deep: {ms:.2f} ms, response state {outcome}")
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_policy(Path(folder), args.rounds)
        if Path("/proc/self/fd").is_dir():
            bench_threads(Path(folder))
        bench_depth(Path(folder), args.rounds)


if __name__ == "__main__":
    main()
