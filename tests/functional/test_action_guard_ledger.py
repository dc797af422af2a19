"""action_guard end to end: policy files on disk, a SQLite ledger file shared by several guard
instances (as several Lambda execution environments share one ledger), retries, TTL expiry and
concurrent duplicate deliveries."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from costguard.action_guard import action_guard, utf8_len
from costguard.ledger import SQLiteLedger, open_ledger
from tests.support.workers import run_threads

POLICY = """
version: 1
defaults:
  on_ledger_error: allow
  per_request: {max_tool_response_bytes: 65536}
workflows:
  claims-intake:
    actions:
      # The search returns full claim records; the agent only needs ids, status and totals.
      "claims GET /claims":
        max_response_bytes: 4096
        trim:
          keep: ["items[].id", "items[].status", "items[].amount", "total"]
          max_list_items: 40
      "claims GET /claims/{claimId}/documents":
        max_response_bytes: 2048
      "claims POST /claims":
        idempotent: true
        idempotency_ttl_s: 60
"""


def event(api_path: str, method: str = "GET", *, params: dict[str, str] | None = None,
          body: dict[str, str] | None = None, session: str = "s-1") -> dict[str, Any]:
    e: dict[str, Any] = {
        "messageVersion": "1.0",
        "agent": {"name": "claims", "id": "AG1", "alias": "TSTALIASID", "version": "DRAFT"},
        "inputText": "do it",
        "sessionId": session,
        "actionGroup": "claims",
        "apiPath": api_path,
        "httpMethod": method,
        "parameters": [{"name": k, "type": "string", "value": v} for k, v in (params or {}).items()],
        "sessionAttributes": {},
        "promptSessionAttributes": {},
    }
    if body is not None:
        e["requestBody"] = {"content": {"application/json": {"properties": [
            {"name": k, "type": "string", "value": v} for k, v in body.items()]}}}
    return e


def respond(e: dict[str, Any], payload: Any) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "response": {
            "actionGroup": e["actionGroup"], "apiPath": e["apiPath"], "httpMethod": e["httpMethod"],
            "httpStatusCode": 200,
            "responseBody": {"application/json": {"body": json.dumps(payload, indent=2, ensure_ascii=False)}},
        },
    }


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["response"]["responseBody"]["application/json"]["body"])


class ClaimsService:
    """A stand-in for the claims system behind the action group."""

    def __init__(self) -> None:
        self.created: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def handler(self, e: dict[str, Any], context: Any) -> dict[str, Any]:
        if e["apiPath"] == "/claims" and e["httpMethod"] == "GET":
            items = [{"id": f"C-{i}", "status": "open", "amount": i * 10, "adjuster": {"name": "Zoë Ñúñez"},
                      "notes": "Überprüfung läuft " * 10} for i in range(300)]
            return respond(e, {"items": items, "total": 300})
        if e["apiPath"] == "/claims/{claimId}/documents":
            return respond(e, {"documents": [{"id": d, "ocr": "页" * 400} for d in range(20)]})
        if e["apiPath"] == "/claims" and e["httpMethod"] == "POST":
            props = {p["name"]: p["value"] for p in e["requestBody"]["content"]["application/json"]["properties"]}
            with self.lock:
                self.created.append(props)
                number = len(self.created)
            return respond(e, {"created": f"C-NEW-{number}", "amount": props["amount"]})
        raise ValueError(f"unknown operation {e['httpMethod']} {e['apiPath']}")


@pytest.fixture()
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policies" / "claims.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(POLICY).lstrip(), encoding="utf-8")
    return path


@pytest.fixture()
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def ctx(n: int) -> SimpleNamespace:
    return SimpleNamespace(aws_request_id=f"req-{n}")


def test_a_session_of_reads_and_writes_is_shaped_and_recorded(policy_file: Path, ledger_url: str) -> None:
    # GIVEN the claims action group guarded with the policy directory and a SQLite ledger URL
    service = ClaimsService()
    handler = action_guard(policy_file.parent, workflow="claims-intake", ledger=ledger_url)(service.handler)

    # WHEN the agent searches, fetches documents, and creates a claim (retried once by Bedrock)
    search = handler(event("/claims", params={"status": "open", "pageSize": "300"}), ctx(1))
    documents = handler(event("/claims/{claimId}/documents", params={"claimId": "C-1"}), ctx(2))
    create = event("/claims", "POST", body={"amount": "120", "policyId": "P-1"})
    first = handler(create, ctx(3))
    retried = handler(create, ctx(4))

    # THEN the search was trimmed to fit, keeping only the requested fields
    found = body(search)
    assert len(found["items"]) == 40 and found["total"] == 300
    assert found["items"][0] == {"id": "C-0", "status": "open", "amount": 0}
    assert utf8_len(search["response"]["responseBody"]["application/json"]["body"]) <= 4096
    # AND the documents (non-trimmable 20 x 1200 bytes of CJK) were replaced by a notice with hints
    notice = body(documents)["costguard"]
    assert notice["error"] == "response_too_large" and notice["limit_bytes"] == 2048
    # 20 documents of 400 "页" (3 bytes each in UTF-8) = 24,000 bytes of text; the handler sent
    # them with 913 bytes of indented JSON around them, compact re-serialisation leaves 385
    documents_text = 20 * 400 * 3
    assert notice["observed_bytes"] == documents_text + 385 == 24_385
    # AND the write ran once; the retry got the same answer
    assert len(service.created) == 1 and retried == first

    # AND the ledger (reopened, as a report would) holds sizes, outcomes and one violation
    with open_ledger(ledger_url) as ledger:
        records = ledger.actions(workflow="claims-intake")
        assert [(r.action, r.outcome) for r in records] == [
            ("claims /claims GET", "trimmed"),
            ("claims /claims/{claimId}/documents GET", "replaced"),
            ("claims /claims POST", "passed"),
            ("claims /claims POST", "replayed"),
        ]
        assert [r.request_id for r in records] == ["req-1", "req-2", "req-3", "req-4"]
        sent = [utf8_len(r["response"]["responseBody"]["application/json"]["body"]) for r in (search, documents)]
        # The search: 300 items as indented JSON in, 40 items of the 3 kept fields out (2 dropped each)
        assert [(r.bytes_before, r.bytes_after, r.fields_dropped, r.items_dropped, r.strings_truncated) for r in records[:2]] == [
            (110_514, sent[0], 40 * 2, 300 - 40, 0),
            (documents_text + 913, sent[1], 0, 0, 0),
        ]
        assert sent[0] <= 4096 and sent[1] < 2048
        (violation,) = ledger.violations(workflow="claims-intake")
        assert violation.rule == "actions.claims GET /claims/{claimId}/documents.max_response_bytes"
        assert violation.enforced and violation.request_id == "req-2"
    handler.guard.ledger().close()  # type: ignore[attr-defined]


def test_retry_on_another_instance_and_after_the_ttl(policy_file: Path, ledger_url: str) -> None:
    # GIVEN two execution environments (separate guards, separate ledger connections, one file)
    service = ClaimsService()
    now = [1_700_000_000.0]
    first_env = action_guard(policy_file, workflow="claims-intake", ledger=ledger_url,
                             clock=lambda: now[0])(service.handler)
    second_env = action_guard(policy_file, workflow="claims-intake", ledger=ledger_url,
                              clock=lambda: now[0])(service.handler)
    create = event("/claims", "POST", body={"amount": "75", "policyId": "P-2"})

    # WHEN the write runs on the first and its retry lands on the second
    first_env(create, ctx(1))
    replay = body(second_env(create, ctx(2)))["costguard"]

    # THEN the second does not run it and says so, with the first run's hash and time
    assert len(service.created) == 1
    assert replay["status"] == "already_completed" and len(replay["response_sha256"]) == 64
    assert replay["completed_at"].startswith("2023-11-14T22:13:20")

    # AND once the TTL (60 s) has passed, the same input is a new write
    now[0] += 61
    second_env(create, ctx(3))
    assert len(service.created) == 2
    for handler in (first_env, second_env):
        handler.guard.ledger().close()  # type: ignore[attr-defined]


def test_concurrent_duplicate_deliveries_run_the_write_once(policy_file: Path, tmp_path: Path) -> None:
    # GIVEN eight execution environments receiving the same write at the same moment
    service = ClaimsService()
    db = tmp_path / "shared.db"
    handlers = [
        action_guard(policy_file, workflow="claims-intake", ledger=SQLiteLedger(db))(service.handler)
        for _ in range(8)
    ]
    create = event("/claims", "POST", body={"amount": "5", "policyId": "P-3"})

    def deliver(h: Any, n: int) -> dict[str, Any]:
        return h(create, ctx(n))

    results = run_threads(deliver, [(h, n) for n, h in enumerate(handlers)], start_together=True)

    # THEN exactly one ran it; every other answer is valid JSON saying it ran or is running
    assert len(service.created) == 1
    statuses = sorted(body(r).get("costguard", {}).get("status", "ran") for r in results)
    assert statuses.count("ran") == 1
    assert set(statuses) <= {"ran", "in_progress", "already_completed"}
    with SQLiteLedger(db) as ledger:
        outcomes = [r.outcome for r in ledger.actions()]
    assert outcomes.count("passed") == 1 and outcomes.count("replayed") == 7
    for h in handlers:
        h.guard.ledger().close()  # type: ignore[attr-defined]
