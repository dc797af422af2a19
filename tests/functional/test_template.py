"""The SAM template: cfn-lint and checkov clean, the resources shaped as the ledger and reports need, least privilege,
alarms on what the function emits, a Glue table matching the Parquet the reports write."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date
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


EXAMPLE = TEMPLATE.parent / "action-group-example.yaml"


@pytest.mark.parametrize("template_file", [TEMPLATE, EXAMPLE], ids=["reconcile", "action-group-example"])
def test_cfn_lint_reports_no_errors(template_file: Path) -> None:
    from cfnlint.api import lint_file

    matches = lint_file(template_file)
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
    assert resources["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}  # alarms can publish (see below)
    bucket = resources["ReportBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    policy = resources["ReportBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny_tls = [s for s in policy if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert deny_tls and deny_tls[0]["Principal"] == "*"


#: AWS's default key policy statement: the account administers its key through IAM policies.
KEY_ADMIN_STATEMENT = {
    "Sid": "AccountAdministersTheKey",
    "Effect": "Allow",
    "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
    "Action": "kms:*",
    "Resource": "*",
}


def _is_key_policy(where: str) -> bool:
    # In a KMS key policy, Resource "*" means the key itself.
    return where.endswith(".Properties.KeyPolicy")


def test_no_star_action_anywhere_and_no_wildcard_allow(template: dict[str, Any]) -> None:
    found = list(statements(template))
    assert len(found) >= 12
    for where, statement in found:
        actions = _listify(statement.get("Action", []))
        assert "*" not in actions, f"{where}: Action '*'"
        assert "NotAction" not in statement, f"{where}: NotAction"
        if statement["Effect"] == "Allow" and statement != KEY_ADMIN_STATEMENT:
            assert not [a for a in actions if "*" in a], f"{where}: wildcard action in an Allow"


def test_star_resource_only_for_actions_without_resource_permissions(template: dict[str, Any]) -> None:
    for where, statement in statements(template):
        if statement["Effect"] != "Allow" or _is_key_policy(where):
            continue
        resources = _listify(statement.get("Resource", []))
        if "*" in resources:
            actions = set(_listify(statement["Action"]))
            assert actions <= STAR_RESOURCE_ACTIONS, f"{where}: Resource '*' for {sorted(actions - STAR_RESOURCE_ACTIONS)}"


def test_alert_key_lets_the_alarms_publish_and_rotates(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}
    key = resources["AlertKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    admin, alarms = key["KeyPolicy"]["Statement"]
    assert admin == KEY_ADMIN_STATEMENT
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(alarms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert alarms["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def _role_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["ReconcileRole"]["Properties"]
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def test_role_scopes_each_service_to_its_resource(template: dict[str, Any]) -> None:
    by_action: dict[str, list[Any]] = {}
    for statement in _role_statements(template):
        for action in _listify(statement["Action"]):
            by_action.setdefault(action, []).extend(_listify(statement["Resource"]))
    # EMF lines, not PutMetricData; no batch or scan reads; no updates, condition checks or DescribeTable
    assert "cloudwatch:PutMetricData" not in by_action
    dynamodb = {a for a in by_action if a.startswith("dynamodb:")}
    assert dynamodb == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"}
    for action in ("dynamodb:GetItem", "dynamodb:Query"):
        assert by_action[action] == [{"Fn::GetAtt": ["LedgerTable", "Arn"]}, {"Fn::Sub": "${LedgerTable.Arn}/index/gsi1"}]
    for action in ("dynamodb:PutItem", "dynamodb:DeleteItem"):
        assert by_action[action] == [{"Fn::GetAtt": ["LedgerTable", "Arn"]}]
    assert by_action["sns:Publish"] == [{"Ref": "AlertTopic"}]
    assert by_action["kms:GenerateDataKey"] == by_action["kms:Decrypt"] == [{"Fn::GetAtt": ["AlertKey", "Arn"]}]
    assert by_action["sqs:SendMessage"] == [{"Fn::GetAtt": ["FailedRunQueue", "Arn"]}]
    assert by_action["s3:PutObject"] == [{"Fn::Sub": "${ReportBucket.Arn}/${ReportPrefix}/*"}]
    assert by_action["logs:PutLogEvents"] == [{"Fn::GetAtt": ["ReconcileLogGroup", "Arn"]}]
    # The role grants nothing beyond these services (nothing for Glue or Athena either).
    assert {a.split(":")[0] for a in by_action} == {"logs", "ce", "cloudwatch", "dynamodb", "sns", "kms", "sqs", "s3"}
    # The function runs as this role (SAM must not generate a broader one).
    assert template["Resources"]["ReconcileFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["ReconcileRole", "Arn"]}
    assert "Policies" not in template["Resources"]["ReconcileFunction"]["Properties"]


def test_ledger_writes_are_limited_to_the_reconcilers_item_types(template: dict[str, Any]) -> None:
    (write,) = [s for s in _role_statements(template) if "dynamodb:PutItem" in _listify(s["Action"])]
    assert write["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["ALERT", "KILL", "KLOG#*"]}}
    # The SNS key is usable only through SNS
    (kms,) = [s for s in _role_statements(template) if "kms:Decrypt" in _listify(s["Action"])]
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sns.${AWS::Region}.amazonaws.com"}}}


@pytest.mark.parametrize(("prefix", "accepted"), [
    ("costguard/reports", True), ("reports", True), ("team-a/costguard_v2/reports.d", True),
    ("*", False), ("reports/*", False), ("a?c", False), ("/reports", False), ("reports/", False),
    ("a//b", False), ("", False), ("reports dir", False),
])
def test_report_prefix_pattern_admits_no_wildcard_or_empty_segment(template: dict[str, Any], prefix: str, accepted: bool) -> None:
    parameter = template["Parameters"]["ReportPrefix"]
    assert (re.fullmatch(parameter["AllowedPattern"], prefix) is not None) is accepted
    assert re.fullmatch(parameter["AllowedPattern"], parameter["Default"])


def test_failed_runs_go_to_an_encrypted_queue_after_bounded_retries(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    config = resources["ReconcileFunction"]["Properties"]["EventInvokeConfig"]
    assert (config["MaximumEventAgeInSeconds"], config["MaximumRetryAttempts"]) == (3600, 2)
    assert config["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedRunQueue", "Arn"]}}
    assert resources["FailedRunQueue"]["Properties"]["KmsMasterKeyId"] == "alias/aws/sqs"


def test_function_uses_the_pandas_layer_and_the_built_package(template: dict[str, Any]) -> None:
    props = template["Resources"]["ReconcileFunction"]["Properties"]
    assert props["CodeUri"] == "build/reconcile/" and props["Architectures"] == ["x86_64"]
    assert props["Layers"] == [{"Ref": "PandasLayerArn"}]
    pattern = template["Parameters"]["PandasLayerArn"]["AllowedPattern"]
    # The published ARN shape (https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html)
    assert re.fullmatch(pattern, "arn:aws:lambda:af-south-1:336392948345:layer:AWSSDKPandas-Python312:26")
    assert not re.fullmatch(pattern, "arn:aws:lambda:af-south-1:336392948345:layer:AWSSDKPandas-Python312-Arm64:26")
    assert not re.fullmatch(pattern, "arn:aws:lambda:af-south-1:336392948345:layer:AWSSDKPandas-Python311:30")


def _emitted_metrics(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The EMF line the reconcile handler prints after a run."""
    from tests.functional.test_lambda_handler import load_handler

    summary = {"rows": 1, "alerts": {"sent": 0, "skipped_duplicates": 0, "failed": 1}, "blocks": 0,
               "unblocks": 0, "api_calls": {"ce:GetCostAndUsage": 1}, "errors": ["sns: throttled"]}
    capsys.readouterr()
    load_handler()._emit_metrics(summary, 12)
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines() if '"_aws"' in text]
    return line


