"""The SAM template: cfn-lint clean, the resources shaped as the ledger and reports need, least privilege."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "lambdas" / "template.yaml"

#: The only actions that may use ``Resource: "*"`` (they have no resource-level permissions).
STAR_RESOURCE_ACTIONS = {
    "ce:GetCostAndUsage",
    "ce:GetDimensionValues",
    "cloudwatch:GetMetricData",
    "cloudwatch:ListMetrics",
    "cloudwatch:PutMetricData",  # only with the namespace condition (checked below)
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form intrinsic functions."""


def _intrinsic(name: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag in ("Ref", "Condition"):
    CfnLoader.add_constructor(f"!{_tag}", _intrinsic(_tag))
for _fn in ("Sub", "GetAtt", "Join", "Select", "Split", "If", "Equals", "Not", "And", "Or", "FindInMap",
            "Base64", "Cidr", "GetAZs", "ImportValue", "Transform"):
    CfnLoader.add_constructor(f"!{_fn}", _intrinsic(f"Fn::{_fn}"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in the template (role policies, bucket/topic policies, trust policies)."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if "Statement" in node and "Version" in node:
                for statement in _listify(node["Statement"]):
                    yield where, statement
                return
            for key, value in node.items():
                yield from walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{where}[{index}]")

    yield from walk(template["Resources"], "Resources")


def test_cfn_lint_reports_no_errors() -> None:
    from cfnlint.api import lint_file

    matches = lint_file(TEMPLATE)
    problems = [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches]
    errors = [p for p, m in zip(problems, matches, strict=True) if m.rule.severity == "error"]
    assert errors == []
    assert problems == []  # warnings too: the template is meant to be clean


def test_function_schedule_and_environment(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    function = template["Resources"]["ReconcileFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert (props["Runtime"], props["Handler"], props["Timeout"], props["MemorySize"]) == (
        "python3.12", "reconcile_handler.handler", 300, 1024)
    env = props["Environment"]["Variables"]
    assert env["COSTGUARD_LEDGER"] == {"Fn::Sub": "dynamodb://${LedgerTable}"}
    assert env["COSTGUARD_TOPIC_ARN"] == {"Ref": "AlertTopic"}
    assert env["COSTGUARD_REPORT_BUCKET"] == {"Ref": "ReportBucket"}
    assert {"COSTGUARD_POLICIES", "COSTGUARD_REPORT_PREFIX", "COSTGUARD_DRY_RUN"} <= set(env)
    (event,) = props["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == {"Ref": "ScheduleExpression"}
    assert template["Parameters"]["ScheduleExpression"]["Default"] == "rate(1 hour)"
    # The handler the template names exists.
    handler_file = TEMPLATE.parent / "reconcile_handler.py"
    assert "\ndef handler(event" in handler_file.read_text(encoding="utf-8")


def test_ledger_table_has_the_dynamodb_ledger_shape(template: dict[str, Any]) -> None:
    table = template["Resources"]["LedgerTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"), ("sk", "S"), ("gsi1pk", "S"), ("gsi1sk", "S")}
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "gsi1" and gsi["Projection"] == {"ProjectionType": "ALL"}
    assert gsi["KeySchema"] == [{"AttributeName": "gsi1pk", "KeyType": "HASH"}, {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_topic_and_bucket_are_locked_down(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["AlertTopic"]["Properties"]["KmsMasterKeyId"] == "alias/aws/sns"
    bucket = resources["ReportBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    policy = resources["ReportBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny_tls = [s for s in policy if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert deny_tls and deny_tls[0]["Principal"] == "*"


def test_no_star_action_anywhere_and_no_wildcard_allow(template: dict[str, Any]) -> None:
    found = list(statements(template))
    assert len(found) >= 8
    for where, statement in found:
        actions = _listify(statement.get("Action", []))
        assert "*" not in actions, f"{where}: Action '*'"
        assert "NotAction" not in statement, f"{where}: NotAction"
        if statement["Effect"] == "Allow":
            assert not [a for a in actions if "*" in a], f"{where}: wildcard action in an Allow"


def test_star_resource_only_for_actions_without_resource_permissions(template: dict[str, Any]) -> None:
    for where, statement in statements(template):
        if statement["Effect"] != "Allow":
            continue
        resources = _listify(statement.get("Resource", []))
        if "*" in resources:
            actions = set(_listify(statement["Action"]))
            assert actions <= STAR_RESOURCE_ACTIONS, f"{where}: Resource '*' for {sorted(actions - STAR_RESOURCE_ACTIONS)}"
            if "cloudwatch:PutMetricData" in actions:
                assert actions == {"cloudwatch:PutMetricData"}
                assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Costguard"}}


def _role_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["ReconcileRole"]["Properties"]
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def test_role_scopes_each_service_to_its_resource(template: dict[str, Any]) -> None:
    by_action: dict[str, list[Any]] = {}
    for statement in _role_statements(template):
        for action in _listify(statement["Action"]):
            by_action.setdefault(action, []).extend(_listify(statement["Resource"]))
    assert by_action["cloudwatch:PutMetricData"] == ["*"]
    dynamodb = [a for a in by_action if a.startswith("dynamodb:")]
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"} <= set(dynamodb)
    for action in dynamodb:
        assert by_action[action] == [{"Fn::GetAtt": ["LedgerTable", "Arn"]}, {"Fn::Sub": "${LedgerTable.Arn}/index/gsi1"}]
    assert by_action["sns:Publish"] == [{"Ref": "AlertTopic"}]
    assert by_action["s3:PutObject"] == [{"Fn::Sub": "${ReportBucket.Arn}/${ReportPrefix}/*"}]
    assert by_action["logs:PutLogEvents"] == [{"Fn::GetAtt": ["ReconcileLogGroup", "Arn"]}]
    # The role grants nothing beyond these services.
    assert {a.split(":")[0] for a in by_action} == {"logs", "ce", "cloudwatch", "dynamodb", "sns", "s3"}
    # The function runs as this role (SAM must not generate a broader one).
    assert template["Resources"]["ReconcileFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["ReconcileRole", "Arn"]}
    assert "Policies" not in template["Resources"]["ReconcileFunction"]["Properties"]
