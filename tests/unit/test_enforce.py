from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from costguard.enforce import Enforcer, period_end
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet
from costguard.usage import PeriodLimit, Reservation

ACTOR = "costguard-reconciler"
NOV_22_NOON = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
END_OF_NOV_22_MS = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)
END_OF_NOV_MS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)


def policies(daily: int | None = 100, monthly: int | None = 1000, on_exhausted: str = "block", mode: str = "enforce") -> PolicySet:
    budget = ", ".join(
        part for part in (
            f"daily_usd: {daily}" if daily is not None else "",
            f"monthly_usd: {monthly}" if monthly is not None else "",
            f"on_exhausted: {on_exhausted}",
        ) if part
    )
    return PolicySet.from_yaml(f"version: 1\nworkflows:\n  wf:\n    mode: {mode}\n    budget: {{{budget}}}\n")


def spend(ledger: SQLiteLedger, usd: int, day: str = "2026-11-22", workflow: str = "wf") -> None:
    periods = (PeriodLimit(f"day:{day}", None), PeriodLimit(f"month:{day[:7]}", None))
    ledger._settle(ledger.connection(), Reservation(workflow, periods, 0), usd * 1_000_000_000)  # noqa: SLF001


@pytest.fixture()
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(tmp_path / "l.db")
    yield led
    led.close()


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_period_end_is_the_next_utc_boundary() -> None:
    assert period_end(NOV_22_NOON, "day") == datetime(2026, 11, 23, tzinfo=UTC)
    assert period_end(NOV_22_NOON, "month") == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "month") == datetime(2027, 1, 1, tzinfo=UTC)


def test_daily_budget_exhausted_blocks_until_midnight(ledger: SQLiteLedger) -> None:
    # GIVEN $100 spent today against a $100/day hard budget
    spend(ledger, 100)
    # WHEN the enforcer runs
    actions = Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    # THEN a kill switch is set by the reconciler, expiring at the end of the UTC day
    assert [(a.action, a.workflow, a.period, a.applied) for a in actions] == [("block", "wf", "day:2026-11-22", True)]
    switch = ledger.kill_switch("wf", ms(NOV_22_NOON))
    assert switch is not None and switch.set_by == ACTOR and switch.expires_at_ms == END_OF_NOV_22_MS
    assert "budget.daily_usd exhausted" in switch.reason
    # AND a second run changes nothing
    assert Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply() == []


def test_monthly_budget_exhausted_blocks_until_month_end(ledger: SQLiteLedger) -> None:
    spend(ledger, 600, day="2026-11-10")
    spend(ledger, 450)  # 1050 this month; 450 today (daily 500 not exhausted)
    actions = Enforcer(ledger, policies(daily=500), clock=at(NOV_22_NOON)).apply()
    assert [(a.action, a.period, a.expires_at_ms) for a in actions] == [("block", "month:2026-11", END_OF_NOV_MS)]


def test_both_exhausted_blocks_until_the_later_end(ledger: SQLiteLedger) -> None:
    spend(ledger, 1000)
    (action,) = Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    assert action.expires_at_ms == END_OF_NOV_MS


def test_day_rollover_clears_the_expired_switch(ledger: SQLiteLedger) -> None:
    spend(ledger, 150)
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    # WHEN the next day starts (yesterday's spend does not count against today)
    next_day = datetime(2026, 11, 23, 0, 5, tzinfo=UTC)
    actions = Enforcer(ledger, policies(), clock=at(next_day)).apply()
    # THEN the expired switch is cleaned up and nothing is blocked
    assert [(a.action, a.applied) for a in actions] == [("unblock", True)]
    assert "rolled over" in actions[0].reason
    assert ledger.kill_switches(0) == []


