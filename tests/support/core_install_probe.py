"""Runs inside a virtualenv holding only ``pip install costguard`` (no reports extra); prints JSON.

tests/functional/test_core_install.py builds that virtualenv and checks what this prints: the meter
prices a stock bedrock-runtime client's call (botocore Stubber, no network) and the action guard
trims a response, both on a SQLite ledger, without pandas, pyarrow or numpy anywhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import boto3
from botocore.stub import Stubber

import costguard
from costguard.action_guard import action_guard
from costguard.policy import PolicySet

POLICY = """
version: 1
workflows:
  triage:
    per_request: {max_model_calls: 5}
    actions:
      "search GET /items":
        trim: {max_list_items: 2}
"""


def main() -> None:
    result: dict[str, object] = {
        "installed": {name: importlib.util.find_spec(name) is not None for name in ("pandas", "pyarrow", "numpy")},
    }
    policies = PolicySet.from_yaml(POLICY, "probe")
    with tempfile.TemporaryDirectory() as tmp:
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        guard = costguard.Guard(policies, ledger=ledger_url)
        client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x")
        with Stubber(client) as stubber:
            stubber.add_response("converse", {
                "output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1000, "outputTokens": 200, "totalTokens": 1200},
                "metrics": {"latencyMs": 12},
            })
            runtime = guard.wrap(client, workflow="triage", session_id="s-1")
            runtime.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                             messages=[{"role": "user", "content": [{"text": "hi"}]}])
        usage = guard.session_usage("s-1")
        result["session_cost_usd"] = format(usage.cost_usd, "f")
        result["session_model_calls"] = usage.model_calls

        def search(event: dict[str, object], context: object) -> dict[str, object]:
            body = json.dumps({"items": [{"id": n} for n in range(10)]})
            return {"messageVersion": "1.0", "response": {
                "actionGroup": "search", "apiPath": "/items", "httpMethod": "GET", "httpStatusCode": 200,
                "responseBody": {"application/json": {"body": body}}}}

        guarded = action_guard(policies, workflow="triage", ledger=ledger_url)(search)
        event = {"messageVersion": "1.0", "sessionId": "s-1", "actionGroup": "search", "apiPath": "/items",
                 "httpMethod": "GET", "parameters": [], "agent": {"id": "A1"}}
        response = guarded(event, None)
        result["action_body"] = json.loads(response["response"]["responseBody"]["application/json"]["body"])
        guard.ledger.close()
    result["loaded"] = sorted(name for name in ("pandas", "pyarrow", "numpy") if name in sys.modules)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
