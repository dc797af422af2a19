"""The ledger contract every backend implements (SQLite embedded, DynamoDB shared).

The meter calls, per request: ``kill_switch`` (cached by the caller), ``session_totals``,
``reserve`` before the call, ``extend_reservation`` when the running cost outgrows what was
reserved, and ``record`` once per stream segment. ``record`` writes usage rows, request and session
counters, violations and settles the reservation in one atomic unit, so a budget counter always
equals the sum of the usage rows behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from costguard.usage import (
    ActionRecord,
    AlertKey,
    BudgetCounter,
    DailyUsage,
    IdempotencyRecord,
    KillSwitch,
    PeriodLimit,
    RequestSegment,
    Reservation,
    ReserveResult,
    SessionUsage,
    Totals,
    ViolationRecord,
)

if TYPE_CHECKING:
    from costguard.reports import Report, ReportQuery


class Ledger(ABC):
    """Where costguard keeps usage, budgets, violations, kill switches and alert keys."""

    url: str = ""

    # -- hot path ---------------------------------------------------------------------------

    @abstractmethod
    def kill_switch(self, workflow: str, now_ms: int) -> KillSwitch | None:
        """The workflow's active kill switch, or None (an expired switch is not active)."""

    @abstractmethod
    def session_totals(self, session_id: str) -> Totals:
        """The session's counters so far (zeros for a new session)."""

    @abstractmethod
    def reserve(self, workflow: str, periods: Sequence[PeriodLimit], amount_nanos: int) -> ReserveResult:
        """Atomically hold ``amount_nanos`` against every period, or nothing if one has no room.

        A period has room when ``spent + reserved + amount <= limit``; unlimited periods always do.
        """

    @abstractmethod
    def extend_reservation(self, reservation: Reservation, amount_nanos: int) -> ReserveResult:
        """Grow an existing reservation by ``amount_nanos`` under the same rule as ``reserve``."""

    @abstractmethod
    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unused (the call failed before anything was spent)."""

    @abstractmethod
    def record(self, segment: RequestSegment) -> None:
        """Write one request segment and settle its reservation, all or nothing."""

    @abstractmethod
    def record_violation(self, violation: ViolationRecord) -> None:
        """Record a violation that happened before any usage (a call blocked before sending)."""

    @abstractmethod
    def request_totals(self, request_id: str) -> Totals | None:
        """A request's totals so far, for return-control continuations across processes."""

    @abstractmethod
    def find_return_control(self, session_id: str, invocation_id: str) -> str | None:
        """The request id paused by a returnControl with this invocation id, if any."""

    # -- administration and reads -------------------------------------------------------------

    @abstractmethod
    def session_usage(self, session_id: str) -> SessionUsage | None:
        """Everything known about a session, violations included; None when never seen."""

    @abstractmethod
    def set_kill_switch(
        self, workflow: str, reason: str, set_by: str, now_ms: int, expires_at_ms: int | None = None
    ) -> KillSwitch:
        """Block a workflow until cleared or until ``expires_at_ms``."""

    @abstractmethod
    def clear_kill_switch(self, workflow: str, cleared_by: str, now_ms: int) -> bool:
        """Clear a workflow's kill switch; False when none was set."""

    @abstractmethod
    def kill_switches(self, now_ms: int) -> list[KillSwitch]:
        """Every active kill switch."""

    @abstractmethod
    def budget_counters(self, workflow: str | None = None) -> list[BudgetCounter]:
        """Period counters (spent and reserved), optionally for one workflow."""

    @abstractmethod
    def violations(
        self, *, workflow: str | None = None, session_id: str | None = None, limit: int | None = None
    ) -> list[ViolationRecord]:
        """Recorded violations, newest first."""

    @abstractmethod
    def daily_usage(self, since_day: str, until_day: str) -> list[DailyUsage]:
        """Metered usage per UTC day, workflow and base model for ``since_day <= day < until_day``.

        Days are ``YYYY-MM-DD``; rows are ordered by day, workflow, model.
        """

    def usage_report(self, query: ReportQuery) -> Report:
        """Spend as ``query`` asks (see ``costguard.reports.ReportQuery``). Each backend reads its
        rows its own way (SQL over the usage rows; Query over day partitions); the aggregation
        into a ``Report`` is shared (``costguard.reports.build_report``)."""
        from costguard.errors import LedgerError

        raise LedgerError(f"{type(self).__name__} cannot produce usage reports")

    # -- reconciler: alert dedupe ----------------------------------------------------------------

    @abstractmethod
    def claim_alert_key(self, key: str, now_ms: int, detail: dict[str, Any]) -> bool:
        """Atomically mark an alert as sent; False when the key was claimed before (send nothing)."""

    @abstractmethod
    def release_alert_key(self, key: str) -> None:
        """Forget a claimed alert key (its publish failed), so the next run sends it again."""

    @abstractmethod
    def alert_keys(self, prefix: str | None = None) -> list[AlertKey]:
        """Claimed alert keys, optionally those starting with ``prefix``, oldest first."""

    # -- action guard ---------------------------------------------------------------------------

    @abstractmethod
    def record_action(self, record: ActionRecord) -> None:
        """Record one guarded action group invocation (sizes and trim counts only)."""

    @abstractmethod
    def actions(self, *, workflow: str | None = None, since_ms: int | None = None) -> list[ActionRecord]:
        """Recorded action invocations, oldest first."""

    @abstractmethod
    def claim_idempotency_key(self, key: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        """Claim ``key`` for a first run: None when this caller owns it now and should run the action.

        Otherwise the existing record (``in_progress`` or ``completed``) that is still within its
        expiry. An expired record is replaced by the new claim.
        """

    @abstractmethod
    def complete_idempotency_key(
        self, key: str, response_sha256: str, response_bytes: int, now_ms: int
    ) -> None:
        """Mark a claimed key completed with the hash and size of what the action returned."""

    @abstractmethod
    def release_idempotency_key(self, key: str) -> None:
        """Drop a claim whose run failed, so a retry runs the action again."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the ledger must not be used afterwards."""

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
