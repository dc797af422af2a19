"""Budget slices: sizing by spend rate and limit, the last dollars one request at a time, exact
settlement against the lease, and idle slices returned (costguard.meter.slices)."""

from __future__ import annotations

import time

import pytest

from costguard.meter import slices as slices_module
from costguard.meter.slices import SLICE_SHARE_DIVISOR, BudgetSlices, slice_cap
from costguard.usage import PeriodLimit, Reservation, ReserveResult

LIMIT = 1_000_000_000  # $1 a day
PERIODS = (PeriodLimit("day:2026-12-01", LIMIT), PeriodLimit("month:2026-12", None))


class FakeBudget:
    """The ledger side of ``extend_reservation``: one period with ``LIMIT``, others holding some."""

    def __init__(self, committed: int = 0) -> None:
        self.committed = committed
        self.asks: list[int] = []

    def __call__(self, lease: Reservation, amount: int) -> ReserveResult:
        self.asks.append(amount)
        if self.committed + amount > LIMIT:
            return ReserveResult(False, None, PERIODS[0].period, LIMIT, self.committed)
        self.committed += amount
        lease.amount_nanos += amount
        lease.lease_id = lease.lease_id or "lease-1"
        return ReserveResult(True, lease)


def test_a_first_slice_is_four_requests_and_never_more_than_a_share_of_the_limit() -> None:
    budget, slices = FakeBudget(), BudgetSlices("me", 60_000)
    s = slices.slice_for("wf", PERIODS)
    grant = slices.hold(s, 1_000_000, 0, budget)
    assert (grant.amount, budget.asks) == (1_000_000, [4_000_000])  # 4 x the request
    assert slice_cap(PERIODS) == LIMIT // SLICE_SHARE_DIVISOR == 50_000_000
    big = slices.slice_for("wf-big", PERIODS)
    slices.hold(big, 40_000_000, 0, budget)
    assert budget.asks[-1] == 50_000_000  # 4 x 40M capped at 1/20 of the limit


def test_the_slice_follows_the_spend_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    budget, slices = FakeBudget(), BudgetSlices("me", 60_000)
    s = slices.slice_for("wf", PERIODS)
    clock = [1000.0]
    monkeypatch.setattr(slices_module.time, "monotonic", lambda: clock[0])
    s.created = clock[0]
    grant = slices.hold(s, 100_000, 0, budget)
    # 2 s later the process has spent 3,000,000 nanos: 1.5M a second, 15M over the 10 s horizon
    clock[0] += 2.0
    settle, held = slices.settle(s, "wf", PERIODS, grant.amount, 3_000_000, final=True)
    assert (settle.spent_nanos, settle.release_nanos, held) == (3_000_000, 400_000, 0)
    slices.hold(s, 100_000, 0, budget)  # the 400,000 slice is spent: the next is rate-sized
    assert budget.asks[-1] == 15_000_000


def test_near_the_limit_the_slice_grows_only_by_the_request_in_hand() -> None:
    budget = FakeBudget(committed=LIMIT - 2_500_000)  # $0.0025 left
    slices = BudgetSlices("me", 60_000)
    s = slices.slice_for("wf", PERIODS)
    grant = slices.hold(s, 1_000_000, 0, budget)
    # 4M refused (2.5M left): then exactly what the request needs
    assert (grant.amount, budget.asks, s.tight) == (1_000_000, [4_000_000, 1_000_000], True)
    slices.settle(s, "wf", PERIODS, grant.amount, 1_000_000, final=True)
    slices.hold(s, 1_000_000, 0, budget)
    assert budget.asks[-1] == 1_000_000  # one request at a time from here on
    # 0.5M left, a request of 1M whose smallest useful hold is 0.4M: it gets the room left
    budget.committed = LIMIT - 500_000
    s2 = BudgetSlices("me", 60_000).slice_for("wf", PERIODS)
    s2.tight = True
    partial = slices.hold(s2, 1_000_000, 400_000, budget)
    assert (partial.amount, budget.asks[-2:], budget.committed) == (500_000, [1_000_000, 500_000], LIMIT)
    # and with less room than the smallest useful hold: refused, nothing held
    s3 = BudgetSlices("me", 60_000).slice_for("wf", PERIODS)
    budget.committed = LIMIT - 100_000
    refused = slices.hold(s3, 1_000_000, 400_000, budget)
    assert (refused.amount, refused.refusal.committed_nanos if refused.refusal else None) == (0, LIMIT - 100_000)


def test_settlement_never_releases_more_than_the_lease_holds() -> None:
    budget, slices = FakeBudget(), BudgetSlices("me", 60_000)
    s = slices.slice_for("wf", PERIODS)
    grant = slices.hold(s, 1_000_000, 0, budget)  # lease 4M, 1M in flight
    assert (s.lease.amount_nanos, s.in_flight, s.free) == (4_000_000, 1_000_000, 3_000_000)
    # a checkpoint of 600k keeps 400k held; the final 5M overran everything the lease had left
    settle, held = slices.settle(s, "wf", PERIODS, grant.amount, 600_000, final=False)
    assert (settle.release_nanos, held, s.in_flight, s.lease.amount_nanos) == (600_000, 400_000, 400_000, 3_400_000)
    settle, held = slices.settle(s, "wf", PERIODS, held, 5_000_000, final=True)
    assert (settle.spent_nanos, settle.release_nanos, held, s.in_flight, s.lease.amount_nanos) == (5_000_000, 3_400_000, 0, 0, 0)
    # no budget (no limit): spend is counted with no lease at all
    settle, held = slices.settle(None, "wf", PERIODS, 0, 7, final=True)
    assert (settle.lease_id, settle.spent_nanos, settle.release_nanos) == (None, 7, 0)


def test_idle_slices_go_back_but_never_with_a_request_in_flight() -> None:
    budget, slices = FakeBudget(), BudgetSlices("me", 60_000)
    busy = slices.slice_for("busy", PERIODS)
    slices.hold(busy, 1_000_000, 0, budget)
    idle = slices.slice_for("idle", PERIODS)
    grant = slices.hold(idle, 1_000_000, 0, budget)
    slices.settle(idle, "idle", PERIODS, grant.amount, 10, final=True)
    later = time.monotonic() + 3600
    returned = slices.retire_idle(later)
    assert [lease.workflow for lease in returned] == ["idle"] and idle.retired and not busy.retired
    assert slices.slice_for("idle", PERIODS) is not idle  # a retired slice is never drawn on again
    # the busy slice stays while its request runs, however long; a slice that never held money
    # has no lease to give back
    assert slices.retire_idle(later, everything=True) == [] and not busy.retired
