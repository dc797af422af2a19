"""Model pinning: ``models: {pin: session}`` keeps a session on the model of its first call.

The first call of a session pins its model in the ledger (atomically: of two processes racing on
a new session, one model wins and both learn which); every later call on another model is a
``ModelNotAllowed`` with rule ``models.pin``, checked before a Converse/InvokeModel call is sent
and, for agents, on the trace step that names the model. Models are compared by their base
model id, so an inference profile (``us.``/``global.``), an ARN and the plain id of one model are
the same model; an application inference profile is resolved as for pricing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from costguard.pricing import base_model_id

if TYPE_CHECKING:
    from costguard.pricing.catalog import RateCard


def pinned_identity(model_id: str, card: RateCard) -> str:
    """The id two calls must share to be on the same model."""
    # A priced card has resolved profiles and ARNs (application profiles included); an unpriced
    # one may stand for a fallback price, which must not make two unknown models equal.
    return card.base_model_id if card.priced else base_model_id(model_id)


#: Pins already learnt, per ledger: a pin never changes, so a process asks the ledger once per
#: session (a conditional write on DynamoDB) instead of once per request. Bounded: cleared whole
#: when full, which only costs the next requests one more ledger round trip each.
MAX_KNOWN_PINS = 10_000
_known: WeakKeyDictionary[Any, dict[str, str]] = WeakKeyDictionary()
_known_lock = threading.Lock()


def known_pins(ledger: Any) -> dict[str, str]:
    with _known_lock:
        pins = _known.get(ledger)
        if pins is None or len(pins) >= MAX_KNOWN_PINS:
            pins = _known[ledger] = {}
        return pins


class SessionPin:
    """One request's view of its session's pinned model."""

    __slots__ = ("_pin", "_known", "_session_id", "pinned")

    def __init__(self, session_id: str, pin: Callable[[str], str | None], known: dict[str, str]) -> None:
        self._session_id = session_id
        self._pin = pin
        self._known = known
        self.pinned: str | None = known.get(session_id)

    def violates(self, identity: str) -> str | None:
        """The pinned model when ``identity`` is another one, else None (pinning it if first)."""
        if self.pinned is None:
            # None back: the ledger is down and failing open; the next call asks again.
            self.pinned = self._pin(identity)
            if self.pinned is not None:
                self._known[self._session_id] = self.pinned
        if self.pinned is not None and self.pinned != identity:
            return self.pinned
        return None
