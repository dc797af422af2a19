"""One of the processes of the shared-budget test: 50 sessions of Converse calls on one budget.

    python -m tests.faults.budget_child ENDPOINT LEDGER_URL PROCESS_NO

Prints ``sent N refused M`` at the end; exits 0 unless something other than a budget refusal
went wrong. The Guard is closed normally, so its slice goes back to the budget.
"""

from __future__ import annotations

import sys

import boto3
from botocore.config import Config

import costguard
from costguard.policy import PolicySet

DAILY_USD = "0.05"
POLICY = f"version: 1\nworkflows:\n  wf:\n    budget: {{daily_usd: {DAILY_USD}, on_exhausted: block}}\n"
SESSIONS = 50
CALLS_PER_SESSION = 4


def main() -> None:
    endpoint, ledger, process_no = sys.argv[1], sys.argv[2], sys.argv[3]
    guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=ledger)
    client = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}))
    sent = refused = 0
    try:
        for session in range(SESSIONS):
            runtime = guard.wrap(client, workflow="wf", session_id=f"p{process_no}-s{session}")
            for _ in range(CALLS_PER_SESSION):
                try:
                    runtime.converse(modelId="amazon.nova-micro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
                    sent += 1
                except costguard.BudgetExceeded:
                    refused += 1
    finally:
        guard.close()
    print(f"sent {sent} refused {refused}", flush=True)


if __name__ == "__main__":
    main()
