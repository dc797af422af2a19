"""A Strands agent for Amazon Bedrock AgentCore Runtime, metered by costguard inside the container.

AgentCore Runtime's ``InvokeAgentRuntime`` reports no usage: the model calls happen here, under the
runtime's role, so costguard runs here too, on the shared DynamoDB ledger, where every container of
the runtime (and every other costguard host) sees the same session caps, budgets and kill switch.

Container environment:

- ``COSTGUARD_LEDGER=dynamodb://TABLE`` (create it with ``costguard ledger create-table``);
- ``COSTGUARD_POLICIES``: a policy file or directory (default: ``policies.yaml`` beside this file);
- ``MODEL_ID`` (default ``amazon.nova-micro-v1:0``).

The workflow is the runtime's name; session and user are the runtime's session and user headers
(:mod:`costguard.integrations.agentcore`). The IAM the runtime role needs: ``docs/integrations.md``.

Run offline against a local Bedrock endpoint and an in-process DynamoDB:
``python examples/agentcore/run_local.py``. In the container: ``python agent.py`` (port 8080).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from strands import Agent, tool
from strands.models import BedrockModel

import costguard
from costguard.integrations.agentcore import agentcore_app, runtime_caller
from costguard.integrations.strands import MeteredAgent, meter_agent

MODEL_ID = os.environ.get("MODEL_ID", "amazon.nova-micro-v1:0")
POLICIES = os.environ.get("COSTGUARD_POLICIES", str(Path(__file__).with_name("policies.yaml")))

app = agentcore_app()
# One Guard per container: its ledger client, price catalog and learned costs are reused by
# every invocation.
guard = costguard.Guard(POLICIES, ledger=os.environ.get("COSTGUARD_LEDGER"))
# A runtime session keeps its microVM between invocations: keep its conversation too.
_agents: OrderedDict[str, MeteredAgent] = OrderedDict()
_agents_lock = threading.Lock()
MAX_AGENTS = 64


@tool
def order_status(order_id: str) -> str:
    """The status of an order."""
    return f'{{"order": "{order_id}", "status": "shipped", "eta_days": 2}}'


def agent_for(context: Any) -> MeteredAgent:
    caller = runtime_caller(context, default_workflow="order_assistant")
    key = caller.session_id or ""
    with _agents_lock:
        metered = _agents.get(key)
        if metered is not None:
            _agents.move_to_end(key)
            return metered
    model = BedrockModel(model_id=MODEL_ID)
    agent = Agent(model=model, tools=[order_status], callback_handler=None, name=caller.workflow)
    metered = meter_agent(agent, guard, workflow=caller.workflow, session_id=caller.session_id, user_id=caller.user_id)
    with _agents_lock:
        _agents[key] = metered
        while len(_agents) > MAX_AGENTS:
            _agents.popitem(last=False)
    return metered


@app.entrypoint
def invoke(payload: dict[str, Any], context: Any) -> dict[str, Any]:
    run = agent_for(context)(str(payload.get("prompt", "")))
    if run.violation is not None:
        # Stopped by a cap: what the agent had said so far, and why it stopped.
        return {"result": run.text, "stopped": run.violation.to_dict()}
    return {"result": run.text}


if __name__ == "__main__":
    app.run()
