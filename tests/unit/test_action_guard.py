"""action_guard: trims, size limits, notices, idempotent writes, shadow mode and ledger failures.

Events and responses have the exact shape Bedrock uses for action group Lambdas
(messageVersion 1.0, OpenAPI and function-details formats). The ledger is a SQLiteLedger in
tmp_path (a flaky subclass stands in for an unreachable ledger).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from costguard.action_guard import (
    METRIC_BYTES_SAVED,
    METRIC_REPLACED,
    METRIC_RESPONSE_BYTES,
    METRIC_TRIMMED,
    CompiledTrim,
    action_guard,
    shape_body,
    truncate_utf8,
    utf8_len,
)
from costguard.errors import LedgerError
from costguard.ledger import SQLiteLedger
from costguard.policy import ActionTrim, PolicySet

# -- real-shaped events and responses --------------------------------------------------------------


def openapi_event(
    *,
    api_path: str = "/claims",
    method: str = "GET",
    params: dict[str, str] | None = None,
    body: dict[str, str] | None = None,
    session: str = "sess-1",
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "messageVersion": "1.0",
        "agent": {"name": "claims-agent", "id": "AGENT1", "alias": "ALIAS1", "version": "3"},
        "inputText": "show me open claims",
        "sessionId": session,
        "actionGroup": "claims",
        "apiPath": api_path,
        "httpMethod": method,
        "parameters": [{"name": k, "type": "string", "value": v} for k, v in (params or {}).items()],
        "sessionAttributes": dict(attributes or {}),
        "promptSessionAttributes": {"tz": "UTC"},
    }
    if body is not None:
        event["requestBody"] = {
            "content": {
                "application/json": {
                    "properties": [{"name": k, "type": "string", "value": v} for k, v in body.items()]
                }
            }
        }
    return event


def function_event(
    function: str = "search_claims",
    *,
    params: dict[str, str] | None = None,
    session: str = "sess-1",
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "agent": {"name": "claims-agent", "id": "AGENT1", "alias": "ALIAS1", "version": "3"},
        "inputText": "file a claim",
        "sessionId": session,
        "actionGroup": "claims",
        "function": function,
        "parameters": [{"name": k, "type": "string", "value": v} for k, v in (params or {}).items()],
        "sessionAttributes": dict(attributes or {}),
        "promptSessionAttributes": {},
    }


def openapi_response(event: dict[str, Any], body: str, status: int = 200) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "response": {
            "actionGroup": event["actionGroup"],
            "apiPath": event["apiPath"],
            "httpMethod": event["httpMethod"],
            "httpStatusCode": status,
            "responseBody": {"application/json": {"body": body}},
        },
        "sessionAttributes": {"last": "search"},
        "promptSessionAttributes": {},
    }


def function_response(event: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "response": {
            "actionGroup": event["actionGroup"],
            "function": event["function"],
            "functionResponse": {"responseBody": {"TEXT": {"body": text}}},
        },
        "sessionAttributes": {},
        "promptSessionAttributes": {},
    }


def body_of(response: dict[str, Any]) -> str:
    inner = response["response"]
    if "responseBody" in inner:
        return str(inner["responseBody"]["application/json"]["body"])
    return str(inner["functionResponse"]["responseBody"]["TEXT"]["body"])


def claims_payload(count: int = 200) -> dict[str, Any]:
    """A verbose nested search result, as real claim systems return them."""
    return {
        "items": [
            {
                "id": f"C-{i:05d}",
                "status": "open" if i % 3 else "review",
                "claimant": {"name": f"Claimant {i}", "email": f"c{i}@example.com", "phone": "+1-555-0100"},
                "history": [{"ts": f"2024-01-{d + 1:02d}T10:00:00Z", "note": "status change " * 5} for d in range(5)],
                "raw": {"source": "mainframe", "blob": "x" * 200},
            }
            for i in range(count)
        ],
        "summary": {"open": count * 2 // 3, "review": count // 3},
        "meta": {"total": count, "page": 1, "debug": {"trace": "y" * 500}},
    }


def policies(actions: dict[str, Any] | None = None, *, limit: int | None = 4096, **workflow: Any) -> PolicySet:
    section: dict[str, Any] = dict(workflow)
    if limit is not None:
        section["per_request"] = {"max_tool_response_bytes": limit}
    if actions is not None:
        section["actions"] = actions
    return PolicySet.from_dict({"version": 1, "workflows": {"claims-intake": section}})


CONTEXT = SimpleNamespace(aws_request_id="req-1", function_name="claims-actions")


@pytest.fixture()
def ledger(tmp_path: Path) -> SQLiteLedger:
    led = SQLiteLedger(tmp_path / "ledger.db")
    yield led  # type: ignore[misc]
    led.close()


class Recorder:
    """A metrics sink that remembers what it was given."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, float, str, str]] = []

    def add(self, name: str, value: float, unit: str, *, workflow: str, model_id: str | None = None) -> None:
        self.samples.append((name, value, unit, workflow))


