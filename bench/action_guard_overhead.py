"""Per-invocation overhead of ``action_guard`` on a 200 KB JSON action response, side by side.

Two cases, each measured guarded and unguarded in alternating rounds of INVOCATIONS calls (so
both see the same machine state), with a SQLite ledger in a temporary directory:

* ``trim``: a rule whose trim spec must act (keep a few fields, cap the list) on a 200 KB
  pretty-printed search result, under a 16 KiB limit: parse, project, re-serialise, record.
* ``passthrough``: no rule, a 1 MiB workflow limit: the body is measured and recorded, not parsed.

The handler serialises a prebuilt payload on every call (its own work, the same in both arms).
Prints the best round's ms per invocation for each arm, the overhead (guarded - unguarded) and
whether it is under the 5 ms target.

    python bench/action_guard_overhead.py [--invocations 200] [--rounds 5] [--kb 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costguard.action_guard import action_guard, utf8_len  # noqa: E402
from costguard.ledger import SQLiteLedger  # noqa: E402
from costguard.policy import PolicySet  # noqa: E402

TARGET_MS = 5.0

POLICY = """
version: 1
workflows:
  bench:
    per_request: {max_tool_response_bytes: 1048576}
    actions:
      "claims GET /claims":
        max_response_bytes: 16384
        trim:
          keep: ["items[].id", "items[].status", "items[].amount", "total"]
          drop: ["items[].raw"]
          max_list_items: 50
"""


def payload(target_kb: int) -> dict[str, Any]:
    """A search result of about ``target_kb`` KB pretty-printed, with accented text."""
    items: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"items": items, "total": 0}
    n = 0
    while True:
        items.append({
            "id": f"C-{n:06d}", "status": "open", "amount": n * 1.5,
            "claimant": {"name": "Renée Fournier", "city": "Zürich"},
            "notes": "Überprüfung der Unterlagen läuft. " * 3,
            "raw": {"blob": "x" * 120},
        })
        n += 1
        if n % 50 == 0 and utf8_len(json.dumps(doc, indent=2, ensure_ascii=False)) >= target_kb * 1000:
            doc["total"] = n
            return doc


def event(api_path: str, n: int) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "agent": {"name": "bench", "id": "AG1", "alias": "AL1", "version": "1"},
        "inputText": "search",
        "sessionId": f"bench-{n % 10}",
        "actionGroup": "claims",
        "apiPath": api_path,
        "httpMethod": "GET",
        "parameters": [{"name": "limit", "type": "integer", "value": "1000"}],
        "sessionAttributes": {},
        "promptSessionAttributes": {},
    }


def make_handler(doc: dict[str, Any]) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    def handler(e: dict[str, Any], context: Any) -> dict[str, Any]:
        return {
            "messageVersion": "1.0",
            "response": {
                "actionGroup": e["actionGroup"], "apiPath": e["apiPath"], "httpMethod": e["httpMethod"],
                "httpStatusCode": 200,
                "responseBody": {"application/json": {"body": json.dumps(doc, indent=2, ensure_ascii=False)}},
            },
        }

    return handler


def run(fn: Callable[[dict[str, Any], Any], Any], api_path: str, invocations: int) -> float:
    """Seconds per invocation over ``invocations`` calls."""
    events = [event(api_path, n) for n in range(invocations)]
    start = time.perf_counter()
    for e in events:
        fn(e, None)
    return (time.perf_counter() - start) / invocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kb", type=int, default=200, help="response size in KB (pretty-printed)")
    args = parser.parse_args()

    doc = payload(args.kb)
    plain = make_handler(doc)
    policies = PolicySet.from_yaml(POLICY, "bench-policy")
    size = utf8_len(json.dumps(doc, indent=2, ensure_ascii=False))

    with tempfile.TemporaryDirectory() as tmp:
        ledger = SQLiteLedger(Path(tmp) / "bench.db")
        guarded = action_guard(policies, workflow="bench", ledger=ledger)(plain)
        cases = {"trim": "/claims", "passthrough": "/claims/export"}
        # Warm up both arms (imports, the ledger's first connection, the trim compilation).
        for path in cases.values():
            run(plain, path, 5)
            run(guarded, path, 5)
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for case, path in cases.items():
                for arm, fn in (("unguarded", plain), ("guarded", guarded)):
                    seconds = run(fn, path, args.invocations)
                    key = (case, arm)
                    best[key] = min(best.get(key, seconds), seconds)
        outcomes = {r.outcome for r in ledger.actions()}
        after = {r.bytes_after for r in ledger.actions() if r.outcome == "trimmed"}
        ledger.close()

    print(f"response: {size / 1000:.0f} KB pretty-printed JSON, {len(doc['items'])} items; "
          f"{args.invocations} invocations x best of {args.rounds} alternating rounds; SQLite ledger")
    print(f"trimmed to {sorted(after)} bytes; outcomes recorded: {sorted(outcomes)}")
    all_ok = True
    for case in cases:
        plain_ms = best[(case, "unguarded")] * 1000
        guarded_ms = best[(case, "guarded")] * 1000
        overhead = guarded_ms - plain_ms
        ok = overhead < TARGET_MS
        all_ok &= ok
        print(f"{case:12s} unguarded {plain_ms:7.3f} ms   guarded {guarded_ms:7.3f} ms   "
              f"overhead {overhead:6.3f} ms/invocation   {'under' if ok else 'OVER'} the {TARGET_MS:.0f} ms target")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
