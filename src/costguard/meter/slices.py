"""Budget slices: a process holds a slice of a budget and spends it locally.

Holding money per request cost a ledger write before every call and another to settle it. A
process instead takes a *slice* of each budget it spends from: one lease in the ledger (see
``Ledger.reserve``), renewed by the background writer while the process lives. Requests carve
their holds out of the slice in memory; what they spend is settled against the lease in the
writer's batches (:class:`~costguard.usage.LeaseSettle`); the ledger is asked for more only when
the slice runs out.

Sizing: a slice is what this process spent in the last :data:`SLICE_HORIZON_S` seconds (at
least the request that needs it), capped at :data:`SLICE_SHARE` of the smallest budget limit,
so a quiet process holds little and a busy one goes to the ledger a few times a minute. Once the
ledger has refused a slice (the budget is nearly gone) the slice only ever grows by what the
request in hand needs: the last dollars go one request at a time, exactly as without slices.

Bounds (documented in docs/ledgers.md): spend never exceeds a limit by more than per-request
holds did (a call that costs more than the budget had left is recorded as an overspend); money
held in slices but not yet spent is at most the sum of live slices, each at most
``SLICE_SHARE`` of the limit, and comes back when a slice idles for :data:`SLICE_IDLE_S`, when
the process closes its guard or exits, or, if it dies, when the lease expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from costguard.usage import LeaseSettle, PeriodLimit, Reservation, ReserveResult

#: A slice covers about this many seconds of the process's spend.
SLICE_HORIZON_S = 10.0
#: No slice exceeds this share of a budget limit.
SLICE_SHARE_DIVISOR = 20
#: A slice nobody has drawn on for this long goes back to the budget.
SLICE_IDLE_S = 30.0


def slice_cap(periods: tuple[PeriodLimit, ...]) -> int:
    """The most one slice of these periods may hold: a share of the smallest limit (at least 1)."""
    limits = [p.limit_nanos for p in periods if p.limit_nanos is not None]
    return max(1, min(limits) // SLICE_SHARE_DIVISOR) if limits else 2**62


@dataclass
class Slice:
    """One process's slice of one workflow's budget periods."""

    workflow: str
    periods: tuple[PeriodLimit, ...]
    #: The ledger's lease; ``amount_nanos`` is what the ledger will hold once every settlement
    #: already handed to the writer is written.
    lease: Reservation
    #: Money promised to requests in flight (their holds).
    in_flight: int = 0
    #: The ledger has refused this slice once: grow only by what a request needs.
    tight: bool = False
    spent: int = 0
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The periods' counter keys, as settlements name them.
    period_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.period_names = tuple(p.period for p in self.periods)

    @property
    def free(self) -> int:
        return self.lease.amount_nanos - self.in_flight


@dataclass(frozen=True, slots=True)
class Grant:
    """What :meth:`BudgetSlices.hold` gave: ``amount`` held in ``slice``, or a refusal."""

    slice: Slice | None
    amount: int
    refusal: ReserveResult | None = None


Reserve = Callable[[Reservation, int], "ReserveResult | None"]


class BudgetSlices:
    """The slices of one Guard (one per workflow and set of periods)."""

    def __init__(self, owner: str, ttl_ms: int) -> None:
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._slices: dict[tuple[str, tuple[PeriodLimit, ...]], Slice] = {}
        self._lock = threading.Lock()

    def slice_for(self, workflow: str, periods: tuple[PeriodLimit, ...]) -> Slice:
        key = (workflow, periods)
        with self._lock:
            current = self._slices.get(key)
            if current is None or current.retired:
                current = Slice(workflow, periods, Reservation(workflow, periods, 0, None, self.owner, 0, self.ttl_ms))
                self._slices[key] = current
            return current

    def hold(self, s: Slice, amount: int, minimum: int, reserve: Reserve) -> Grant:
        """Hold ``amount`` for a request (or, when the budget has less, at least ``minimum``).

        ``reserve(lease, more)`` asks the ledger to grow the lease (None: ledger down, failing
        open). Returns the amount held (possibly less than asked) or the ledger's refusal.
        """
        with s.lock:
            s.last_used = time.monotonic()
            if s.free >= amount:
                s.in_flight += amount
                return Grant(s, amount)
            need = amount - max(0, s.free)
            ask = need if s.tight else max(need, self._target_size(s, amount))
            refusal: ReserveResult | None = None
            for _ in range(3):
                result = reserve(s.lease, ask)
                if result is None:
                    # Ledger down under on_ledger_error: allow: go on, unheld.
                    return Grant(s, 0)
                if result.ok:
                    s.in_flight += amount
                    return Grant(s, amount)
                s.tight = True
                refusal = result
                room = (result.limit_nanos or 0) - (result.committed_nanos or 0)
                if room >= need and ask > need:
                    ask = need
                    continue
                free = max(0, s.free)
                if room <= 0 and free and free >= minimum:
                    # The budget is spoken for, but this slice still holds some of it.
                    s.in_flight += free
                    return Grant(s, free, refusal)
                available = free + max(0, room)
                if room > 0 and available >= minimum and ask > room:
                    ask = room
                    amount = available
                    need = room
                    continue
                break
            return Grant(s, 0, refusal)

    def grow(self, s: Slice, amount: int, reserve: Reserve) -> Grant:
        """Grow a running request's hold by ``amount`` (or what room is left)."""
        return self.hold(s, amount, 1, reserve)

    def settle(self, s: Slice | None, workflow: str, periods: tuple[PeriodLimit, ...], held: int, spent: int, *, final: bool) -> tuple[LeaseSettle, int]:
        """The settlement of ``spent`` by a request holding ``held``; and what it still holds.

        A final settlement gives the whole hold back to the slice; a checkpoint only what was
        spent.
        """
        if s is None:
            return LeaseSettle(workflow, tuple(p.period for p in periods), None, spent, 0), 0
        names = s.period_names
        with s.lock:
            used = min(held, spent)
            remaining = 0 if final else held - used
            s.in_flight -= held - remaining
            release = min(spent, max(0, s.lease.amount_nanos))
            s.lease.amount_nanos -= release
            s.spent += spent
            s.last_used = time.monotonic()
            return LeaseSettle(workflow, names, s.lease.lease_id, spent, release), remaining

    def give_back(self, s: Slice | None, held: int) -> None:
        """A hold unused (the call was blocked or failed before it cost anything)."""
        if s is None or not held:
            return
        with s.lock:
            s.in_flight -= held

    def _target_size(self, s: Slice, amount: int) -> int:
        age = max(1.0, time.monotonic() - s.created)
        by_rate = int(s.spent * SLICE_HORIZON_S / age)
        return min(max(amount * 4, by_rate), max(amount, slice_cap(s.periods)))

    # -- upkeep (run by the writer thread) -------------------------------------------------------

    def live(self) -> list[Slice]:
        with self._lock:
            return [s for s in self._slices.values() if not s.retired]

    def retire_idle(self, now: float, idle_s: float | None = None, *, everything: bool = False) -> list[Reservation]:
        """Slices idle for ``idle_s`` (default :data:`SLICE_IDLE_S`), or all, with nothing in
        flight: retired; their leases, to release."""
        idle_s = SLICE_IDLE_S if idle_s is None else idle_s
        leases = []
        with self._lock:
            for key, s in list(self._slices.items()):
                with s.lock:
                    if s.in_flight or (not everything and now - s.last_used < idle_s):
                        continue
                    s.retired = True
                    del self._slices[key]
                    if s.lease.lease_id is not None or s.lease.amount_nanos:
                        leases.append(s.lease)
        return leases
