"""Runs the AgentCore example offline: ``python examples/agentcore/run_local.py`` from the repo root
(after ``pip install -e '.[agentcore,test]'``).

What stands in for AWS, all in this process: the repository's local Bedrock endpoint (the one the
tests use) answers the model calls, moto's in-process DynamoDB holds the shared ledger, and
Starlette's test client posts to the app's ``/invocations`` with the headers AgentCore Runtime
sends. The runtime's ARN is set the way the runtime sets it, so the workflow is its name.

Two invocations of one session: the first uses the tool once and answers; in the second the model
keeps asking for the tool until ``per_session.max_tool_calls`` (4) stops it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from costguard.integrations.agentcore import SESSION_HEADER, USER_HEADER  # noqa: E402
from costguard.ledger.dynamodb import create_table  # noqa: E402
from tests.support.converse_loop import queue_answer, queue_tool_use  # noqa: E402
from tests.support.wire import FakeBedrock  # noqa: E402

RUNTIME_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/order_assistant-Ab3dE5gH7j"


def main() -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_PROFILE", None)
    with FakeBedrock() as bedrock, mock_aws():
        create_table("costguard-ledger", client=boto3.client("dynamodb", region_name="us-east-1"))
        os.environ.update(
            COSTGUARD_LEDGER="dynamodb://costguard-ledger",
            # boto3's per-service endpoint setting: the agent's own code is unchanged.
            AWS_ENDPOINT_URL_BEDROCK_RUNTIME=bedrock.url,
            OTEL_RESOURCE_ATTRIBUTES=f"service.name=order_assistant,cloud.resource_id={RUNTIME_ARN}",
        )
        spec = importlib.util.spec_from_file_location("agentcore_example", Path(__file__).with_name("agent.py"))
        assert spec is not None and spec.loader is not None
        agent = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(agent)

        from starlette.testclient import TestClient

        headers = {SESSION_HEADER: "session-0001-order-assistant-demo-xx", USER_HEADER: "customer-42"}
        with TestClient(agent.app) as client:
            queue_tool_use(bedrock, streaming=True, tool_use_id="tooluse_a", name="order_status",
                           tool_input={"order_id": "A-100"}, input_tokens=420, output_tokens=28)
            queue_answer(bedrock, streaming=True, text="Order A-100 has shipped; it arrives in 2 days.",
                         input_tokens=510, output_tokens=22)
            first = client.post("/invocations", json={"prompt": "Where is order A-100?"}, headers=headers)
            print("invocation 1:", json.dumps(first.json()))

            for n in range(4):
                queue_tool_use(bedrock, streaming=True, tool_use_id=f"tooluse_b{n}", name="order_status",
                               tool_input={"order_id": f"B-{n}"}, input_tokens=600 + 90 * n, output_tokens=30)
            second = client.post("/invocations", json={"prompt": "Check every order I ever placed."}, headers=headers)
            print("invocation 2:", json.dumps(second.json()))

        usage = agent.guard.session_usage(headers[SESSION_HEADER])
        print(f"ledger (DynamoDB): workflow={usage.workflow} user={usage.user_id} model_calls={usage.model_calls} "
              f"tool_calls={usage.tool_calls} tokens={usage.tokens} cost=${usage.cost_usd}")


if __name__ == "__main__":
    main()
