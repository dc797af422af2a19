"""The policy language: loading, merging, validation errors with file/line/field, JSON Schema."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from costguard.errors import PolicyError, PolicyErrorDetail
from costguard.policy import (
    RULES,
    Budget,
    Limits,
    ModelRules,
    PolicyFile,
    PolicySet,
    WorkflowPolicy,
    check_policies,
    load_policies,
    policy_json_schema,
)

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path: Any) -> list[PolicyErrorDetail]:
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    return info.value.errors


def only(errors: list[PolicyErrorDetail], field: str) -> PolicyErrorDetail:
    matching = [e for e in errors if e.field == field]
    assert len(matching) == 1, f"expected one error on {field}, got {errors}"
    return matching[0]


# -- the shipped policies -------------------------------------------------------------------------


def test_shipped_policies_load_with_the_design_example_values_exactly() -> None:
    # GIVEN the policies/ directory shipped with the project
    # WHEN it is loaded as a directory
    policies = load_policies(SHIPPED)

    # THEN every file is read and claims-intake is exactly the DESIGN.md section 4 example
    assert {Path(s).name for s in policies.sources} == {"defaults.yaml", "claims-intake.yaml", "support-triage.yaml"}
    assert "claims-intake" in policies and "support-triage" in policies
    claims = policies.for_workflow("claims-intake")
    assert claims.mode == "enforce" and not claims.shadow
    assert claims.on_ledger_error == "allow"
    assert claims.unpriced == "alert"
    assert claims.default_model == SONNET
    assert claims.models.allow == ["anthropic.claude-3-5-sonnet-*", "amazon.nova-*"]
    assert claims.per_request.max_model_calls == 12
    assert claims.per_request.max_tool_calls == 10
    assert claims.per_request.max_tokens == 150000
    assert claims.per_request.max_tool_response_bytes == 16384
    cost = claims.per_request.max_cost_usd
    assert type(cost) is Decimal and cost == Decimal("1.50") and str(cost) == "1.50"
    assert claims.per_session.max_model_calls == 40
    assert claims.per_session.max_cost_usd == Decimal("5.00") and str(claims.per_session.max_cost_usd) == "5.00"
    assert claims.budget is not None
    assert claims.budget.daily_usd == Decimal("500") and type(claims.budget.daily_usd) is Decimal
    assert claims.budget.monthly_usd == Decimal("9000")
    assert claims.budget.alert_at_pct == [50, 80, 100]
    assert claims.budget.on_exhausted == "block"


def test_shipped_support_triage_is_a_shadow_converse_workflow_with_an_alerting_monthly_budget() -> None:
    triage = load_policies(SHIPPED).for_workflow("support-triage")
    assert triage.shadow
    assert triage.models.allows("amazon.nova-lite-v1:0")
    assert not triage.models.allows(SONNET)
    assert not triage.per_session.is_empty
    assert triage.budget is not None and triage.budget.monthly_usd is not None
    assert triage.budget.daily_usd is None
    assert triage.budget.on_exhausted == "alert"


def test_shipped_policies_are_valid_for_check_and_against_the_json_schema() -> None:
    assert check_policies(SHIPPED) == []
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    for path in sorted(SHIPPED.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert list(validator.iter_errors(document)) == [], path.name


def test_shipped_policies_can_be_listed_file_by_file() -> None:
    files = sorted(SHIPPED.glob("*.yaml"))
    assert load_policies(files).names() == load_policies(SHIPPED).names()
    assert load_policies([str(f) for f in files]).names() == ("claims-intake", "support-triage")


# -- merging --------------------------------------------------------------------------------------


MERGE_POLICY = """
version: 1
defaults:
  mode: shadow
  unpriced: block
  per_request:
    max_model_calls: 20
    max_cost_usd: 2.00
  per_session: {max_tokens: 100000}
  models: {allow: ["amazon.nova-*"]}
  budget: {daily_usd: 100, alert_at_pct: [90]}
workflows:
  narrow:
    mode: enforce
    per_request:
      max_tool_calls: 3
    models: {allow: ["anthropic.*"]}
    budget: {monthly_usd: 1000}
  plain:
  cleared:
    budget: null
    per_request: {max_cost_usd: null}
