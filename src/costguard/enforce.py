"""Kill switches from budgets: block a workflow whose hard budget is exhausted, unblock it after.

The meter already refuses a call that would overspend (it reserves against the period counters
before each call). The kill switch adds the durable, visible "this workflow is out of budget
until <period end>" state that every caller sees at once, that ``costguard budget status`` shows,
and that a person can clear. The reconciler (:class:`Enforcer`) owns only the switches it set:

* a workflow whose ``budget.on_exhausted`` is ``block`` and whose spent amount in the current UTC
  day or month is at or over that period's budget gets a switch that expires at the end of the
  exhausted period (the later end if both are exhausted), so it lifts by itself even if the
  reconciler stops running;
* a switch set by this actor is cleared once the workflow is no longer over (the period rolled
  over, the budget was raised, removed, or turned into ``on_exhausted: alert``), and expired
  switches of this actor are cleaned up;
* a switch set by anyone else (``set_by != actor``, a person with ``costguard budget block``) is
  never touched, not even re-set: re-setting would make it ours and a later run would clear it.

Spent money only is compared, not reservations: in-flight reservations are settled or released
within seconds and would block a workflow on money it has not spent.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costguard.ledger.base import Ledger
from costguard.policy import PolicySet
from costguard.usage import BudgetCounter, KillSwitch, nanos_to_usd, usd_to_nanos

if TYPE_CHECKING:
    from costguard.reconcile import ReconcileResult

__all__ = ["DEFAULT_ACTOR", "EnforcementAction", "Enforcer", "period_end"]

logger = logging.getLogger("costguard.enforce")

DEFAULT_ACTOR = "costguard-reconciler"


@dataclass(frozen=True, slots=True)
class EnforcementAction:
    """One decision. ``action`` is ``block``, ``unblock``, ``held`` (over budget, but a person's
    switch is in place: left alone) or ``shadow`` (over budget in shadow mode: not blocked)."""

    action: str
    workflow: str
    reason: str
    period: str | None = None
    expires_at_ms: int | None = None
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "workflow": self.workflow,
            "reason": self.reason,
            "period": self.period,
            "expires_at": None
            if self.expires_at_ms is None
            else datetime.fromtimestamp(self.expires_at_ms / 1000, UTC).isoformat(),
            "applied": self.applied,
        }


def period_end(now: datetime, period: str) -> datetime:
    """The end (exclusive, UTC) of the day or month containing ``now``."""
    start_of_day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start_of_day + timedelta(days=1)
    days = calendar.monthrange(now.year, now.month)[1]
    return start_of_day.replace(day=1) + timedelta(days=days)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Exhausted:
    period: str  # "day:2026-11-22" / "month:2026-11"
    field: str  # "daily_usd" / "monthly_usd"
    budget: Decimal
    spent: Decimal
    ends: datetime


class Enforcer:
    """Sets and clears the reconciler's kill switches from the ledger's budget counters."""

    def __init__(
        self,
        ledger: Ledger,
        policies: PolicySet,
        *,
        clock: Callable[[], datetime] | None = None,
        dry_run: bool = False,
        actor: str = DEFAULT_ACTOR,
    ) -> None:
        self.ledger = ledger
        self.policies = policies
        self.dry_run = dry_run
        self.actor = actor
        self._clock = clock or (lambda: datetime.now(UTC))

    def apply(
        self, result_or_counters: ReconcileResult | Iterable[BudgetCounter] | None = None
    ) -> list[EnforcementAction]:
        """Block and unblock workflows; returns what was done (or would be, in a dry run).

        Budgets are enforced on the ledger's live counters, not on the reconciliation frame:
        those are the numbers the meter reserves against, and they include today's spend that
        Cost Explorer has not billed yet. A list of counters may be passed (tests, a caller that
        read them already); a ``ReconcileResult`` or None reads them from the ledger.
        """
        now = self._clock().astimezone(UTC)
        now_ms = _ms(now)
        if result_or_counters is None or hasattr(result_or_counters, "frame"):
            counters = self.ledger.budget_counters()
        else:
            counters = list(result_or_counters)  # type: ignore[arg-type]
        keys = {"day": f"day:{now:%Y-%m-%d}", "month": f"month:{now:%Y-%m}"}
        spent: dict[tuple[str, str], int] = {}
        for counter in counters:
            spent[(counter.workflow, counter.period)] = counter.spent_nanos

        # kill_switches(0) lists expired switches too (expires_at > 0): the ones to clean up.
        switches: dict[str, KillSwitch] = {s.workflow: s for s in self.ledger.kill_switches(0)}
        workflows = sorted({w for w, _ in spent} | set(self.policies.names()) | set(switches))

        actions: list[EnforcementAction] = []
        for workflow in workflows:
            switch = switches.get(workflow)
            active = switch is not None and (switch.expires_at_ms is None or switch.expires_at_ms > now_ms)
            ours = switch is not None and switch.set_by == self.actor
            exhausted = self._exhausted(workflow, now, keys, spent)
            policy = self.policies.for_workflow(workflow)

            if exhausted is not None:
                reason = (
                    f"budget.{exhausted.field} exhausted: spent ${exhausted.spent} of "
                    f"${exhausted.budget} in {exhausted.period} (blocked until {exhausted.ends:%Y-%m-%dT%H:%MZ})"
                )
                expires_ms = _ms(exhausted.ends)
                if policy.shadow:
                    actions.append(EnforcementAction("shadow", workflow, reason, exhausted.period, expires_ms))
                    if active and ours:  # switched to shadow mode: lift our block
                        actions.append(self._clear(workflow, now_ms, "workflow is in shadow mode"))
                    continue
                if active and not ours:
                    assert switch is not None
                    actions.append(
                        EnforcementAction("held", workflow, f"{reason}; kill switch set by {switch.set_by} left in place",
                                          exhausted.period, switch.expires_at_ms)
                    )
                    continue
                if active and ours and switch is not None and switch.expires_at_ms == expires_ms:
                    continue  # already blocked until the right moment: nothing to write
                actions.append(self._block(workflow, reason, exhausted.period, now_ms, expires_ms))
                continue

            if switch is not None and ours:
                if not active:
                    why = "period rolled over (switch expired)"
                else:
                    why = "no longer over budget (budget raised, removed or set to alert)"
                actions.append(self._clear(workflow, now_ms, why))
        return actions

    def _exhausted(
        self, workflow: str, now: datetime, keys: dict[str, str], spent: dict[tuple[str, str], int]
    ) -> _Exhausted | None:
        budget = self.policies.for_workflow(workflow).budget
        if budget is None or budget.on_exhausted != "block":
            return None
        found: list[_Exhausted] = []
        for period, field_name, limit in (("day", "daily_usd", budget.daily_usd), ("month", "monthly_usd", budget.monthly_usd)):
            if limit is None:
                continue
            nanos = spent.get((workflow, keys[period]), 0)
            # Compared in integer nano-dollars, the unit the counters are kept in.
            if nanos >= usd_to_nanos(limit):
                found.append(_Exhausted(keys[period], field_name, limit, nanos_to_usd(nanos), period_end(now, period)))
        # Both exhausted: block until the later end (the month), or the switch would lift at
        # midnight only to be set again on the next run.
        return max(found, key=lambda e: e.ends) if found else None

    def _block(self, workflow: str, reason: str, period: str, now_ms: int, expires_ms: int) -> EnforcementAction:
        if not self.dry_run:
            self.ledger.set_kill_switch(workflow, reason, set_by=self.actor, now_ms=now_ms, expires_at_ms=expires_ms)
            logger.info("blocked %s: %s", workflow, reason)
        return EnforcementAction("block", workflow, reason, period, expires_ms, applied=not self.dry_run)

    def _clear(self, workflow: str, now_ms: int, reason: str) -> EnforcementAction:
        applied = False
        # The ledger's clear is unconditional: re-read just before it, so a switch a person set
        # since this run listed the switches is not cleared as if it were ours.
        current = self.ledger.kill_switch(workflow, now_ms)
        if current is not None and current.set_by != self.actor:
            return EnforcementAction("held", workflow, f"kill switch now set by {current.set_by}: left in place")
        if not self.dry_run:
            applied = self.ledger.clear_kill_switch(workflow, cleared_by=self.actor, now_ms=now_ms)
            logger.info("unblocked %s: %s", workflow, reason)
        return EnforcementAction("unblock", workflow, reason, None, None, applied=applied)
