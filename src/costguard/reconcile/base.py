"""The reconciliation window and the error every reconciliation step raises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from costguard.errors import CostguardError

__all__ = ["UNTAGGED", "ReconcileError", "Window", "parse_day"]

#: The workflow of Cost Explorer spend that carries none of the cost allocation tags asked for.
UNTAGGED: Final = "(untagged)"


class ReconcileError(CostguardError):
    """Reconciliation could not run: a bad window, a malformed Cost Explorer page, an AWS error."""


# -- the window -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """UTC days ``start <= day < end`` (``end`` exclusive, like Cost Explorer's ``TimePeriod``)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise ReconcileError("a window needs start and end dates")
        if self.end <= self.start:
            raise ReconcileError(
                f"empty window: end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )

    @classmethod
    def parse(cls, since: str | None, until: str | None, today: date) -> Window:
        """The window from ``since``/``until`` as typed by a person (``YYYY-MM-DD``, UTC).

        ``until`` is the **last day included**, like ``costguard report --until`` and the Lambda
        event's ``until``, so ``--since 2026-11-01 --until 2026-11-30`` is November; the window's
        ``end`` is the day after it. Defaults: ``since`` the first day of ``today``'s month,
        ``until`` today (so ``end`` is tomorrow).
        """
        start = parse_day(since, "since") if since is not None else today.replace(day=1)
        last = parse_day(until, "until") if until is not None else today
        if last < start:
            raise ReconcileError(f"until {last.isoformat()} is before since {start.isoformat()}")
        return cls(start, last + timedelta(days=1))

    def days(self) -> list[str]:
        """Every day of the window as ``YYYY-MM-DD``, in order."""
        return [(self.start + timedelta(days=i)).isoformat() for i in range((self.end - self.start).days)]

    def time_period(self) -> dict[str, str]:
        return {"Start": self.start.isoformat(), "End": self.end.isoformat()}


def parse_day(value: Any, name: str) -> date:
    """A ``YYYY-MM-DD`` day typed by a person or an event; ``ReconcileError`` names ``name``."""
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ReconcileError(f"{name} must be a date YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ReconcileError(f"{name} is not a valid date: {value!r} ({exc})") from None