class BrokenSink:
    def add(self, name: str, value: float, unit: str, *, workflow: str, model_id: str | None = None) -> None:
        raise RuntimeError("CloudWatch is down")


class FlakyLedger(SQLiteLedger):
    """A SQLite ledger whose writes fail, like an unreachable table."""

    def record_action(self, record: Any) -> None:
        raise LedgerError("ledger table unreachable")

    def claim_idempotency_key(self, key: str, now_ms: int, ttl_ms: int) -> Any:
        raise LedgerError("ledger table unreachable")


# -- bytes and trimming: pure functions --------------------------------------------------------------


def test_utf8_len_counts_bytes_not_characters() -> None:
    assert utf8_len("abc") == 3
    assert utf8_len("é" * 10) == 20
    assert utf8_len("🙂") == 4
    assert utf8_len("\ud800") == 3  # a lone surrogate json.loads can produce does not crash


@pytest.mark.parametrize("text", ["é" * 50, "🙂" * 30, "aé🙂" * 20, "日本語テキスト" * 10])
def test_truncate_utf8_never_splits_a_character_and_respects_the_budget(text: str) -> None:
    for budget in range(1, utf8_len(text) + 2):
        cut, was_cut = truncate_utf8(text, budget)
        encoded = cut.encode("utf-8")  # raises if a character was split into an invalid sequence
        assert len(encoded) <= budget
        assert was_cut == (utf8_len(text) > budget)
        if was_cut and budget > 3:
            assert cut.endswith("…")
            assert text.startswith(cut[:-1])


def test_compiled_trim_keep_drop_caps_and_counts_without_mutating_the_input() -> None:
    # GIVEN a nested document and a spec keeping ids and statuses of at most 3 items
    data = claims_payload(10)
    original = json.dumps(data)
    spec = ActionTrim(keep=["items[].id", "items[].status", "items[].claimant", "summary", "meta.total"],
                      drop=["items[].claimant.phone"], max_list_items=3)

    # WHEN it is applied
    out, stats = CompiledTrim(spec).apply(data)

    # THEN only the kept paths survive, lists are cut and the input is untouched
    assert json.dumps(data) == original
    assert len(out["items"]) == 3
    assert out["items"][0] == {
        "id": "C-00000", "status": "review", "claimant": {"name": "Claimant 0", "email": "c0@example.com"}
    }
    assert out["summary"] == data["summary"]
    assert out["meta"] == {"total": 10}
    assert stats.items_dropped == 7
    # per kept item: history, raw dropped by keep, phone by drop (3 each) + meta.page, meta.debug
    assert stats.fields_dropped == 3 * 3 + 2
    assert stats.strings_truncated == 0


