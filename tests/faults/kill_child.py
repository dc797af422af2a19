"""The process the fault tests kill -9: a Guard metering calls to the local endpoint.

    python -m tests.faults.kill_child ENDPOINT LEDGER_URL converse|stream|burst

``burst``: Converse calls as fast as the endpoint answers, with the writer flushing every
50 ms, so a kill lands during or between flushes.

Prints one line per model call it has seen (``seen N``), flushed, so the parent knows how much
usage the meter had in hand when it was killed.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config

import costguard
from costguard.policy import PolicySet

POLICY = "version: 1\nworkflows:\n  wf:\n    budget: {daily_usd: 1000}\n"


def main() -> None:
    endpoint, ledger, mode = sys.argv[1:4]
    guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=ledger, lease_ttl_s=1.0,
                            checkpoint_every_calls=5, checkpoint_every_s=3600,
                            write_interval_s=float(os.environ.get("COSTGUARD_WRITE_INTERVAL_S", "0.2")))
    config = Config(retries={"total_max_attempts": 1}, read_timeout=30)
    if mode in ("converse", "burst"):
        client = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1", config=config)
        runtime = guard.wrap(client, workflow="wf", session_id="s-kill")
        for n in range(1, 1000):
            runtime.converse(modelId="amazon.nova-micro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
            print(f"seen {n}", flush=True)
    else:
        client = boto3.client("bedrock-agent-runtime", endpoint_url=endpoint, region_name="us-east-1", config=config)
        agents = guard.wrap(client, workflow="wf")
        response = agents.invoke_agent(agentId="AGENT1", agentAliasId="ALIAS1", sessionId="s-kill", inputText="hi", enableTrace=True)
        seen = 0
        pause_at = int(os.environ.get("COSTGUARD_PAUSE_AT", "0"))
        for event in response["completion"]:
            trace = event.get("trace", {}).get("trace", {})
            if any(isinstance(body, dict) and "modelInvocationOutput" in body for body in trace.values()):
                seen += 1
                print(f"seen {seen}", flush=True)
                if seen == pause_at:
                    time.sleep(60)  # stand still here: the parent kills the process at a known point


if __name__ == "__main__":
    main()
