"""The ledger contract every backend implements (SQLite embedded, DynamoDB shared).

The meter calls, per request: ``kill_switch`` (cached by the caller), ``session_totals``,
``reserve`` before the call, ``extend_reservation`` when the running cost outgrows what was
reserved, and ``record`` once per stream segment. ``record`` writes usage rows, request and session
counters, violations and settles the reservation in one atomic unit, so a budget counter always
equals the sum of the usage rows behind it.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from costguard.errors import InvalidIdError
from costguard.usage import (
    ActionRecord,
    AlertKey,
    BudgetCounter,
    DailyUsage,
    IdempotencyRecord,
    KillSwitch,
    Lease,
    PeriodLimit,
    RequestSegment,
    Reservation,
    ReserveResult,
    SessionUsage,
    Totals,
    ViolationRecord,
)

#: How long a budget hold lives unless its request renews it: longer than any single model call
#: (so a slow call is not reclaimed under it), short enough that a crashed process's hold is back
#: well within the day. ``Guard(lease_ttl_s=...)`` changes it.
DEFAULT_LEASE_TTL_MS = 900_000


def new_lease_id() -> str:
    return secrets.token_hex(12)


def now_or(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else int(time.time() * 1000)


#: The longest id (UTF-8 bytes) a ledger stores. Ids are kept whole as attributes, so a few of
#: them must fit a DynamoDB item (400 KB); ids too long for a key are hashed inside keys.
MAX_ID_BYTES: Final[int] = 8 * 1024
#: How long an alert claim is held before another run may take it over and publish the alert:
#: longer than a run can last (a Lambda runs at most 15 minutes), so a claim is only taken over
#: from a run that is gone.
ALERT_CLAIM_LEASE_MS: Final[int] = 20 * 60 * 1000
#: Length of a generated user id key (HMAC-SHA256 keys gain nothing beyond the hash's block).
USER_ID_KEY_BYTES: Final[int] = 32
#: Ids every record needs; other kinds (user, agent...) may be None.
REQUIRED_ID_KINDS: Final[frozenset[str]] = frozenset({"workflow", "session", "request"})


def check_storable_id(kind: str, value: object) -> None:
    """Raise :class:`~costguard.errors.InvalidIdError` if ``value`` cannot be stored as a ``kind``
    id by every ledger backend; return None when it can.

    Storable: a ``str`` that encodes to UTF-8 (no lone surrogates), at most
    :data:`MAX_ID_BYTES` bytes, and non-empty for :data:`REQUIRED_ID_KINDS`. ``None`` is
    storable for the other kinds (nothing is stored).
    """
    required = kind in REQUIRED_ID_KINDS
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise InvalidIdError(kind, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidIdError(kind, "must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidIdError(kind, f"is not valid Unicode (a lone surrogate at character {exc.start})") from None
    if size > MAX_ID_BYTES:
        raise InvalidIdError(kind, f"is {size} bytes of UTF-8, over the {MAX_ID_BYTES}-byte limit")


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

    def reserve(
        self,
        workflow: str,
        periods: Sequence[PeriodLimit],
        amount_nanos: int,
        *,
        owner: str = "",
        ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        now_ms: int | None = None,
    ) -> ReserveResult:
        """Atomically hold ``amount_nanos`` against every period, or nothing if one has no room.

        A period has room when ``spent + reserved + amount <= limit``; unlimited periods always do.
        The hold is a lease owned by ``owner`` that expires ``ttl_ms`` after ``now_ms`` unless
        renewed; leases of ``workflow`` that have expired are reclaimed first, atomically.
        """
        reservation = Reservation(workflow, tuple(periods), 0, None, owner, 0, ttl_ms)
        return self._hold(reservation, amount_nanos, now_or(now_ms))

    def extend_reservation(self, reservation: Reservation, amount_nanos: int, *, now_ms: int | None = None) -> ReserveResult:
        """Grow an existing reservation by ``amount_nanos`` under the same rule as ``reserve``
        (renewing its lease); a reservation without a lease yet gets one."""
        return self._hold(reservation, amount_nanos, now_or(now_ms))

    @abstractmethod
    def _hold(self, reservation: Reservation, amount_nanos: int, now_ms: int) -> ReserveResult:
        """The backend's atomic hold behind ``reserve`` and ``extend_reservation``."""

    @abstractmethod
    def renew_lease(self, reservation: Reservation, now_ms: int) -> bool:
        """Push the lease's expiry ``ttl_ms`` past ``now_ms``; False when it was already
        reclaimed (the reservation is then empty and the request holds nothing)."""

    @abstractmethod
    def reclaim_expired_leases(self, now_ms: int, workflow: str | None = None) -> int:
        """Give back the holds of every expired lease (of ``workflow``, or all); their count."""

    @abstractmethod
    def leases(self, workflow: str | None = None) -> list[Lease]:
        """The leases held now, live and expired-but-not-yet-reclaimed."""

    @abstractmethod
    def release(self, reservation: Reservation) -> None:
        """Give a reservation back unused (the call failed before anything was spent)."""

    @abstractmethod
    def record(self, segment: RequestSegment) -> None:
        """Write one request segment and settle its reservation, all or nothing."""

    def record_many(self, segments: Sequence[RequestSegment]) -> None:
        """Write many segments in order, in as few atomic units as the backend allows (the
        background writer's batches). Each segment is still written whole or not at all."""
        for segment in segments:
            self.record(segment)

    @abstractmethod
    def record_violation(self, violation: ViolationRecord) -> None:
        """Record a violation that happened before any usage (a call blocked before sending)."""

    @abstractmethod
    def request_totals(self, request_id: str) -> Totals | None:
        """A request's totals so far, for return-control continuations across processes."""

    @abstractmethod
    def find_return_control(self, session_id: str, invocation_id: str) -> str | None:
        """The request id paused by a returnControl with this invocation id, if any."""

    @abstractmethod
    def pin_session_model(self, session_id: str, model: str, now_ms: int) -> str:
        """Pin ``model`` as the session's model unless one is pinned already; the pinned model.

        Atomic across processes: of two first calls racing on one session, one model wins and
        both callers get it back.
        """

    @abstractmethod
    def tool_repeats(self, session_id: str) -> dict[str, int]:
        """How often each (tool, canonical parameters) hash was called in the session."""

    @abstractmethod
    def add_tool_repeats(self, session_id: str, counts: dict[str, int], now_ms: int) -> None:
        """Add ``counts`` (hash -> calls) to the session's repeat counters (atomic increments)."""

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

    def daily_usage_by_price_key(self, since_day: str, until_day: str) -> list[DailyUsage]:
        """``daily_usage`` split by price key (``DailyUsage.price_key``): what reconcile compares
        with the usage types Cost Explorer bills. A backend that keeps no such split returns []."""
        return []

    def usage_report(self, query: ReportQuery) -> Report:
        """Spend as ``query`` asks (see ``costguard.reports.ReportQuery``). Each backend reads its
        rows its own way (SQL over the usage rows; Query over day partitions); the aggregation
        into a ``Report`` is shared (``costguard.reports.build_report``)."""
        from costguard.errors import LedgerError

        raise LedgerError(f"{type(self).__name__} cannot produce usage reports")

    # -- reconciler: alert dedupe ----------------------------------------------------------------

    @abstractmethod
    def claim_alert_key(self, key: str, now_ms: int, detail: dict[str, Any]) -> bool:
        """Atomically claim an alert for publishing, for :data:`ALERT_CLAIM_LEASE_MS`.

        True when this caller now owns it: the key was never claimed, or its claim expired unsent
        (the run that claimed it died before publishing: taking it over republishes the alert).
        False when it was sent, or another run's claim is still live (send nothing).
        """

    @abstractmethod
    def mark_alert_sent(self, key: str, now_ms: int) -> None:
        """Record that a claimed alert was published: it is never sent again."""

    @abstractmethod
    def release_alert_key(self, key: str) -> None:
        """Forget a claimed alert key (its publish failed), so the next run sends it again."""

    @abstractmethod
    def alert_keys(self, prefix: str | None = None) -> list[AlertKey]:
        """Claimed and sent alert keys, optionally those starting with ``prefix``, oldest first."""

    def expired_alert_claims(self, now_ms: int) -> list[AlertKey]:
        """Claims whose lease ran out before their alert was marked sent, oldest first."""
        return [
            k
            for k in self.alert_keys()
            if k.state == "claimed" and k.lease_until_ms is not None and k.lease_until_ms <= now_ms
        ]

    # -- action guard ---------------------------------------------------------------------------

    @abstractmethod
    def record_action(self, record: ActionRecord) -> None:
        """Record one guarded action group invocation (sizes and trim counts only).

        Its ``cost_nanos`` (the Lambda's own cost) is added, in the same atomic unit, to its
        session's cost and to the workflow's day and month budget counters.
        """

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

    # -- identity -------------------------------------------------------------------------------

    @abstractmethod
    def user_id_key(self) -> bytes:
        """The secret that user ids are keyed-hashed with (:mod:`costguard.identity`) when none is
        configured: generated once, kept beside the ledger and the same for every caller sharing
        it, so the same user maps to the same reference everywhere. At least 32 bytes."""

    _closed: bool = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: nothing can be read or written any more."""
        return self._closed

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