def test_alarms_watch_what_the_function_emits_and_publish_to_the_topic(
    template: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    resources = template["Resources"]
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarms) == {"ReconcileErrorsAlarm", "AlertsFailedAlarm", "NoSuccessfulRunAlarm", "FailedRunsAlarm"}
    for props in alarms.values():
        assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "AlertTopic"}]
    errors = alarms["ReconcileErrorsAlarm"]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ReconcileFunction"}}]
    # The Costguard alarms name a metric, namespace and dimension the handler really emits
    line = _emitted_metrics(capsys)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    emitted = {m["Name"] for m in directive["Metrics"]}
    for name in ("AlertsFailedAlarm", "NoSuccessfulRunAlarm"):
        props = alarms[name]
        assert props["Namespace"] == directive["Namespace"] == "Costguard"
        assert props["MetricName"] in emitted
        assert directive["Dimensions"] == [["Job"]] and props["Dimensions"] == [{"Name": "Job", "Value": line["Job"]}]
    assert (line["AlertsFailed"], line["Succeeded"]) == (1, 0)  # a partial run is not a success
    failed = alarms["AlertsFailedAlarm"]
    assert (failed["MetricName"], failed["Statistic"], failed["Threshold"], failed["ComparisonOperator"]) == (
        "AlertsFailed", "Sum", 1, "GreaterThanOrEqualToThreshold")
    stale = alarms["NoSuccessfulRunAlarm"]
    assert (stale["MetricName"], stale["Statistic"], stale["Period"], stale["Threshold"]) == ("Succeeded", "Sum", 3600, 1)
    assert stale["ComparisonOperator"] == "LessThanThreshold" and stale["TreatMissingData"] == "breaching"
    assert stale["EvaluationPeriods"] == stale["DatapointsToAlarm"] == {"Ref": "NoSuccessAfterHours"}
    assert template["Parameters"]["NoSuccessAfterHours"]["MaxValue"] == 24  # CloudWatch: at most one day of periods
    queue = alarms["FailedRunsAlarm"]
    assert queue["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedRunQueue", "QueueName"]}}]