def test_compiled_trim_wildcards_root_lists_and_string_caps() -> None:
    data = [{"a": {"x": 1, "y": 2}, "b": {"x": 3, "z": "é" * 40}}]
    out, stats = CompiledTrim(ActionTrim(keep=["[].*.x", "[].b.z"], max_string_bytes=11)).apply(data)
    assert out == [{"a": {"x": 1}, "b": {"x": 3, "z": "é" * 4 + "…"}}]
    assert stats.fields_dropped == 1 and stats.strings_truncated == 1
    assert utf8_len(out[0]["b"]["z"]) <= 11


def test_shape_body_passes_small_bodies_untouched_without_parsing() -> None:
    body = '{ "pretty": true }'
    shaped = shape_body(body, None, 100)
    assert shaped.text is body and not shaped.changed and not shaped.over_limit


def test_shape_body_compacts_pretty_json_that_is_over_the_limit() -> None:
    # GIVEN pretty-printed JSON just over the limit and no trim spec
    body = json.dumps({"items": list(range(50))}, indent=4)
    compact = json.dumps({"items": list(range(50))}, separators=(",", ":"))
    # WHEN shaped against a limit the compact form fits
    shaped = shape_body(body, None, len(compact) + 5)
    # THEN whitespace removal alone brings it under
    assert shaped.text == compact and not shaped.over_limit and shaped.changed


def test_shape_body_non_json_is_only_measured_or_cut_at_a_character_boundary() -> None:
    text = "Claim C-1 note: " + "é" * 100
    assert shape_body(text, None, 50).over_limit
    assert shape_body(text, None, 50).text is text
    shaped = shape_body(text, CompiledTrim(ActionTrim(max_string_bytes=41)), 50)
    assert not shaped.over_limit and utf8_len(shaped.text) <= 41 and shaped.stats.strings_truncated == 1
    shaped.text.encode("utf-8")
    # Invalid JSON that merely looks like JSON is treated as text, not "repaired".
    assert shape_body("{not json", CompiledTrim(ActionTrim(keep=["a"])), 100).text == "{not json"


# -- OpenAPI format ------------------------------------------------------------------------------------


def test_openapi_oversize_nested_json_is_trimmed_under_the_limit(ledger: SQLiteLedger) -> None:
    # GIVEN a search action returning ~100 KB of nested JSON and a rule that keeps the essentials
    ps = policies(
        {"claims GET /claims": {"max_response_bytes": 8192, "trim": {
            "keep": ["items[].id", "items[].status", "summary", "meta.total"], "max_list_items": 50}}}
    )
    payload = claims_payload(200)
    metrics = Recorder()

    @action_guard(ps, workflow="claims-intake", ledger=ledger, metrics=metrics)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, json.dumps(payload, indent=2))

    event = openapi_event(params={"status": "open"})
    original_size = utf8_len(json.dumps(payload, indent=2))

    # WHEN the agent calls it
    response = handler(event, CONTEXT)

    # THEN the body is valid compact JSON under the limit, with the trim noted, envelope intact
    body = body_of(response)
    assert utf8_len(body) <= 8192
    data = json.loads(body)
    assert len(data["items"]) == 50 and set(data["items"][0]) == {"id", "status"}
    assert data["meta"] == {"total": 200}
    assert data["_costguard"] == {"items_dropped": 150, "strings_truncated": 0}
    inner = response["response"]
    assert (inner["actionGroup"], inner["apiPath"], inner["httpMethod"], inner["httpStatusCode"]) == (
        "claims", "/claims", "GET", 200
    )
    assert response["messageVersion"] == "1.0" and response["sessionAttributes"] == {"last": "search"}
    # AND the ledger holds sizes and counts only
    (record,) = ledger.actions()
    assert record.outcome == "trimmed" and record.action == "claims /claims GET"
    assert record.bytes_before == original_size and record.bytes_after == utf8_len(body)
    assert record.items_dropped == 150 and record.fields_dropped > 0
    assert (record.session_id, record.request_id, record.agent_id) == ("sess-1", "req-1", "AGENT1")
    assert record.latency_ms is not None and ledger.violations() == []
    names = {name: value for name, value, _, _ in metrics.samples}
    assert names[METRIC_RESPONSE_BYTES] == original_size
    assert names[METRIC_BYTES_SAVED] == original_size - utf8_len(body)
    assert names[METRIC_TRIMMED] == 1 and names[METRIC_REPLACED] == 0


