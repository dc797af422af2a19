"""A claims-search action group Lambda (OpenAPI schema) guarded by ``costguard.action_guard``.

The claims system returns full records — claimant details, adjuster notes, the raw mainframe
payload — pretty-printed. A Bedrock agent only needs ids, statuses and amounts to answer "which
of my claims are still open?", and whatever the Lambda returns is re-sent to the model on every
later step of the agent's loop. The policy below keeps what the agent uses, caps the list, and
replaces anything still too large with a notice telling the agent to ask for less.

Deploy: set ``COSTGUARD_LEDGER`` (``dynamodb://TABLE`` when many Lambdas share it) and package a
policy directory; here the policy is inline so the demo runs anywhere::

    python examples/action_group_handler.py
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from costguard.action_guard import action_guard, utf8_len
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet

POLICY_YAML = """
version: 1
workflows:
  claims-intake:
    per_request: {max_tool_response_bytes: 16384}
    actions:
      "claims GET /claims":
        max_response_bytes: 6000
        trim:
          keep: ["claims[].claimId", "claims[].status", "claims[].amount", "claims[].currency",
                 "claims[].lossDate", "page", "totalMatches"]
          max_list_items: 20
      "claims POST /claims/{claimId}/notes":
        idempotent: true
"""

STATUSES = ("OPEN", "IN_REVIEW", "AWAITING_DOCUMENTS", "APPROVED", "PAID", "DENIED")


def search_claims(policy_holder: str, status: str | None, page_size: int) -> dict[str, Any]:
    """What the claims system returns: verbose, nested, pretty-printed."""
    rng = random.Random(policy_holder)
    claims = []
    for n in range(page_size):
        claim_status = status or rng.choice(STATUSES)
        claims.append({
            "claimId": f"CLM-2024-{rng.randint(100000, 999999)}",
            "status": claim_status,
            "amount": round(rng.uniform(150, 25000), 2),
            "currency": "EUR",
            "lossDate": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "policyHolder": {"id": policy_holder, "name": "Renée Fournier", "email": "renee@example.com",
                             "address": {"street": "12 rue de la Paix", "city": "Paris", "zip": "75002"}},
            "adjuster": {"id": f"ADJ-{n % 7}", "name": "Jürgen Müller", "team": "Property EU"},
            "notes": [{"author": "system", "text": "Dokumente angefordert; Rückmeldung ausstehend. " * 3}
                      for _ in range(3)],
            "raw": {"source": "CLAIMS-MF-01", "record": "0" * 400},
        })
    return {"claims": claims, "page": 1, "pageSize": page_size, "totalMatches": page_size * 3}


def claims_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    params = {p["name"]: p["value"] for p in event.get("parameters", [])}
    if event["apiPath"] == "/claims" and event["httpMethod"] == "GET":
        result = search_claims(params["policyHolderId"], params.get("status"), int(params.get("pageSize", "50")))
        status = 200
    else:
        result, status = {"error": f"unsupported operation {event['httpMethod']} {event['apiPath']}"}, 400
    return {
        "messageVersion": "1.0",
        "response": {
            "actionGroup": event["actionGroup"],
            "apiPath": event["apiPath"],
            "httpMethod": event["httpMethod"],
            "httpStatusCode": status,
            "responseBody": {"application/json": {"body": json.dumps(result, indent=2, ensure_ascii=False)}},
        },
        "sessionAttributes": event.get("sessionAttributes", {}),
        "promptSessionAttributes": event.get("promptSessionAttributes", {}),
    }


POLICIES = PolicySet.from_yaml(POLICY_YAML, "inline-policy")

#: The Lambda entry point. The ledger is opened on the first invocation and reused by warm ones
#: (None: $COSTGUARD_LEDGER, else the default SQLite file).
handler = action_guard(POLICIES, workflow="claims-intake", ledger=None)(claims_handler)


def demo_event(page_size: int) -> dict[str, Any]:
    return {
        "messageVersion": "1.0",
        "agent": {"name": "claims-assistant", "id": "AGENT12345", "alias": "TSTALIASID", "version": "DRAFT"},
        "inputText": "Which of my claims are still open?",
        "sessionId": "demo-session-1",
        "actionGroup": "claims",
        "apiPath": "/claims",
        "httpMethod": "GET",
        "parameters": [
            {"name": "policyHolderId", "type": "string", "value": "PH-88231"},
            {"name": "pageSize", "type": "integer", "value": str(page_size)},
        ],
        "sessionAttributes": {},
        "promptSessionAttributes": {},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = SQLiteLedger(Path(tmp) / "ledger.db")
        # The same handler, guarded with a throwaway ledger for the demo.
        demo = action_guard(POLICIES, workflow="claims-intake", ledger=ledger)(claims_handler)
        for page_size in (50, 400):
            response = demo(demo_event(page_size), None)
            body = response["response"]["responseBody"]["application/json"]["body"]
            record = ledger.actions()[-1]
            print(f"pageSize={page_size}: {record.outcome}: {record.bytes_before} -> {record.bytes_after} bytes "
                  f"({record.items_dropped} items, {record.fields_dropped} fields dropped)")
            print("  agent sees:", body[:300] + ("..." if utf8_len(body) > 300 else ""))
        for violation in ledger.violations():
            print(f"violation: {violation.rule} limit={violation.limit} observed={violation.observed}")
        ledger.close()


if __name__ == "__main__":
    main()
