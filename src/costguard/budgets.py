"""Budget status per workflow and period: spent, reserved, remaining and a burn-rate forecast."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from costguard.ledger.base import Ledger
from costguard.policy import PolicySet
from costguard.usage import nanos_to_usd


@dataclass(frozen=True, slots=True)
class BudgetLine:
    workflow: str
    period: str  # "day" or "month"
    period_key: str  # "2026-11-22" or "2026-11"
    budget_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    forecast_usd: Decimal
    blocked: bool
    block_reason: str | None
    blocked_by: str | None = None
    blocked_at_ms: int | None = None

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.budget_usd is None:
            return None
        return self.budget_usd - self.spent_usd - self.reserved_usd

    @property
    def used_pct(self) -> Decimal | None:
        if not self.budget_usd:
            return None
        return (100 * self.spent_usd / self.budget_usd).quantize(Decimal("0.1"), ROUND_HALF_EVEN)

    def to_dict(self) -> dict[str, Any]:
        def money(value: Decimal | None) -> str | None:
            return None if value is None else format(value, "f")

        return {
            "workflow": self.workflow,
            "period": self.period,
            "period_key": self.period_key,
            "budget_usd": money(self.budget_usd),
            "spent_usd": money(self.spent_usd),
            "reserved_usd": money(self.reserved_usd),
            "remaining_usd": money(self.remaining_usd),
            "used_pct": None if self.used_pct is None else str(self.used_pct),
            "forecast_usd": money(self.forecast_usd),
            "blocked": self.blocked,
            "block_reason": self.block_reason,
            "blocked_by": self.blocked_by,
            "blocked_at": None if self.blocked_at_ms is None else datetime.fromtimestamp(self.blocked_at_ms / 1000, UTC).isoformat(),
        }


def _elapsed_fraction(now: datetime, period: str) -> Decimal:
    """How much of the current UTC day or month has passed (never 0, so a forecast exists)."""
    seconds_today = now.hour * 3600 + now.minute * 60 + now.second + 1
    if period == "day":
        return Decimal(seconds_today) / Decimal(86_400)
    days = calendar.monthrange(now.year, now.month)[1]
    return Decimal((now.day - 1) * 86_400 + seconds_today) / Decimal(days * 86_400)


def lease_lines(ledger: Ledger, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every budget hold the ledger keeps (a process's slice, or a request's hold): who holds
    how much until when, and whether it has expired (its holder died or hung; the next
    reservation or the reconcile job's sweep gives it back)."""
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    return [
        {
            "workflow": lease.workflow,
            "lease_id": lease.lease_id,
            "owner": lease.owner,
            "periods": list(lease.periods),
            "held_usd": format(nanos_to_usd(lease.amount_nanos), "f"),
            "expires_at": datetime.fromtimestamp(lease.expires_at_ms / 1000, UTC).isoformat(),
            "state": "expired" if lease.expired(now_ms) else "live",
        }
        for lease in ledger.leases()
    ]


def budget_status(ledger: Ledger, policies: PolicySet, now: datetime | None = None) -> list[BudgetLine]:
    """One line per workflow and period (today and this month) with a budget, spend or a kill switch.

    The forecast extrapolates the period's spend at its average burn rate so far to the period's
    end: crude, but it is what a person checks first, and it needs no history.
    """
    now = now or datetime.now(UTC)
    keys = {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m")}
    counters = {(c.workflow, c.period): c for c in ledger.budget_counters()}
    switches = {k.workflow: k for k in ledger.kill_switches(int(now.timestamp() * 1000))}
    workflows = sorted({c.workflow for c in counters.values()} | set(policies.names()) | set(switches))
    lines: list[BudgetLine] = []
    for workflow in workflows:
        budget = policies.for_workflow(workflow).budget
        for period, key in keys.items():
            counter = counters.get((workflow, f"{period}:{key}"))
            limit = None
            if budget is not None:
                limit = budget.daily_usd if period == "day" else budget.monthly_usd
            # A blocked workflow is always shown: a switch nobody can see is a switch nobody clears.
            if counter is None and limit is None and workflow not in switches:
                continue
            spent = nanos_to_usd(counter.spent_nanos) if counter else Decimal(0)
            reserved = nanos_to_usd(counter.reserved_nanos) if counter else Decimal(0)
            forecast = (spent / _elapsed_fraction(now, period)).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
            switch = switches.get(workflow)
            lines.append(
                BudgetLine(workflow, period, key, limit, spent, reserved, forecast, switch is not None,
                           switch.reason if switch else None, switch.set_by if switch else None,
                           switch.set_at_ms if switch else None)
            )
    return lines