def test_openapi_still_oversize_is_replaced_by_a_valid_json_notice_with_hints(ledger: SQLiteLedger) -> None:
    # GIVEN a trim that cannot bring the response under the limit
    ps = policies({"claims GET /claims": {"max_response_bytes": 2048, "trim": {"drop": ["meta"]}}})

    @action_guard(ps, workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, json.dumps(claims_payload(100)))

    event = openapi_event(params={"limit": "500", "page": "1", "claimant": "Smith"})
    handler_response_before = openapi_response(event, "x")  # shape reference

    # WHEN it runs
    response = handler(event, CONTEXT)

    # THEN the agent gets a small, valid JSON notice telling it how to ask for less
    notice = json.loads(body_of(response))["costguard"]
    assert notice["error"] == "response_too_large"
    # observed: the payload without "meta", re-serialised compactly (UTF-8 bytes)
    trimmed = {k: v for k, v in claims_payload(100).items() if k != "meta"}
    observed = utf8_len(json.dumps(trimmed, separators=(",", ":"), ensure_ascii=False))
    assert notice["limit_bytes"] == 2048 and notice["observed_bytes"] == observed == 91_693
    assert notice["action"] == "claims /claims GET"
    assert "limit=500" in notice["hint"] and "page=1" in notice["hint"] and "claimant" not in notice["hint"]
    assert utf8_len(body_of(response)) < 2048
    assert set(response["response"]) == set(handler_response_before["response"])
    assert response["response"]["httpStatusCode"] == 200
    # AND an enforced ResponseTooLarge violation names the action rule
    (violation,) = ledger.violations()
    assert violation.kind == "ResponseTooLarge" and violation.enforced
    assert violation.rule == "actions.claims GET /claims.max_response_bytes"
    assert violation.limit == "2048" and violation.observed == str(observed)
    assert violation.session_id == "sess-1" and violation.request_id == "req-1"
    assert "Smith" not in json.dumps(violation.detail)  # parameter values are not stored
    (record,) = ledger.actions()
    assert record.outcome == "replaced" and record.bytes_after == utf8_len(body_of(response))


def test_workflow_limit_applies_without_an_action_rule(ledger: SQLiteLedger) -> None:
    @action_guard(policies(limit=100), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, json.dumps({"rows": ["r" * 20] * 10}))

    response = handler(openapi_event(), CONTEXT)
    assert json.loads(body_of(response))["costguard"]["error"] == "response_too_large"
    assert ledger.violations()[0].rule == "per_request.max_tool_response_bytes"


def test_small_response_passes_through_unchanged(ledger: SQLiteLedger) -> None:
    @action_guard(policies(), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, '{"id": "C-1"}')

    event = openapi_event(api_path="/claims/{claimId}", params={"claimId": "C-1"})
    expected = openapi_response(event, '{"id": "C-1"}')
    assert handler(event, CONTEXT) == expected
    (record,) = ledger.actions()
    assert record.outcome == "passed" and record.bytes_before == record.bytes_after == 13


def test_tiny_limit_still_gets_a_valid_notice(ledger: SQLiteLedger) -> None:
    @action_guard(policies(limit=10), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, json.dumps({"rows": list(range(100))}))

    notice = json.loads(body_of(handler(openapi_event(), CONTEXT)))["costguard"]
    assert notice["error"] == "response_too_large" and "hint" not in notice


# -- function-details format ---------------------------------------------------------------------------------