"""


def test_defaults_are_deep_merged_under_each_workflow(tmp_path: Path) -> None:
    # GIVEN defaults with nested per_request caps and a workflow that sets only one nested key
    policies = load_policies(write(tmp_path, "p.yaml", MERGE_POLICY))

    # WHEN the workflow's policy is resolved
    narrow = policies.for_workflow("narrow")

    # THEN the workflow's keys win, nested mappings merge key by key
    assert narrow.mode == "enforce"
    assert narrow.unpriced == "block"
    assert narrow.per_request.max_tool_calls == 3
    assert narrow.per_request.max_model_calls == 20
    assert narrow.per_request.max_cost_usd == Decimal("2.00")
    assert narrow.per_session.max_tokens == 100000
    assert narrow.budget is not None
    assert narrow.budget.daily_usd == Decimal("100") and narrow.budget.monthly_usd == Decimal("1000")
    # AND lists are replaced, not concatenated
    assert narrow.models.allow == ["anthropic.*"]
    assert narrow.budget.alert_at_pct == [90]


def test_workflow_without_settings_is_the_defaults_under_its_name(tmp_path: Path) -> None:
    policies = load_policies(write(tmp_path, "p.yaml", MERGE_POLICY))
    plain = policies.for_workflow("plain")
    assert plain.name == "plain"
    assert plain.model_dump(exclude={"name"}) == policies.defaults.model_dump(exclude={"name"})


def test_explicit_null_clears_an_inherited_value(tmp_path: Path) -> None:
    cleared = load_policies(write(tmp_path, "p.yaml", MERGE_POLICY)).for_workflow("cleared")
    assert cleared.budget is None
    assert cleared.per_request.max_cost_usd is None
    assert cleared.per_request.max_model_calls == 20


def test_unknown_workflow_gets_the_defaults(tmp_path: Path) -> None:
    policies = load_policies(write(tmp_path, "p.yaml", MERGE_POLICY))
    # GIVEN a workflow name no file defines
    assert "never-heard-of" not in policies
    # WHEN its policy is asked for
    unknown = policies.for_workflow("never-heard-of")
    # THEN it is the defaults, under the asked name, and the same object on the next ask
    assert unknown.name == "never-heard-of"
    assert policies.defaults.name == "*"
    assert unknown.mode == "shadow" and unknown.per_request.max_model_calls == 20
    assert policies.for_workflow("never-heard-of") is unknown
    assert policies.names() == ("cleared", "narrow", "plain")


def test_empty_policy_set_enforces_nothing() -> None:
    empty = PolicySet.empty()
    policy = empty.for_workflow("anything")
    assert policy.name == "anything" and policy.mode == "enforce"
    assert policy.per_request.is_empty and policy.per_session.is_empty
    assert policy.budget is None and policy.models.allow is None
    assert empty.names() == () and empty.sources == ()


def test_to_dict_is_json_ready_with_exact_money(tmp_path: Path) -> None:
    shown = load_policies(write(tmp_path, "p.yaml", MERGE_POLICY)).to_dict()
    assert shown["workflows"]["narrow"]["per_request"]["max_cost_usd"] == "2.00"
    assert shown["defaults"]["mode"] == "shadow"
    assert shown["sources"] == [str(tmp_path / "p.yaml")]


def test_policy_set_from_dict_and_from_yaml_use_the_same_rules() -> None:
    from_dict = PolicySet.from_dict({"version": 1, "workflows": {"w": {"per_request": {"max_cost_usd": "0.10"}}}})
    assert from_dict.for_workflow("w").per_request.max_cost_usd == Decimal("0.10")
    from_yaml = PolicySet.from_yaml("version: 1\nworkflows: {w: {per_request: {max_cost_usd: 0.10}}}\n")
    assert str(from_yaml.for_workflow("w").per_request.max_cost_usd) == "0.10"
    with pytest.raises(PolicyError) as info:
        PolicySet.from_dict({"version": 1, "workflows": {"w": {"per_request": {"max_tokens": -1}}}})
    assert info.value.errors[0].field == "workflows.w.per_request.max_tokens"
    assert info.value.errors[0].line is None


# -- money is Decimal -----------------------------------------------------------------------------


def test_every_money_field_is_a_decimal_built_from_the_yaml_text(tmp_path: Path) -> None:
    # GIVEN money written with trailing zeros and digits a binary float cannot represent
    path = write(
        tmp_path,
        "money.yaml",
        """
        version: 1
        defaults:
          per_session: {max_cost_usd: 0.10}
        workflows:
          w:
            per_request: {max_cost_usd: 0.1000000000000000055511151231257827}
            budget: {daily_usd: 12.30, monthly_usd: 1_000.05}
        """,
    )
    w = load_policies(path).for_workflow("w")
    values = {
        "per_request.max_cost_usd": w.per_request.max_cost_usd,
        "per_session.max_cost_usd": w.per_session.max_cost_usd,
        "budget.daily_usd": w.budget.daily_usd if w.budget else None,
        "budget.monthly_usd": w.budget.monthly_usd if w.budget else None,
    }
    # THEN every one is a Decimal with exactly the written digits
    assert all(type(v) is Decimal for v in values.values()), values
    assert str(values["per_request.max_cost_usd"]) == "0.1000000000000000055511151231257827"
    assert str(values["per_session.max_cost_usd"]) == "0.10"
    assert str(values["budget.daily_usd"]) == "12.30"
    assert values["budget.monthly_usd"] == Decimal("1000.05")


def test_money_accepts_ints_decimals_and_numeric_strings_only() -> None:
    assert Limits(max_cost_usd=2).max_cost_usd == Decimal(2)
    assert Limits(max_cost_usd=Decimal("0.25")).max_cost_usd == Decimal("0.25")
    assert Limits(max_cost_usd="1.50").max_cost_usd == Decimal("1.50")
    for bad in ("abc", "1.5x", True, -1, "NaN", "Infinity", [1]):
        with pytest.raises(ValueError):
            Limits(max_cost_usd=bad)
    with pytest.raises(ValueError):
        Budget(daily_usd=0)


def test_integer_limits_reject_booleans_floats_strings_and_negatives() -> None:
    assert Limits(max_model_calls=0).max_model_calls == 0
    for bad in (True, 1.5, Decimal("3"), "3", -1, [3]):
        with pytest.raises(ValueError):
            Limits(max_model_calls=bad)


def test_models_are_frozen_and_reject_unknown_fields() -> None:
    limits = Limits(max_tool_calls=3)
    with pytest.raises(ValueError):
        limits.max_tool_calls = 4  # type: ignore[misc]
    with pytest.raises(ValueError):
        Limits(max_tool_call=3)  # type: ignore[call-arg]
    assert not limits.is_empty and Limits().is_empty


def test_alert_percentages_are_sorted_and_unique() -> None:
    assert Budget(monthly_usd=10, alert_at_pct=[100, 50, 80, 50]).alert_at_pct == [50, 80, 100]
    assert Budget(monthly_usd=10).alert_at_pct == [50, 80, 100]
    for bad in (0, 1001, True):
        with pytest.raises(ValueError):
            Budget(monthly_usd=10, alert_at_pct=[bad])


# -- model allow-list -----------------------------------------------------------------------------


def test_allow_list_globs_match_the_raw_or_the_base_model_id() -> None:
    rules = ModelRules(allow=["anthropic.claude-3-5-sonnet-*", "amazon.nova-lite-v1:0"])
    # raw id matches a glob
    assert rules.allows(SONNET)
    # an exact id matches itself
    assert rules.allows("amazon.nova-lite-v1:0")
    # a cross-region profile id does not match by itself...
    assert not rules.allows("us." + SONNET)
    # ...but does when the caller passes the base model pricing resolved it to
    assert rules.allows("us." + SONNET, SONNET)
    assert rules.allows("arn:aws:bedrock:us-east-1:123:application-inference-profile/abc", SONNET)
    # matching is case-sensitive and whole-id
    assert not rules.allows("Anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert not rules.allows("amazon.nova-lite-v1:0-extra")
    assert not rules.allows("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0")


def test_no_allow_list_allows_every_model_and_an_empty_one_is_rejected() -> None:
    assert ModelRules().allows("anything", None)
    with pytest.raises(ValueError):
        ModelRules(allow=[])


def test_default_model_outside_the_merged_allow_list_is_an_error_at_the_workflow_key(tmp_path: Path) -> None:
    # GIVEN defaults that allow only Nova and a workflow whose default model is Sonnet
    path = write(
        tmp_path,
        "p.yaml",
        f"""
        version: 1
        defaults:
          models: {{allow: ["amazon.nova-*"]}}
        workflows:
          ok:
            default_model: us.amazon.nova-pro-v1:0
          broken:
            default_model: {SONNET}
        """,
    )
    # THEN the merged workflow is rejected, pointing at the workflow's key line
    error = only(errors_of(path), "workflows.broken.default_model")
    assert error.line == 7
    assert "not allowed by models.allow" in error.message


# -- errors: file, line, field --------------------------------------------------------------------


def test_unknown_key_names_file_line_dotted_field_and_allowed_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.yaml",
        """
        version: 1
        workflows:
          claims-intake:
            per_request:
              max_modle_calls: 12
        """,
    )
    [error] = errors_of(path)
    assert error.file == str(path)
    assert error.line == 5
    assert error.field == "workflows.claims-intake.per_request.max_modle_calls"
    assert error.message.startswith("unknown key 'max_modle_calls' (allowed: max_model_calls, max_tool_calls")
    assert "did you mean 'max_model_calls'" in error.message
    assert str(error) == f"{path}:5: workflows.claims-intake.per_request.max_modle_calls: {error.message}"


def test_wrong_types_are_reported_with_human_messages(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "types.yaml",
        """
        version: 1
        defaults:
          mode: sometimes
        workflows:
          w:
            on_ledger_error: maybe
            per_request:
              max_model_calls: 12x
              max_tool_calls: 2.5
              max_tokens: true
              max_cost_usd: cheap
            per_session: 5
            models: {allow: "amazon.*"}
            budget:
              daily_usd: -1
              alert_at_pct: [0, 80]
        """,
    )
    errors = errors_of(path)
    assert only(errors, "defaults.mode").message == "must be one of enforce, shadow, got 'sometimes'"
    assert only(errors, "defaults.mode").line == 3
    assert only(errors, "workflows.w.on_ledger_error").message == "must be one of allow, deny, got 'maybe'"
    assert only(errors, "workflows.w.per_request.max_model_calls").message == "must be an integer >= 0, got '12x'"
    assert only(errors, "workflows.w.per_request.max_model_calls").line == 8
    assert only(errors, "workflows.w.per_request.max_tool_calls").message == "must be an integer >= 0, got 2.5"
    assert only(errors, "workflows.w.per_request.max_tokens").message == "must be an integer >= 0, got true"
    assert "got 'cheap'" in only(errors, "workflows.w.per_request.max_cost_usd").message
    assert only(errors, "workflows.w.per_session").message == "must be a mapping, got 5"
    assert only(errors, "workflows.w.per_session").line == 12
    assert only(errors, "workflows.w.models.allow").message.startswith("must be a list")
    assert "> 0" in only(errors, "workflows.w.budget.daily_usd").message
    assert only(errors, "workflows.w.budget.alert_at_pct[0]").line == 16
    assert len(errors) == 10


def test_missing_or_unsupported_version_and_bad_workflow_names(tmp_path: Path) -> None:
    missing = write(tmp_path, "a.yaml", "workflows: {}\n")
    assert only(errors_of(missing), "version").message.startswith("missing required key 'version'")
    wrong = write(tmp_path, "b.yaml", "version: 2\n")
    error = only(errors_of(wrong), "version")
    assert error.line == 1 and "unsupported policy version 2" in error.message
    names = write(
        tmp_path,
        "c.yaml",
        """
        version: 1
        workflows:
          "has space": {}
          yes: {}
          -leading-dash: {}
        """,
    )
    errors = errors_of(names)
    assert only(errors, "workflows.has space").line == 3
    assert only(errors, "workflows.yes").message.endswith("quote it in YAML")
    assert only(errors, "workflows.-leading-dash").line == 5


def test_duplicate_keys_in_one_file_are_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "dup.yaml",
        """
        version: 1
        workflows:
          w:
            mode: shadow
            mode: enforce
        """,
    )
    [error] = errors_of(path)
    assert (error.line, error.field) == (5, "workflows.w.mode")
    assert "duplicate key 'mode' (first defined at line 4)" in error.message


def test_all_errors_in_all_files_are_reported_together(tmp_path: Path) -> None:
    # GIVEN two files, each with several mistakes
    write(
        tmp_path,
        "a.yaml",
        """
        version: 1
        workflows:
          one:
            mode: loud
            per_request: {max_tool_calls: -3}
        """,
    )
    write(
        tmp_path,
        "b.yml",
        """
        version: 1
        extra: true
        workflows:
          two:
            budget: {montly_usd: 5}
        """,
    )
    # WHEN the directory is loaded
    errors = errors_of(tmp_path)
    # THEN one PolicyError lists every problem, in file then line order
    where = [(Path(e.file).name, e.line, e.field) for e in errors]
    assert where == [
        ("a.yaml", 4, "workflows.one.mode"),
        ("a.yaml", 5, "workflows.one.per_request.max_tool_calls"),
        ("b.yml", 2, "extra"),
        ("b.yml", 5, "workflows.two.budget.montly_usd"),
    ]
    assert check_policies(tmp_path) == errors


def test_a_workflow_defined_in_two_files_is_an_error_naming_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "version: 1\nworkflows:\n  w: {}\n")
    second = write(tmp_path, "b.yaml", "version: 1\n\nworkflows:\n  x: {}\n  w: {mode: shadow}\n")
    [error] = errors_of(tmp_path)
    assert (error.file, error.line, error.field) == (str(second), 5, "workflows.w")
    assert f"{first}:3" in error.message


def test_defaults_may_appear_in_one_file_only(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "version: 1\ndefaults: {mode: shadow}\n")
    second = write(tmp_path, "b.yaml", "version: 1\nworkflows: {}\ndefaults: {mode: enforce}\n")
    [error] = errors_of([first, second])
    assert (error.file, error.line, error.field) == (str(second), 3, "defaults")
    assert f"{first}:2" in error.message


def test_yaml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broken.yaml",
        """
        version: 1
        workflows:
          w:
            per_request: {max_model_calls: 3
          x: {}
        """,
    )
    [error] = errors_of(path)
    assert error.file == str(path)
    assert error.line == 5
    assert error.message.startswith("invalid YAML")


def test_missing_path_empty_file_empty_directory_and_non_mapping(tmp_path: Path) -> None:
    [missing] = errors_of(tmp_path / "nope.yaml")
    assert missing.message == "no such file or directory"
    assert missing.file == str(tmp_path / "nope.yaml")

    empty = write(tmp_path, "empty.yaml", "# only a comment\n")
    [error] = errors_of(empty)
    assert error.file == str(empty) and "empty" in error.message

    empty_dir = tmp_path / "none"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("not a policy")
    [error] = errors_of(empty_dir)
    assert "no policy files" in error.message

    listing = write(tmp_path, "list.yaml", "- version: 1\n")
    [error] = errors_of(listing)
    assert error.line == 1 and "must be a mapping" in error.message

    with pytest.raises(PolicyError, match="no policy files given"):
        load_policies([])


def test_directory_loading_reads_yaml_and_yml_only_sorted(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "version: 1\nworkflows: {beta: {}}\n")
    write(tmp_path, "a.yaml", "version: 1\nworkflows: {alpha: {}}\n")
    write(tmp_path, "c.json", "{not yaml at all")
    write(tmp_path, ".hidden.yaml", "garbage: [")
    policies = load_policies(tmp_path)
    assert [Path(s).name for s in policies.sources] == ["a.yaml", "b.yml"]
    assert policies.names() == ("alpha", "beta")


def test_yaml_anchors_and_merge_keys_work_and_errors_still_have_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "anchors.yaml",
        """
        version: 1
        defaults:
          per_request: &generous
            max_model_calls: 30
            max_cost_usd: 3.00
        workflows:
          a:
            per_request:
              <<: *generous
              max_tool_calls: 4
          b:
            per_request:
              <<: *generous
              max_tokens: lots
        """,
    )
    [error] = errors_of(path)
    assert (error.line, error.field) == (14, "workflows.b.per_request.max_tokens")
    a = PolicySet.from_yaml(path.read_text().replace("lots", "1000")).for_workflow("a")
    assert a.per_request.max_cost_usd == Decimal("3.00") and a.per_request.max_tool_calls == 4


# -- JSON Schema and constants --------------------------------------------------------------------


def test_json_schema_is_draft_2020_12_and_closed_to_unknown_keys() -> None:
    schema = policy_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"version", "defaults", "workflows"}
    assert schema["required"] == ["version"]
    assert schema["properties"]["workflows"]["additionalProperties"] is False
    for name in ("Limits", "ModelRules", "Budget", "DefaultsSection", "WorkflowSection"):
        assert schema["$defs"][name]["additionalProperties"] is False, name
    limits = schema["$defs"]["Limits"]["properties"]
    assert set(limits) == {
        "max_model_calls",
        "max_tool_calls",
        "max_tokens",
        "max_cost_usd",
        "max_tool_response_bytes",
        "max_repeated_tool_calls",
    }
    assert set(schema["$defs"]["ModelRules"]["properties"]) == {"allow", "pin"}
    assert {"type": "number", "minimum": 0} in limits["max_cost_usd"]["anyOf"]
    assert {"type": "integer", "minimum": 0} in limits["max_model_calls"]["anyOf"]
    assert schema == PolicyFile.model_json_schema() | {
        "$schema": schema["$schema"],
        "title": schema["title"],
        "description": schema["description"],
    }


def test_json_schema_rejects_what_the_loader_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    good = {"version": 1, "workflows": {"w": {"per_request": {"max_model_calls": 3, "max_cost_usd": 1.5}}}}
    assert validator.is_valid(good)
    assert not validator.is_valid({"version": 1, "workflows": {"w": {"per_request": {"max_modle_calls": 3}}}})
    assert not validator.is_valid({"version": 1, "workflows": {"bad name": {}}})
    assert not validator.is_valid({"version": 2})
    assert not validator.is_valid({"workflows": {}})
    assert not validator.is_valid({"version": 1, "workflows": {"w": {"mode": "loud"}}})


def test_rules_name_every_enforceable_rule() -> None:
    limits = [f"{scope}.{field}" for scope in ("per_request", "per_session") for field in Limits.model_fields]
    assert set(RULES) == {*limits, "models.allow", "models.pin", "budget.daily_usd", "budget.monthly_usd", "kill_switch", "unpriced", "unmetered"}
    assert isinstance(RULES, tuple) and len(RULES) == len(set(RULES)) == 19


def test_workflow_policy_defaults_and_shadow_property() -> None:
    policy = WorkflowPolicy(name="w")
    assert (policy.mode, policy.on_ledger_error, policy.unpriced) == ("enforce", "allow", "alert")
    assert not policy.shadow and WorkflowPolicy(name="w", mode="shadow").shadow
    with pytest.raises(ValueError):
        WorkflowPolicy(name="w", mode="loud")  # type: ignore[arg-type]


# -- actions (action_guard rules) -------------------------------------------------------------------


ACTIONS_POLICY = """
version: 1
defaults:
  per_request: {max_tool_response_bytes: 65536}
  actions:
    claims:
      max_response_bytes: 32768
      trim: {max_string_bytes: 2048}
workflows:
  claims-intake:
    actions:
      claims:
        trim: {max_list_items: 25}
      "claims GET /claims":
        max_response_bytes: 16384
        trim:
          keep: ["items[].id", "items[].status", "summary", "meta.total"]
          drop: ["items[].raw"]
      "claims /claims/*": {max_response_bytes: 4096}
      "claims.create_claim": {idempotent: true, idempotency_ttl_s: 600}
      "claim*.*": {max_response_bytes: 1000}
  plain:
"""


def test_actions_parse_merge_defaults_and_pick_the_most_specific_rule(tmp_path: Path) -> None:
    # GIVEN defaults with an action-group rule and a workflow refining it
    policies = load_policies(write(tmp_path, "a.yaml", ACTIONS_POLICY))
    claims = policies.for_workflow("claims-intake")

    # THEN the group rule is deep-merged: the workflow's trim adds to the defaults' trim
    group = claims.action_rule("claims")
    assert group is not None and group.max_response_bytes == 32768
    assert group.trim is not None and (group.trim.max_string_bytes, group.trim.max_list_items) == (2048, 25)
    assert group.idempotent is False and group.idempotency_ttl_s == 3600

    # AND method+path beats path-only beats group; functions match function selectors
    assert claims.action_match("claims", "/claims", "GET")[0] == "claims GET /claims"  # type: ignore[index]
    assert claims.action_match("claims", "/claims", "get")[0] == "claims GET /claims"  # type: ignore[index]
    assert claims.action_match("claims", "/claims/{claimId}", "GET")[0] == "claims /claims/*"  # type: ignore[index]
    assert claims.action_match("claims", "/claims", "POST")[0] == "claims"  # type: ignore[index]
    assert claims.action_match("claims", None, None, "create_claim")[0] == "claims.create_claim"  # type: ignore[index]
    rule = claims.action_rule("claims", function="create_claim")
    assert rule is not None and rule.idempotent and rule.idempotency_ttl_s == 600
    assert claims.action_match("claims", None, None, "list")[0] == "claim*.*"  # type: ignore[index]
    assert claims.action_rule("billing", "/claims", "GET") is None

    # AND a workflow without its own actions, or an unknown one, inherits the defaults' rules
    for name in ("plain", "never-configured"):
        inherited = policies.for_workflow(name).action_rule("claims", "/x", "GET")
        assert inherited is not None and inherited.max_response_bytes == 32768


def test_actions_null_clears_an_inherited_rule(tmp_path: Path) -> None:
    text = """
    version: 1
    defaults:
      actions:
        claims: {max_response_bytes: 10}
    workflows:
      w:
        actions:
          claims: null
    """
    policies = load_policies(write(tmp_path, "n.yaml", text))
    assert policies.for_workflow("w").action_rule("claims") is None


def test_bad_actions_report_file_line_and_field(tmp_path: Path) -> None:
    # GIVEN an actions section with a typo in every way possible
    path = write(tmp_path, "bad.yaml", """
    version: 1
    workflows:
      w:
        actions:
          "claims GIT /claims": {}
          "claims/claims": {}
          claims.create:
            max_respons_bytes: 10
            idempotent: "yes"
            idempotency_ttl_s: 0
            trim:
              keep: ["items..id"]
              max_list_items: 0
              maxlist: 3
          claims.other:
            trim: {drop: []}
    """)

    # WHEN it is loaded
    errors = errors_of(path)

    # THEN each problem names its line and field
    selector = only(errors, "workflows.w.actions.claims GIT /claims")
    assert selector.line == 5 and "'GIT' is not an HTTP method" in selector.message
    assert "<actionGroup> <apiPath>" in selector.message
    assert only(errors, "workflows.w.actions.claims/claims").line == 6
    typo = only(errors, "workflows.w.actions.claims.create.max_respons_bytes")
    assert typo.line == 8 and "did you mean 'max_response_bytes'" in typo.message
    assert only(errors, "workflows.w.actions.claims.create.idempotent").message == "must be true or false, got 'yes'"
    assert only(errors, "workflows.w.actions.claims.create.idempotency_ttl_s").line == 10
    keep = only(errors, "workflows.w.actions.claims.create.trim.keep[0]")
    assert keep.line == 12 and "invalid JSON path 'items..id'" in keep.message
    assert only(errors, "workflows.w.actions.claims.create.trim.max_list_items").line == 13
    assert "unknown key 'maxlist'" in only(errors, "workflows.w.actions.claims.create.trim.maxlist").message
    assert "at least one JSON path" in only(errors, "workflows.w.actions.claims.other.trim.drop").message
    assert all(e.file == str(path) for e in errors)


@pytest.mark.parametrize(
    "selector",
    ["claims", "claims.search_claims", "claims /claims/{claimId}", "claims GET /claims/{claimId}",
     "claims delete /claims/*", "*", "claims-v2_x *", "claims * /claims"],
)
def test_valid_action_selectors(selector: str) -> None:
    policies = PolicySet.from_dict({"version": 1, "workflows": {"w": {"actions": {selector: {}}}}})
    assert selector in policies.for_workflow("w").actions


@pytest.mark.parametrize(
    "selector", ["", "claims GET", "claims GET /x extra", "claims.a.b", "claims claims/x", "a b/c", "claims FETCH /x"]
)
def test_invalid_action_selectors(selector: str) -> None:
    with pytest.raises(PolicyError) as info:
        PolicySet.from_dict({"version": 1, "workflows": {"w": {"actions": {selector: {}}}}})
    assert "invalid action selector" in str(info.value)


def test_json_schema_closes_action_rules() -> None:
    schema = policy_json_schema()
    for name in ("ActionRule", "ActionTrim"):
        assert schema["$defs"][name]["additionalProperties"] is False, name
    assert set(schema["$defs"]["ActionRule"]["properties"]) == {
        "max_response_bytes", "trim", "idempotent", "idempotency_ttl_s"
    }
