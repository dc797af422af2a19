"""A Strands agent metered by costguard in one call, its runaway tool loop stopped by a cap.

Offline, against the repository's local Bedrock endpoint (a scripted model that keeps asking for
the tool)::

    python examples/strands_agent.py

Against Amazon Bedrock (your credentials; it costs a few model calls)::

    python examples/strands_agent.py --aws
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from strands import Agent, tool
from strands.models import BedrockModel

import costguard
from costguard.integrations.strands import meter_agent
from costguard.policy import PolicySet

POLICY = """
version: 1
workflows:
  warehouse:
    mode: enforce
    per_request: {max_tool_response_bytes: 8192}
    per_session: {max_model_calls: 10, max_tool_calls: 3}
"""
MODEL_ID = "amazon.nova-micro-v1:0"


@tool
def stock_level(sku: str) -> str:
    """How many units of a SKU are in stock."""
    return f'{{"sku": "{sku}", "units": 12}}'


@contextlib.contextmanager
def local_bedrock() -> Iterator[str]:
    """The local endpoint, scripted with a model that asks for the tool five times."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.converse_loop import queue_tool_use
    from tests.support.wire import FakeBedrock

    with FakeBedrock() as fake:
        for n in range(5):
            queue_tool_use(fake, streaming=True, tool_use_id=f"tooluse_{n}", name="stock_level",
                           tool_input={"sku": f"SKU-{n}"}, input_tokens=350 + 60 * n, output_tokens=24)
        yield fake.url


def main() -> None:
    online = "--aws" in sys.argv
    ledger = Path(tempfile.mkdtemp()) / "costguard.db"
    guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=f"sqlite:///{ledger}")
    with contextlib.nullcontext(None) if online else local_bedrock() as endpoint:
        if endpoint is not None:
            import boto3

            session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
            model = BedrockModel(model_id=MODEL_ID, boto_session=session, endpoint_url=endpoint)
        else:
            model = BedrockModel(model_id=MODEL_ID)
        agent = Agent(model=model, tools=[stock_level], callback_handler=None, name="warehouse")
        run_agent = meter_agent(agent, guard, workflow="warehouse", user_id="picker-7")
        run = run_agent("Check stock for every SKU you can think of.")
    if run.stopped:
        assert run.violation is not None
        print(f"stopped: {run.violation.message}")
    else:
        print(f"answer: {run.text}")
    usage = guard.session_usage(str(run_agent.session_id))
    print(f"session {usage.session_id}: model_calls={usage.model_calls} tool_calls={usage.tool_calls} "
          f"tokens={usage.tokens} cost=${usage.cost_usd}")
    guard.close()


if __name__ == "__main__":
    main()