def test_function_format_oversize_text_is_replaced_with_a_reprompt_notice(ledger: SQLiteLedger) -> None:
    # GIVEN a function returning plain text: 300 "é" is 300 characters but 600 bytes
    @action_guard(policies({"claims.search_claims": {"max_response_bytes": 500}}), workflow="claims-intake",
                  ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "é" * 300)

    event = function_event(params={"max_results": "200"})

    # WHEN it runs
    response = handler(event, CONTEXT)

    # THEN bytes (not characters) were measured, and the model is re-prompted with a text notice
    inner = response["response"]
    assert inner["function"] == "search_claims" and inner["actionGroup"] == "claims"
    assert inner["functionResponse"]["responseState"] == "REPROMPT"
    text = inner["functionResponse"]["responseBody"]["TEXT"]["body"]
    assert "response_too_large" in text and "600 bytes" in text and "max_results=200" in text
    assert ledger.actions()[0].bytes_before == 600
    assert ledger.violations()[0].rule == "actions.claims.search_claims.max_response_bytes"


def test_function_format_json_text_is_trimmed_and_unicode_is_cut_cleanly(ledger: SQLiteLedger) -> None:
    # GIVEN a function returning JSON text full of accented letters and emoji
    payload = {"notes": ["é" * 300, "🙂" * 300, "plain"], "id": "C-1"}
    spec = {"claims.get_notes": {"max_response_bytes": 400, "trim": {"max_string_bytes": 101}}}

    @action_guard(policies(spec), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, json.dumps(payload, ensure_ascii=False))

    # WHEN it runs
    response = handler(function_event("get_notes"), CONTEXT)

    # THEN every string fits its byte budget, no character is split, the JSON is valid
    body = body_of(response)
    data = json.loads(body)
    assert utf8_len(body) <= 400
    assert data["notes"][0] == "é" * 49 + "…"  # 98 + 3 bytes
    assert data["notes"][1] == "🙂" * 24 + "…"  # 96 + 3 bytes
    assert data["notes"][2] == "plain" and data["id"] == "C-1"
    assert data["_costguard"]["strings_truncated"] == 2
    assert "responseState" not in response["response"]["functionResponse"]
    assert ledger.actions()[0].strings_truncated == 2


def test_non_json_function_text_is_cut_when_max_string_bytes_is_set(ledger: SQLiteLedger) -> None:
    @action_guard(policies({"claims": {"trim": {"max_string_bytes": 64}}}), workflow="claims-intake",
                  ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "Résumé of claim: " + "données " * 50)

    text = body_of(handler(function_event(), CONTEXT))
    assert utf8_len(text) <= 64 and text.startswith("Résumé of claim: ") and text.endswith("…")
    assert ledger.actions()[0].outcome == "trimmed"


# -- shadow mode --------------------------------------------------------------------------------------------


