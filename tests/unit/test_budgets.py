from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from costguard.budgets import budget_status
from costguard.ledger import SQLiteLedger
from costguard.policy import PolicySet
from costguard.usage import PeriodLimit, Reservation


def test_forecast_extrapolates_burn_rate_to_period_end(tmp_path: Path) -> None:
    # GIVEN $10 spent by noon on 2026-11-15 against a $30 daily and $600 monthly budget
    ledger = SQLiteLedger(tmp_path / "l.db")
    periods = (PeriodLimit("day:2026-11-15", None), PeriodLimit("month:2026-11", None))
    ledger._settle(ledger.connection(), Reservation("wf", periods, 0), 10_000_000_000)  # noqa: SLF001
    policies = PolicySet.from_yaml("version: 1\nworkflows:\n  wf:\n    budget: {daily_usd: 30, monthly_usd: 600}\n")
    noon = datetime(2026, 11, 15, 11, 59, 59, tzinfo=UTC)
    # WHEN the status is computed
    lines = {line.period: line for line in budget_status(ledger, policies, noon)}
    # THEN the day forecast doubles the spend, the month one scales by 30 days / 14.5 days
    assert lines["day"].forecast_usd == Decimal("20.000000")
    assert lines["day"].remaining_usd == Decimal("20") and lines["day"].used_pct == Decimal("33.3")
    assert lines["month"].forecast_usd == (Decimal(10) * 30 / Decimal("14.5")).quantize(Decimal("0.000001"))
    assert not lines["day"].blocked

