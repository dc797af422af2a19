"""The deployed roles allow exactly what the code does: every DynamoDB request of a real run (moto),
item by item, checked against the templates' statements and their ``dynamodb:LeadingKeys``.

A request the role would refuse fails here instead of in production; a grant no request needs is
caught by the template tests (they pin the action lists)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from moto import mock_aws

from costguard.action_guard import action_guard
from costguard.ledger.dynamodb import create_table
from costguard.policy import PolicySet
from tests.functional import test_lambda_dynamodb
from tests.functional.test_template import CfnLoader

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"

#: One DynamoDB item request as IAM authorises it: action, table or index, partition key value.
Request = tuple[str, str, str | None]

_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
_OPERATIONS = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"}


def _pk(params: dict[str, Any]) -> str | None:
    key = params.get("Key") or params.get("Item")
    if key is not None:
        return str(key["pk"]["S"])
    values = params.get("ExpressionAttributeValues", {})
    return str(values[":pk"]["S"]) if ":pk" in values else None


def as_requests(operation: str, params: dict[str, Any]) -> list[Request]:
    """IAM checks a TransactWriteItems item by item, as the item's own action."""
    if operation == "TransactWriteItems":
        return [
            (f"dynamodb:{_TRANSACT_ACTIONS[kind]}", "table", _pk(body))
            for item in params["TransactItems"] for kind, body in item.items()
        ]
    assert operation in _OPERATIONS, f"the ledger sent {operation}: not expected, not granted"
    return [(f"dynamodb:{operation}", f"index/{params['IndexName']}" if "IndexName" in params else "table", _pk(params))]


class Recorder:
    """DynamoDB requests sent while ``recording`` (the code under test runs; the test's setup does not)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.recording = False

    def around(self, function: Any) -> Any:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.recording = True
            try:
                return function(*args, **kwargs)
            finally:
                self.recording = False

        return recorded


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    seen = Recorder()
    real = BaseClient._make_api_call

    def recording(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if seen.recording and client.meta.service_model.service_name == "dynamodb":
            seen.requests.extend(as_requests(operation, params))
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return seen


def _statements(template_file: str, role: str) -> list[dict[str, Any]]:
    template = yaml_load(LAMBDAS / template_file)
    policies = template["Resources"][role]["Properties"]["Policies"]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]


def yaml_load(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed(request: Request, statements: list[dict[str, Any]]) -> bool:
    action, resource, pk = request
    for statement in statements:
        if action not in _listify(statement["Action"]):
            continue
        resources = json.dumps(statement["Resource"])
        if resource != "table" and resource not in resources:
            continue
        if resource == "table" and not any("index/" not in json.dumps(r) for r in _listify(statement["Resource"])):
            continue
        condition = statement.get("Condition")
        if condition is None:
            return True
        patterns = condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        if pk is not None and any(fnmatch.fnmatchcase(pk, p) for p in patterns):
            return True
    return False


def test_the_reconcile_role_allows_every_request_of_a_scheduled_run(
    deployed: dict[str, Any], recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the reconcile role of template.yaml
    statements = _statements("template.yaml", "ReconcileRole")
    # WHEN a scheduled run blocks a workflow, claims and sends alerts, and runs again (the end-to-end
    # test, its handler calls recorded)
    monkeypatch.setattr(deployed["module"], "handler", recorder.around(deployed["module"].handler))
    test_lambda_dynamodb.test_scheduled_run_blocks_alerts_and_reports_once(deployed)
    dynamodb_requests = recorder.requests
    # THEN it wrote kill switches, their log and alert keys, and the role allows every request
    writes = {(a, pk.split("#")[0]) for a, _, pk in dynamodb_requests if a != "dynamodb:Query" and a != "dynamodb:GetItem" and pk}
    assert {("dynamodb:PutItem", "KILL"), ("dynamodb:PutItem", "KLOG"), ("dynamodb:PutItem", "ALERT")} <= writes
    refused = sorted({r for r in dynamodb_requests if not allowed(r, statements)}, key=str)
    assert refused == []


deployed = test_lambda_dynamodb.deployed
aws = test_lambda_dynamodb.aws


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("action_group_example_app", LAMBDAS / "action_group_example" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _event(method: str, path: str, session: str | None, **params: str) -> dict[str, Any]:
    return {
        "messageVersion": "1.0", "agent": {"name": "orders", "id": "AGENT12345", "alias": "TSTALIASID", "version": "1"},
        "inputText": "-", "sessionId": session, "actionGroup": "orders", "apiPath": path, "httpMethod": method,
        "parameters": [{"name": k, "type": "string", "value": v} for k, v in params.items()],
        "sessionAttributes": {}, "promptSessionAttributes": {},
    }


@pytest.fixture()
def example_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with mock_aws():
        create_table("costguard", client=boto3.client("dynamodb", region_name="us-east-1"))
        monkeypatch.setenv("COSTGUARD_LEDGER", "dynamodb://costguard?region=us-east-1")
        monkeypatch.setenv("COSTGUARD_WORKFLOW", "order-support")
        yield _load_example()


def test_the_example_action_group_role_allows_every_request_of_the_guard(
    example_stack: ModuleType, recorder: Recorder
) -> None:
    statements = _statements("action-group-example.yaml", "ActionRole")
    # WHEN the agent searches (trimmed, then replaced: a violation) and retries an idempotent refund
    handler = recorder.around(example_stack.handler)
    dynamodb_requests = recorder.requests
    large = handler(_event("GET", "/orders", "s-1", customerId="C1", pageSize="400"), None)
    first = handler(_event("POST", "/orders/{orderId}/refund", "s-1", orderId="ORD-1"), None)
    again = handler(_event("POST", "/orders/{orderId}/refund", "s-1", orderId="ORD-1"), None)
    assert '"items_dropped":380' in large["response"]["responseBody"]["application/json"]["body"]
    assert first["response"] == again["response"]  # replayed, not run twice
    # AND, under a tighter policy, a response too large even when trimmed (a violation)
    tight = PolicySet.from_yaml("version: 1\nworkflows:\n  order-support:\n    per_request: {max_tool_response_bytes: 100}\n", "tight")
    replaced = recorder.around(action_guard(tight, workflow="order-support")(example_stack.orders_handler))(
        _event("GET", "/orders", "s-1", customerId="C1", pageSize="3"), None)
    assert "response_too_large" in replaced["response"]["responseBody"]["application/json"]["body"]
    # THEN the guard wrote its own item types only, and the role allows every request
    kinds = {pk.split("#")[0] for a, _, pk in dynamodb_requests if pk and a != "dynamodb:GetItem"}
    assert kinds == {"A", "WF", "S", "I"}
    refused = sorted({r for r in dynamodb_requests if not allowed(r, statements)}, key=str)
    assert refused == []