def test_shadow_mode_records_the_would_be_violation_and_returns_the_original(ledger: SQLiteLedger) -> None:
    # GIVEN a workflow in shadow mode with a limit the response exceeds
    ps = policies({"claims": {"max_response_bytes": 1000, "trim": {"max_list_items": 2}}}, mode="shadow")
    produced: list[dict[str, Any]] = []

    @action_guard(ps, workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        produced.append(openapi_response(event, json.dumps(claims_payload(20))))
        return produced[-1]

    # WHEN it runs
    response = handler(openapi_event(), CONTEXT)

    # THEN the agent gets exactly what the handler returned, and the ledger knows what would happen
    assert response is produced[0]
    (violation,) = ledger.violations()
    assert not violation.enforced and violation.kind == "ResponseTooLarge"
    assert violation.detail["bytes_after_trim"] > 1000
    (record,) = ledger.actions()
    assert record.outcome == "passed" and record.bytes_before == record.bytes_after


# -- idempotent writes ---------------------------------------------------------------------------------------


WRITE_RULES = {"claims POST /claims": {"idempotent": True}, "claims.create_claim": {"idempotent": True}}


def test_retried_write_returns_the_first_result_and_runs_once(ledger: SQLiteLedger) -> None:
    # GIVEN an idempotent create action
    runs: list[str] = []

    @action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        runs.append(event["sessionId"])
        return openapi_response(event, json.dumps({"created": f"C-{len(runs)}"}))

    event = openapi_event(method="POST", body={"amount": "120.50", "policy": "P-9"})

    # WHEN Bedrock retries the same call (same warm instance), with properties in another order
    first = handler(event, CONTEXT)
    retry_event = openapi_event(method="POST", body={"policy": "P-9", "amount": "120.50"})
    second = handler(retry_event, CONTEXT)

    # THEN the handler ran once and the retry got the first result
    assert runs == ["sess-1"]
    assert second == first and json.loads(body_of(second)) == {"created": "C-1"}
    assert [r.outcome for r in ledger.actions()] == ["passed", "replayed"]

    # AND a different input is a different write
    handler(openapi_event(method="POST", body={"amount": "99", "policy": "P-9"}), CONTEXT)
    assert len(runs) == 2


def test_retry_on_a_cold_instance_does_not_run_the_write_again(ledger: SQLiteLedger) -> None:
    # GIVEN a write completed by one guard instance
    runs: list[int] = []

    def create(event: dict[str, Any], context: Any) -> dict[str, Any]:
        runs.append(1)
        return function_response(event, "created claim C-77")

    warm = action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)(create)
    event = function_event("create_claim", params={"amount": "10"})
    warm(event, CONTEXT)

    # WHEN the retry lands on a new instance (new decorator, empty cache, same ledger)
    cold = action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)(create)
    response = cold(event, CONTEXT)

    # THEN the handler is not run again and the agent is told the write already happened
    assert runs == [1]
    text = body_of(response)
    assert "already_completed" in text and "must not be retried" in text
    assert response["response"]["function"] == "create_claim"
    assert ledger.actions()[-1].outcome == "replayed"


def test_cold_openapi_retry_gets_structured_json_with_the_response_hash(ledger: SQLiteLedger) -> None:
    import hashlib

    def create(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, '{"created":"C-5"}')

    event = openapi_event(method="POST", body={"amount": "1"})
    action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)(create)(event, CONTEXT)
    response = action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)(create)(event, CONTEXT)
    info = json.loads(body_of(response))["costguard"]
    assert info["status"] == "already_completed"
    assert info["response_sha256"] == hashlib.sha256(b'{"created":"C-5"}').hexdigest()
    assert info["response_bytes"] == 17 and info["completed_at"]
    assert response["response"]["httpStatusCode"] == 200
    assert response["sessionAttributes"] == {} and response["promptSessionAttributes"] == {"tz": "UTC"}


def test_retry_while_the_first_attempt_runs_is_told_it_is_in_progress(ledger: SQLiteLedger) -> None:
    # GIVEN an attempt that is still running (its claim is in_progress)
    @action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise AssertionError("must not run")

    event = function_event("create_claim")
    key = handler.guard.idempotency_key(handler.guard._invocation(event, CONTEXT))  # type: ignore[attr-defined]
    assert ledger.claim_idempotency_key(key, 1, 10**15) is None

    # WHEN the retry arrives
    text = body_of(handler(event, CONTEXT))

    # THEN it is told not to retry
    assert "in_progress" in text and "Do not retry" in text


def test_handler_exception_releases_the_claim_and_propagates_unchanged(ledger: SQLiteLedger) -> None:
    # GIVEN a write that fails the first time
    boom = RuntimeError("claims DB timeout")
    attempts: list[int] = []

    @action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) == 1:
            raise boom
        return function_response(event, "created C-9")

    event = function_event("create_claim")

    # WHEN it raises, THEN the very same exception reaches Lambda
    with pytest.raises(RuntimeError) as info:
        handler(event, CONTEXT)
    assert info.value is boom

    # AND a retry runs the action again (the claim was released)
    assert body_of(handler(event, CONTEXT)) == "created C-9"
    assert len(attempts) == 2
    assert [r.outcome for r in ledger.actions()] == ["error", "passed"]