# -- Glue table and Athena query -------------------------------------------------------------------

_GLUE_TYPE = {"string": "string", "int64": "bigint", "bool": "boolean"}


def _glue_table(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["ReconcileTable"]["Properties"]["TableInput"]


def test_glue_table_columns_are_the_parquet_schema_the_reports_write(template: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    from costguard.s3reports import FRAME_COLUMNS, reconcile_parquet
    from tests.unit.test_alerts import make_result, sample_result

    columns = [(c["Name"], c["Type"]) for c in _glue_table(template)["StorageDescriptor"]["Columns"]]
    # A busy window and an empty one write the same schema: the one the table declares
    for result in (sample_result(), make_result([])):
        schema = pq.read_schema(io.BytesIO(reconcile_parquet(result)))
        assert [(f.name, _GLUE_TYPE[str(f.type)]) for f in schema] == columns
    assert [name for name, _ in columns] == list(FRAME_COLUMNS)


def test_glue_table_projects_the_date_folders_the_reports_are_written_to(template: dict[str, Any]) -> None:
    from costguard.ledger import SQLiteLedger
    from costguard.policy import PolicySet
    from costguard.s3reports import write_reports
    from tests.unit.test_alerts import sample_result

    table = _glue_table(template)
    params = table["Parameters"]
    assert table["PartitionKeys"] == [{"Name": "date", "Type": "string", "Comment": table["PartitionKeys"][0]["Comment"]}]
    assert (params["classification"], params["projection.enabled"], params["projection.date.type"]) == ("parquet", "true", "date")
    assert (params["projection.date.format"], params["projection.date.interval.unit"]) == ("yyyy-MM-dd", "DAYS")
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    location = params["storage.location.template"]["Fn::Sub"]
    assert location == "s3://${ReportBucket}/${ReportPrefix}/parquet/date=${!date}/"
    assert table["StorageDescriptor"]["Location"] == {"Fn::Sub": "s3://${ReportBucket}/${ReportPrefix}/parquet/"}
    with SQLiteLedger(":memory:") as ledger:
        keys = write_reports(sample_result(), ledger, PolicySet.empty(), "b", "team/reports", dry_run=True)
    # The Parquet file, and nothing else, sits in the projected folder of its date
    expected_folder = location.replace("s3://${ReportBucket}/", "").replace("${ReportPrefix}", "team/reports")
    in_table = [k for k in keys if k.startswith("team/reports/parquet/")]
    assert in_table == [expected_folder.replace("${!date}", "2026-11-23") + "reconcile.parquet"]


def test_named_query_reads_the_table_once_per_workflow_and_day(template: dict[str, Any]) -> None:
    query = template["Resources"]["SpendByWorkflowAndMonthQuery"]["Properties"]
    assert query["Database"] == {"Ref": "ReportDatabase"}
    sql = query["QueryString"]["Fn::Sub"]
    assert 'FROM "${ReportDatabase}"."${ReconcileTable}"' in sql
    assert 'PARTITION BY workflow, day ORDER BY "date" DESC' in sql and "WHERE freshness = 1" in sql
    assert "GROUP BY workflow, substr(day, 1, 7)" in sql
    columns = {c["Name"] for c in _glue_table(template)["StorageDescriptor"]["Columns"]}
    for used in re.findall(r"\b(?:sum|bool_or)\((?:CAST\()?(\w+)", sql):
        assert used in columns


class _BoolOr:
    """Trino's bool_or, for running the named query on SQLite."""

    def __init__(self) -> None:
        self.value = False

    def step(self, flag: int | None) -> None:
        self.value = self.value or bool(flag)

    def finalize(self) -> int:
        return int(self.value)


def test_named_query_counts_each_workflow_day_once_from_its_latest_report(template: dict[str, Any]) -> None:
    import sqlite3

    import pyarrow.parquet as pq

    from costguard.s3reports import reconcile_parquet
    from tests.unit.test_alerts import make_result, row

    # GIVEN two overlapping windows' reports: the later one has the final figure for 2026-11-22
    reports = {
        "2026-11-22": make_result([row("claims", "2026-11-21", "85"), row("claims", "2026-11-22", "120", estimated=True)],
                                  start=date(2026, 11, 21), end=date(2026, 11, 23)),
        "2026-11-23": make_result([row("claims", "2026-11-22", "130", billed="131"), row("triage", "2026-11-23", "40", estimated=True),
                                   row("claims", "2026-12-01", "7")],
                                  start=date(2026, 11, 22), end=date(2026, 11, 24)),
    }
    db = sqlite3.connect(":memory:")
    db.create_aggregate("bool_or", 1, _BoolOr)  # type: ignore[arg-type]
    columns = [c["Name"] for c in _glue_table(template)["StorageDescriptor"]["Columns"]]
    db.execute(f"CREATE TABLE reconcile ({', '.join(columns)}, date)")
    for partition, result in reports.items():
        for record in pq.read_table(io.BytesIO(reconcile_parquet(result))).to_pylist():
            db.execute(f"INSERT INTO reconcile VALUES ({', '.join('?' * (len(columns) + 1))})",
                       [record[c] for c in columns] + [partition])
    sql = template["Resources"]["SpendByWorkflowAndMonthQuery"]["Properties"]["QueryString"]["Fn::Sub"]
    sql = sql.replace('"${ReportDatabase}"."${ReconcileTable}"', '"main"."reconcile"')
    # WHEN the named query runs
    got = db.execute(sql).fetchall()
    # THEN 2026-11-22 counts once, with its latest (final, no longer estimated) figure: 85 + 130 for
    # claims in November, not 85 + 120 + 130
    assert [(w, m, float(metered), None if billed is None else float(billed), calls, estimated)
            for w, m, metered, billed, calls, _, _, estimated in got] == [
        ("claims", "2026-12", 7.0, None, 10, 0),
        ("claims", "2026-11", 215.0, 131.0, 20, 0),
        ("triage", "2026-11", 40.0, None, 10, 1),
    ]


# -- checkov ------------------------------------------------------------------------------------------

def _checkov() -> str | None:
    """checkov as a separate tool (it pins boto3, so it is not in the test extra): $COSTGUARD_CHECKOV,
    the repository's .venv-tools, or PATH."""
    candidates = [os.environ.get("COSTGUARD_CHECKOV"), str(TEMPLATE.parents[1] / ".venv-tools" / "bin" / "checkov"),
                  shutil.which("checkov")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


#: The checks each template skips, each with its reason inline (``Metadata: checkov: skip:``).
JUSTIFIED_SKIPS = {
    TEMPLATE: {
        ("CKV_AWS_119", "AWS::DynamoDB::Table.LedgerTable"),
        ("CKV_AWS_18", "AWS::S3::Bucket.ReportBucket"),
        ("CKV_AWS_158", "AWS::Logs::LogGroup.ReconcileLogGroup"),
        ("CKV_AWS_116", "AWS::Serverless::Function.ReconcileFunction"),
        ("CKV_AWS_117", "AWS::Serverless::Function.ReconcileFunction"),
        ("CKV_AWS_173", "AWS::Serverless::Function.ReconcileFunction"),
    },
    EXAMPLE: {
        ("CKV_AWS_158", "AWS::Logs::LogGroup.ActionLogGroup"),
        ("CKV_AWS_116", "AWS::Serverless::Function.OrdersFunction"),
        ("CKV_AWS_117", "AWS::Serverless::Function.OrdersFunction"),
        ("CKV_AWS_173", "AWS::Serverless::Function.OrdersFunction"),
    },
}


@pytest.mark.parametrize("template_file", [TEMPLATE, EXAMPLE], ids=["reconcile", "action-group-example"])
def test_checkov_finds_nothing_unjustified(template_file: Path) -> None:
    checkov = _checkov()
    if checkov is None:
        pytest.skip("checkov is not installed: pipx install checkov, or python -m venv .venv-tools && .venv-tools/bin/pip install checkov")
    run = subprocess.run(
        [checkov, "--file", str(template_file), "--framework", "cloudformation", "--output", "json",
         "--skip-download"],  # no network: the guidelines download is cosmetic
        capture_output=True, text=True, timeout=300, check=False,
    )
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}" for c in results["failed_checks"]]
    assert failed == []
    # Every skip carries its reason in the template
    skipped = {(c["check_id"], c["resource"]) for c in results["skipped_checks"]}
    assert skipped == JUSTIFIED_SKIPS[template_file]
    assert all(len(c["check_result"].get("suppress_comment", "")) > 40 for c in results["skipped_checks"])
    assert results["passed_checks"]