def test_raised_or_removed_budget_unblocks(ledger: SQLiteLedger) -> None:
    spend(ledger, 120)
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    assert ledger.kill_switch("wf", ms(NOV_22_NOON)) is not None
    # WHEN the daily budget is raised to 200
    actions = Enforcer(ledger, policies(daily=200), clock=at(NOV_22_NOON)).apply()
    assert [a.action for a in actions] == ["unblock"]
    assert ledger.kill_switch("wf", ms(NOV_22_NOON)) is None
    # AND likewise when the budget turns into alert-only
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    actions = Enforcer(ledger, policies(on_exhausted="alert"), clock=at(NOV_22_NOON)).apply()
    assert [a.action for a in actions] == ["unblock"]
    # AND when the workflow's budget is removed altogether
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    no_budget = PolicySet.from_yaml("version: 1\nworkflows:\n  wf: {}\n")
    assert [a.action for a in Enforcer(ledger, no_budget, clock=at(NOV_22_NOON)).apply()] == ["unblock"]
    assert ledger.kill_switches(0) == []


def test_human_switch_is_never_touched(ledger: SQLiteLedger) -> None:
    # GIVEN a person blocked the workflow (no expiry) and also one with an expiry
    ledger.set_kill_switch("wf", "incident 42", set_by="alice", now_ms=ms(NOV_22_NOON))
    ledger.set_kill_switch("other", "cost spike", set_by="bob", now_ms=1, expires_at_ms=2)  # expired
    # WHEN the workflow is not over budget
    assert Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply() == []
    # AND when it is over budget
    spend(ledger, 150)
    actions = Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    # THEN the person's switch stays exactly as it was
    assert [a.action for a in actions] == ["held"]
    switch = ledger.kill_switch("wf", ms(NOV_22_NOON))
    assert switch is not None and (switch.set_by, switch.reason, switch.expires_at_ms) == ("alice", "incident 42", None)
    assert {s.workflow: s.set_by for s in ledger.kill_switches(0)} == {"wf": "alice", "other": "bob"}


def test_switch_taken_over_by_a_person_is_not_cleared(ledger: SQLiteLedger) -> None:
    spend(ledger, 150)
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    ledger.set_kill_switch("wf", "keep it off", set_by="alice", now_ms=ms(NOV_22_NOON))
    assert [a.action for a in Enforcer(ledger, policies(daily=500), clock=at(NOV_22_NOON)).apply()] == []
    assert ledger.kill_switch("wf", ms(NOV_22_NOON)).set_by == "alice"  # type: ignore[union-attr]


def test_dry_run_reports_without_writing(ledger: SQLiteLedger) -> None:
    spend(ledger, 150)
    actions = Enforcer(ledger, policies(), clock=at(NOV_22_NOON), dry_run=True).apply()
    assert [(a.action, a.applied) for a in actions] == [("block", False)]
    assert ledger.kill_switches(0) == []
    # AND an unblock in a dry run leaves the switch in place
    Enforcer(ledger, policies(), clock=at(NOV_22_NOON)).apply()
    actions = Enforcer(ledger, policies(daily=500), clock=at(NOV_22_NOON), dry_run=True).apply()
    assert [(a.action, a.applied) for a in actions] == [("unblock", False)]
    assert ledger.kill_switch("wf", ms(NOV_22_NOON)) is not None


def test_shadow_mode_reports_but_does_not_block(ledger: SQLiteLedger) -> None:
    spend(ledger, 150)
    actions = Enforcer(ledger, policies(mode="shadow"), clock=at(NOV_22_NOON)).apply()
    assert [a.action for a in actions] == ["shadow"]
    assert ledger.kill_switches(0) == []


def test_counters_can_be_passed_in_and_unknown_workflows_use_defaults(ledger: SQLiteLedger) -> None:
    from costguard.usage import BudgetCounter

    defaults = PolicySet.from_yaml("version: 1\ndefaults:\n  budget: {daily_usd: 10}\n")
    counters = [BudgetCounter("adhoc", "day:2026-11-22", 10_000_000_000, 0),
                BudgetCounter("adhoc", "day:2026-11-21", 99_000_000_000, 0)]
    actions = Enforcer(ledger, defaults, clock=at(NOV_22_NOON)).apply(counters)
    assert [(a.action, a.workflow, a.period) for a in actions] == [("block", "adhoc", "day:2026-11-22")]