def test_user_key_changes_the_idempotency_key(ledger: SQLiteLedger) -> None:
    def noop(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "ok")

    event = function_event("create_claim", attributes={"costguard_user_id": "u-42"})
    plain = action_guard(policies(WRITE_RULES), ledger=ledger)(noop).guard  # type: ignore[attr-defined]
    keyed = action_guard(policies(WRITE_RULES), ledger=ledger, user_id_key="s3cret")(noop).guard  # type: ignore[attr-defined]
    other_user = function_event("create_claim", attributes={"costguard_user_id": "u-43"})
    k1 = plain.idempotency_key(plain._invocation(event, CONTEXT))
    k2 = keyed.idempotency_key(keyed._invocation(event, CONTEXT))
    k3 = keyed.idempotency_key(keyed._invocation(other_user, CONTEXT))
    assert len({k1, k2, k3}) == 3 and all(len(k) == 64 for k in (k1, k2, k3))


# -- ledger failures and telemetry -----------------------------------------------------------------------------


def test_ledger_error_with_allow_logs_and_returns_the_response(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyLedger(tmp_path / "flaky.db")
    runs: list[int] = []

    @action_guard(policies(WRITE_RULES), workflow="claims-intake", ledger=flaky)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        runs.append(1)
        return function_response(event, "created C-1")

    with caplog.at_level(logging.WARNING, logger="costguard.action_guard"):
        response = handler(function_event("create_claim"), CONTEXT)
    assert body_of(response) == "created C-1" and runs == [1]
    assert any("ledger unavailable" in r.message for r in caplog.records)
    assert handler.guard.ledger_errors == 2  # type: ignore[attr-defined]  # claim + record


def test_ledger_error_with_deny_returns_a_structured_failure(tmp_path: Path) -> None:
    # GIVEN a fail-closed workflow whose ledger cannot be written
    flaky = FlakyLedger(tmp_path / "flaky.db")
    runs: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        runs.append(1)
        return openapi_response(event, '{"ok":true}')

    guarded = action_guard(policies(WRITE_RULES, on_ledger_error="deny"), workflow="claims-intake",
                           ledger=flaky)(handler)

    # WHEN a write is attempted: THEN it is not run and the agent is told why (no exception)
    response = guarded(openapi_event(method="POST", body={"a": "1"}), CONTEXT)
    info = json.loads(body_of(response))["costguard"]
    assert info["error"] == "ledger_unavailable" and info["action_ran"] is False
    assert response["response"]["httpStatusCode"] == 503 and runs == []

    # AND a read that ran but cannot be recorded is withheld, saying it ran
    response = guarded(openapi_event(), CONTEXT)
    info = json.loads(body_of(response))["costguard"]
    assert info["error"] == "ledger_unavailable" and info["action_ran"] is True and runs == [1]


def test_deny_with_an_unopenable_ledger_never_runs_the_function(tmp_path: Path) -> None:
    ps = policies(on_ledger_error="deny")

    @action_guard(ps, workflow="claims-intake", ledger="nosuch://ledger")
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise AssertionError("must not run")

    response = handler(function_event(), CONTEXT)
    function = response["response"]["functionResponse"]
    assert function["responseState"] == "FAILURE"
    assert "ledger_unavailable" in function["responseBody"]["TEXT"]["body"]


def test_failing_metrics_sink_never_breaks_the_action(ledger: SQLiteLedger) -> None:
    @action_guard(policies(), workflow="claims-intake", ledger=ledger, metrics=BrokenSink())
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "ok")

    assert body_of(handler(function_event(), CONTEXT)) == "ok"
    assert handler.guard.metrics_dropped == 4  # type: ignore[attr-defined]


