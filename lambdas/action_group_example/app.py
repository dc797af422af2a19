"""An action group Lambda guarded by ``costguard.action_guard`` (``action-group-example.yaml``).

costguard comes from the core layer (``lambdas/build.py`` builds it); the policies are bundled
next to this file; the ledger is the shared DynamoDB table of the reconcile stack
(``COSTGUARD_LEDGER=dynamodb://TABLE``), so its actions, violations and idempotency keys land
where ``costguard reconcile`` and the reports see them.

The order system below is a stand-in: it answers verbosely, as real back ends do, and the policy
keeps what the agent needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from costguard.action_guard import action_guard

POLICIES = Path(__file__).resolve().with_name("policies")


def _orders(customer: str, count: int) -> dict[str, Any]:
    orders = [
        {
            "orderId": f"ORD-{customer}-{n:04d}",
            "status": ("OPEN", "SHIPPED", "DELIVERED")[n % 3],
            "total": f"{19.9 + n:.2f}",
            "currency": "EUR",
            "lines": [{"sku": f"SKU-{n}-{i}", "description": "Lorem ipsum dolor sit amet " * 4} for i in range(5)],
            "shipping": {"carrier": "DHL", "tracking": f"TRK{n:010d}", "events": ["label created"] * 6},
        }
        for n in range(count)
    ]
    return {"orders": orders, "page": 1, "totalMatches": count}


def orders_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    params = {p["name"]: p["value"] for p in event.get("parameters", [])}
    if (event["httpMethod"], event["apiPath"]) == ("GET", "/orders"):
        status, body = 200, _orders(params.get("customerId", "anonymous"), int(params.get("pageSize", "50")))
    elif (event["httpMethod"], event["apiPath"]) == ("POST", "/orders/{orderId}/refund"):
        status, body = 200, {"orderId": params.get("orderId"), "refund": "issued"}
    else:
        status, body = 400, {"error": f"unsupported operation {event['httpMethod']} {event['apiPath']}"}
    return {
        "messageVersion": "1.0",
        "response": {
            "actionGroup": event["actionGroup"],
            "apiPath": event["apiPath"],
            "httpMethod": event["httpMethod"],
            "httpStatusCode": status,
            "responseBody": {"application/json": {"body": json.dumps(body, indent=2)}},
        },
        "sessionAttributes": event.get("sessionAttributes", {}),
        "promptSessionAttributes": event.get("promptSessionAttributes", {}),
    }


#: The Lambda entry point (``app.handler``). Policies load now, at init; the ledger
#: ($COSTGUARD_LEDGER) opens on the first invocation and is reused by warm ones.
handler = action_guard(POLICIES, workflow=os.environ.get("COSTGUARD_WORKFLOW", "order-support"))(orders_handler)
