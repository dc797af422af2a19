"""AgentCore Runtime (bedrock-agentcore from PyPI): the example app, served by the SDK's
``BedrockAgentCoreApp``, metered inside the "container" on a shared DynamoDB ledger (moto), with
the caller taken from the runtime's headers and the workflow from the runtime's name."""

from __future__ import annotations

import re

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from costguard.integrations.agentcore import SESSION_HEADER, USER_HEADER, guarded_session, runtime_caller, runtime_name
from costguard.ledger.dynamodb import create_table
from tests.support.converse_loop import guard_with, nova_micro_nanos, queue_answer, queue_tool_use
from tests.support.wire import FakeBedrock

pytest.importorskip("bedrock_agentcore", reason="bedrock-agentcore is not installed: pip install 'costguard[agentcore]'")
pytest.importorskip("strands", reason="strands-agents is not installed: pip install 'costguard[strands]'")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "agentcore"
ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/order_assistant-Ab3dE5gH7j"


def test_the_runtime_name_comes_from_the_runtime_arn_the_runtime_sets() -> None:
    assert runtime_name({"OTEL_RESOURCE_ATTRIBUTES": f"service.name=x,cloud.resource_id={ARN}"}) == "order_assistant"
    endpoint = f"cloud.resource_id={ARN}/runtime-endpoint/DEFAULT"
    assert runtime_name({"OTEL_RESOURCE_ATTRIBUTES": endpoint}) == "order_assistant"
    assert runtime_name({"OTEL_RESOURCE_ATTRIBUTES": "cloud.resource_id=arn:aws:lambda:us-east-1:1:function:f"}) is None
    assert runtime_name({}) is None


def test_the_caller_comes_from_the_session_and_user_headers() -> None:
    request = SimpleNamespace(headers={"x-amzn-bedrock-agentcore-runtime-user-id": "u-1", SESSION_HEADER.lower(): "s-h"})
    context = SimpleNamespace(session_id="s-ctx", request_headers=None, request=request)
    env = {"OTEL_RESOURCE_ATTRIBUTES": f"cloud.resource_id={ARN}"}
    caller = runtime_caller(context, default_workflow="fallback", environ=env)
    assert (caller.workflow, caller.session_id, caller.user_id) == ("order_assistant", "s-ctx", "u-1")
    only_session = SimpleNamespace(headers={SESSION_HEADER: "s-h"})
    custom = SimpleNamespace(session_id=None, request=only_session, request_headers={"X-Amzn-Bedrock-AgentCore-Runtime-Custom-User-Id": "u-2"})
    caller = runtime_caller(custom, default_workflow="fallback", environ={"COSTGUARD_WORKFLOW": "named"})
    assert (caller.workflow, caller.session_id, caller.user_id) == ("named", "s-h", "u-2")
    bare = runtime_caller(SimpleNamespace(), default_workflow="fallback", environ={})
    assert (bare.workflow, bare.session_id, bare.user_id) == ("fallback", None, None)


def test_a_guarded_session_meters_what_the_caller_runs(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_with(tmp_path, "per_session:\n  max_model_calls: 1", workflow="order_assistant")
    context = SimpleNamespace(session_id="s-g", request_headers={"X-Amzn-Bedrock-AgentCore-Runtime-Custom-User-Id": "u-g"}, request=None)
    session = guarded_session(guard, context, default_workflow="order_assistant", boto_session=boto3.Session(region_name="us-east-1"))
    client = session.client("bedrock-runtime", endpoint_url=fake.url)
    fake.queue_converse(70, 7)
    client.converse(modelId="amazon.nova-micro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    usage = guard.session_usage("s-g")
    assert (usage.workflow, usage.user_id, usage.model_calls, usage.input_tokens) == ("order_assistant", "u-g", 1, 70)


@pytest.fixture()
def container(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example app as the runtime would start it, on a moto DynamoDB ledger."""
    with mock_aws():
        create_table("costguard-ledger", client=boto3.client("dynamodb", region_name="us-east-1"))
        monkeypatch.setenv("COSTGUARD_LEDGER", "dynamodb://costguard-ledger")
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"cloud.resource_id={ARN}")
        monkeypatch.delenv("COSTGUARD_WORKFLOW", raising=False)
        spec = importlib.util.spec_from_file_location("agentcore_example_under_test", EXAMPLE / "agent.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def invoke(module: ModuleType, prompt: str, headers: dict[str, str]) -> Any:
    from starlette.testclient import TestClient

    with TestClient(module.app) as client:
        response = client.post("/invocations", json={"prompt": prompt}, headers=headers)
    assert response.status_code == 200
    return response.json()


def test_the_example_agent_is_metered_on_the_shared_ledger_under_the_runtime_caller(fake: FakeBedrock, container: ModuleType) -> None:
    headers = {SESSION_HEADER: "rt-session-000000000000000000000001", USER_HEADER: "customer-7"}
    queue_tool_use(fake, streaming=True, tool_use_id="tooluse_1", name="order_status", tool_input={"order_id": "A-1"},
                   input_tokens=420, output_tokens=28)
    queue_answer(fake, streaming=True, text="Order A-1 has shipped.", input_tokens=510, output_tokens=22)

    answer = invoke(container, "Where is order A-1?", headers)

    assert answer == {"result": "Order A-1 has shipped."}
    usage = container.guard.session_usage(headers[SESSION_HEADER])
    assert (usage.workflow, usage.model_calls, usage.tool_calls) == ("order_assistant", 2, 1)
    # the runtime's user, stored as the shared ledger's keyed hash (every host hashes it alike)
    assert usage.user_id == container.guard._user_ref("customer-7") != "customer-7"
    assert usage.cost_usd * 10**9 == nova_micro_nanos(420, 28) + nova_micro_nanos(510, 22)


def test_a_cap_stops_the_hosted_agent_with_the_violation_in_its_answer(fake: FakeBedrock, container: ModuleType) -> None:
    headers = {SESSION_HEADER: "rt-session-000000000000000000000002", USER_HEADER: "customer-8"}
    for n in range(5):
        queue_tool_use(fake, streaming=True, tool_use_id=f"tooluse_{n}", name="order_status", tool_input={"order_id": f"B-{n}"},
                       input_tokens=600, output_tokens=30)

    answer = invoke(container, "Check all my orders", headers)

    assert answer["stopped"]["rule"] == "per_session.max_tool_calls" and answer["stopped"]["observed"] == 5
    assert answer["stopped"]["workflow"] == "order_assistant"
    assert len(fake.requests) == 5  # the fifth tool call was asked for and refused, never run


def test_the_documented_offline_command_runs() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE / "run_local.py")], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert '"rule": "per_session.max_tool_calls"' in done.stdout
    # the user id is stored as a keyed hash (the default), never as "customer-42"
    assert re.search(r"workflow=order_assistant user=h:[0-9a-f]{32} model_calls=6 tool_calls=5", done.stdout)
    assert "customer-42" not in done.stdout.split("workflow=order_assistant", 1)[1].split("\n", 1)[0]
