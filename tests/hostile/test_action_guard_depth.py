"""Deeply nested bodies and internal errors never carry a response past the action guard's cap.

Before (issue 12): a 201 KB body nested about 500 levels (with a trim rule) or about 1,000 levels
(cap only) was delivered untouched past a 16 KiB limit, with no action row and no violation: a
RecursionError was swallowed by the catch-all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import costguard.action_guard as action_guard_module
from costguard.action_guard import MAX_JSON_DEPTH, CompiledTrim, action_guard, shape_body, utf8_len
from costguard.ledger import SQLiteLedger
from costguard.policy import ActionTrim
from tests.unit.test_action_guard import CONTEXT, body_of, ledger, openapi_event, openapi_response, policies

__all__ = ["ledger"]  # the fixture, re-used

LIMIT = 16 * 1024
PAYLOAD = "x" * 201_000


def nested(depth: int) -> str:
    """``depth`` levels of alternating objects and lists around a 201 KB string."""
    opening = "".join('{"d":' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + json.dumps(PAYLOAD) + closing


def guarded(ledger: SQLiteLedger, body: str, trim: dict[str, Any] | None) -> Any:
    rule: dict[str, Any] = {"max_response_bytes": LIMIT}
    if trim is not None:
        rule["trim"] = trim
    ps = policies({"claims GET /claims": rule}, limit=None)

    @action_guard(ps, workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, body)

    return handler


@pytest.mark.parametrize("depth", [500, 1_000, 50_000])
@pytest.mark.parametrize("trim", [None, {"max_list_items": 5}, {"drop": ["d.meta"], "max_string_bytes": 100}])
def test_deep_201_kb_body_is_replaced_and_recorded(ledger: SQLiteLedger, depth: int, trim: dict[str, Any] | None) -> None:
    body = nested(depth)
    size = len(body)  # ASCII: bytes == characters
    assert size == 201_002 + (depth + 1) // 2 * len('{"d":}') + depth // 2 * len("[]")

    response = guarded(ledger, body, trim)(openapi_event(), CONTEXT)

    notice = json.loads(body_of(response))["costguard"]
    assert (notice["error"], notice["limit_bytes"], notice["observed_bytes"]) == ("response_too_large", LIMIT, size)
    (record,) = ledger.actions()
    assert (record.outcome, record.bytes_before, record.bytes_after) == ("replaced", size, utf8_len(body_of(response)))
    (violation,) = ledger.violations()
    assert (violation.kind, violation.rule, violation.limit, violation.observed, violation.enforced) == (
        "ResponseTooLarge",
        "actions.claims GET /claims.max_response_bytes",
        str(LIMIT),
        str(size),
        True,
    )


def lists(depth: int) -> str:
    """``depth`` nested lists, the innermost holding 10 strings of 3,000 bytes."""
    return "[" * depth + ",".join([json.dumps("y" * 3_000)] * 10) + "]" * depth


def test_nesting_at_the_depth_cap_is_still_trimmed(ledger: SQLiteLedger) -> None:
    body = lists(MAX_JSON_DEPTH)

    response = guarded(ledger, body, {"max_list_items": 2, "max_string_bytes": 4})(openapi_event(), CONTEXT)

    # the inner list keeps 2 strings of "y" + "…" (4 bytes), the rest is untouched
    expected = "[" * MAX_JSON_DEPTH + '"y…","y…"' + "]" * MAX_JSON_DEPTH
    assert body_of(response) == expected
    (record,) = ledger.actions()
    assert (record.outcome, record.items_dropped, record.strings_truncated) == ("trimmed", 8, 2)
    assert record.bytes_after == utf8_len(expected)


def test_trim_walk_is_iterative() -> None:
    value: Any = "z" * 10
    for _ in range(MAX_JSON_DEPTH):
        value = [value, value]
    trimmed, stats = CompiledTrim(ActionTrim(max_list_items=1, max_string_bytes=5)).apply(value)
    for _ in range(MAX_JSON_DEPTH):
        assert isinstance(trimmed, list) and len(trimmed) == 1
        trimmed = trimmed[0]
    assert trimmed == "zz…"
    assert (stats.items_dropped, stats.strings_truncated) == (MAX_JSON_DEPTH, 1)


def test_one_level_past_the_cap_is_measured_not_trimmed() -> None:
    trim = CompiledTrim(ActionTrim(max_list_items=2, max_string_bytes=4))
    body = lists(MAX_JSON_DEPTH + 1)
    under = shape_body(body, trim, None)
    assert (under.text, under.bytes_after, under.over_limit, under.stats.changed) == (body, len(body), False, False)
    over = shape_body(body, trim, 16 * 1024)
    assert (over.text, over.bytes_before, over.over_limit) == (body, len(body), True)
    # a keep path that stays near the root never meets the depth: the deep part is dropped
    shallow = shape_body('{"id": 1, "deep": ' + body + "}", CompiledTrim(ActionTrim(keep=["id"])), None)
    assert shallow.text == '{"id":1}' and shallow.stats.fields_dropped == 1


def test_internal_error_still_replaces_an_over_limit_body(ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a costguard bug")

    monkeypatch.setattr(action_guard_module, "shape_body", broken)
    body = json.dumps({"rows": PAYLOAD})
    response = guarded(ledger, body, {"max_list_items": 5})(openapi_event(), CONTEXT)

    notice = json.loads(body_of(response))["costguard"]
    assert (notice["error"], notice["observed_bytes"]) == ("response_too_large", len(body))
    (record,) = ledger.actions()
    assert (record.outcome, record.bytes_before, record.bytes_after) == ("error", len(body), utf8_len(body_of(response)))
    (violation,) = ledger.violations()
    assert (violation.rule, violation.observed) == ("actions.claims GET /claims.max_response_bytes", str(len(body)))


def test_internal_error_under_the_limit_delivers_the_body(ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(action_guard_module, "shape_body", lambda *a, **k: 1 / 0)
    body = json.dumps({"rows": [1, 2, 3]})
    response = guarded(ledger, body, {"max_list_items": 1})(openapi_event(), CONTEXT)
    assert body_of(response) == body
    (record,) = ledger.actions()
    assert (record.outcome, record.bytes_before, record.bytes_after) == ("error", len(body), len(body))
    assert ledger.violations() == []


def test_unmeasurable_response_is_withheld_when_a_limit_applies(
    ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(action_guard_module, "shape_body", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(action_guard_module, "_body_slots", lambda response: 1 / 0)
    response = guarded(ledger, json.dumps({"rows": PAYLOAD}), None)(openapi_event(), CONTEXT)
    notice = json.loads(body_of(response))["costguard"]
    assert notice == {
        "error": "response_too_large",
        "limit_bytes": LIMIT,
        "observed_bytes": None,
        "action": "claims /claims GET",
    }
    assert [r.outcome for r in ledger.actions()] == ["error"]


def test_internal_error_in_shadow_mode_records_the_would_be_violation(
    ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(action_guard_module, "shape_body", lambda *a, **k: 1 / 0)
    body = json.dumps({"rows": PAYLOAD})
    ps = policies({"claims GET /claims": {"max_response_bytes": LIMIT}}, limit=None, mode="shadow")

    @action_guard(ps, workflow="claims-intake", ledger=ledger)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return openapi_response(event, body)

    response = handler(openapi_event(), CONTEXT)
    assert body_of(response) == body  # shadow: the agent gets what the handler returned
    (record,) = ledger.actions()
    assert (record.outcome, record.bytes_before, record.bytes_after) == ("error", len(body), len(body))
    (violation,) = ledger.violations()
    assert (violation.enforced, violation.observed) == (False, str(len(body)))