# -- configuration ----------------------------------------------------------------------------------------------


def test_workflow_comes_from_argument_then_session_attribute_then_env(
    ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "ok")

    guarded = action_guard(policies(), ledger=ledger)(handler)
    guarded(function_event(attributes={"costguard_workflow": "claims-intake"}), CONTEXT)
    monkeypatch.setenv("COSTGUARD_WORKFLOW", "from-env")
    guarded(function_event(), CONTEXT)
    action_guard(policies(), workflow="explicit", ledger=ledger)(handler)(
        function_event(attributes={"costguard_workflow": "claims-intake"}), CONTEXT
    )
    assert [r.workflow for r in ledger.actions()] == ["claims-intake", "from-env", "explicit"]


def test_ledger_is_opened_on_first_call_not_at_decoration(tmp_path: Path) -> None:
    db = tmp_path / "lazy.db"

    @action_guard(policies(), workflow="claims-intake", ledger=f"sqlite:///{db}")
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "ok")

    assert not db.exists()
    handler(function_event(), CONTEXT)
    handler(function_event(), CONTEXT)
    assert db.exists()
    guard = handler.guard  # type: ignore[attr-defined]
    assert len(guard.ledger().actions()) == 2
    guard.ledger().close()


def test_policies_path_is_loaded_at_decoration(tmp_path: Path, ledger: SQLiteLedger) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nworkflows:\n  w:\n    actions:\n      claims: {max_response_bytes: 5}\n")

    @action_guard(str(path), workflow="w", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "more than five bytes")

    path.unlink()  # loaded once, at decoration: the file is not read again
    assert "response_too_large" in body_of(handler(function_event(), CONTEXT))


def test_unrecognised_response_or_event_passes_through(ledger: SQLiteLedger) -> None:
    @action_guard(policies(limit=1), workflow="claims-intake", ledger=ledger)
    def handler(event: Any, context: Any) -> Any:
        return {"statusCode": 200, "body": "not an action group response"}

    assert handler(function_event(), CONTEXT) == {"statusCode": 200, "body": "not an action group response"}
    assert handler(["not", "an", "event"], CONTEXT)["statusCode"] == 200


def test_bare_decorator_reads_policies_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN $COSTGUARD_POLICIES and $COSTGUARD_LEDGER, as a Lambda's environment would set them
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefaults:\n  actions:\n    claims: {max_response_bytes: 5}\n")
    monkeypatch.setenv("COSTGUARD_POLICIES", str(path))
    monkeypatch.setenv("COSTGUARD_LEDGER", f"sqlite:///{tmp_path / 'env.db'}")

    # WHEN the handler is decorated without arguments
    @action_guard
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return function_response(event, "more than five bytes")

    # THEN the environment's policy and ledger apply
    assert handler.__name__ == "handler"
    assert "response_too_large" in body_of(handler(function_event(), CONTEXT))
    guard = handler.guard  # type: ignore[attr-defined]
    assert [r.workflow for r in guard.ledger().actions()] == ["default"]
    guard.ledger().close()


def test_costguard_action_guard_is_the_decorator_too(tmp_path: Path) -> None:
    import costguard
    from costguard.policy import PolicySet as Policies

    policies = Policies.from_dict({"version": 1, "workflows": {"wf": {"per_request": {"max_tool_response_bytes": 100}}}})

    @costguard.action_guard(policies, workflow="wf", ledger=f"sqlite:///{tmp_path}/l.db")
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"messageVersion": "1.0", "response": {"actionGroup": "g", "function": "f",
                "functionResponse": {"responseBody": {"TEXT": {"body": "x" * 500}}}}}

    out = handler({"messageVersion": "1.0", "actionGroup": "g", "function": "f", "sessionId": "s", "agent": {"id": "a"}}, None)
    assert out["response"]["functionResponse"]["responseState"] == "REPROMPT"
