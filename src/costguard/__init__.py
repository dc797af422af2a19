"""costguard: meter, cap and reconcile what Amazon Bedrock agents cost.

Quick start::

    import boto3, costguard

    policies = costguard.load_policies("policies/")
    guard = costguard.Guard(policies, ledger="sqlite:///costguard.db")
    agents = guard.wrap(boto3.client("bedrock-agent-runtime"), workflow="claims-intake")

Names are imported on first use, so ``import costguard`` stays cheap for the CLI and for Lambda
cold starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "BudgetExceeded": "costguard.errors",
    "CostCapExceeded": "costguard.errors",
    "CostguardError": "costguard.errors",
    "IntegrationError": "costguard.errors",
    "LedgerError": "costguard.errors",
    "LoopCapExceeded": "costguard.errors",
    "ModelNotAllowed": "costguard.errors",
    "PolicyError": "costguard.errors",
    "PolicyErrorDetail": "costguard.errors",
    "PolicyViolation": "costguard.errors",
    "PricingError": "costguard.errors",
    "ResponseTooLarge": "costguard.errors",
    "TokenCapExceeded": "costguard.errors",
    "ToolCapExceeded": "costguard.errors",
    "UnmeteredCallBlocked": "costguard.errors",
    "WorkflowBlocked": "costguard.errors",
    "Ledger": "costguard.ledger",
    "SQLiteLedger": "costguard.ledger",
    "open_ledger": "costguard.ledger",
    "Guard": "costguard.meter",
    "GuardedClient": "costguard.meter",
    "PolicySet": "costguard.policy",
    "WorkflowPolicy": "costguard.policy",
    "load_policies": "costguard.policy",
    "PriceCatalog": "costguard.pricing",
    "SessionUsage": "costguard.usage",
}

__all__ = sorted([*_EXPORTS, "action_guard"])


def __getattr__(name: str) -> Any:
    if name == "action_guard":
        # The submodule is itself callable as the decorator (see costguard.action_guard).
        return importlib.import_module("costguard.action_guard")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors only
    from costguard.errors import (
        BudgetExceeded,
        CostCapExceeded,
        CostguardError,
        LedgerError,
        LoopCapExceeded,
        ModelNotAllowed,
        PolicyError,
        PolicyErrorDetail,
        PolicyViolation,
        PricingError,
        ResponseTooLarge,
        TokenCapExceeded,
        ToolCapExceeded,
        WorkflowBlocked,
    )
    from costguard.ledger import Ledger, SQLiteLedger, open_ledger
    from costguard.meter import Guard, GuardedClient
    from costguard.policy import PolicySet, WorkflowPolicy, load_policies
    from costguard.pricing import PriceCatalog
    from costguard.usage import SessionUsage
