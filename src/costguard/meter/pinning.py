"""Model pinning: ``models: {pin: session}`` keeps a session on the model of its first call.

The first call of a session pins its model in the ledger (atomically: of two processes racing on
a new session, one model wins and both learn which); every later call on another model is a
``ModelNotAllowed`` with rule ``models.pin``, checked before a Converse/InvokeModel call is sent
and, for agents, on the trace step that names the model. Models are compared by their base
model id, so an inference profile (``us.``/``global.``), an ARN and the plain id of one model are
the same model; an application inference profile is resolved as for pricing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from costguard.pricing import base_model_id

if TYPE_CHECKING:
    from costguard.pricing.catalog import RateCard


def pinned_identity(model_id: str, card: RateCard) -> str:
    """The id two calls must share to be on the same model."""
    # A priced card has resolved profiles and ARNs (application profiles included); an unpriced
    # one may stand for a fallback price, which must not make two unknown models equal.
    return card.base_model_id if card.priced else base_model_id(model_id)


class SessionPin:
    """One request's view of its session's pinned model: the ledger is asked once per request."""

    __slots__ = ("_pin", "pinned")

    def __init__(self, pin: Callable[[str], str | None]) -> None:
        self._pin = pin
        self.pinned: str | None = None

    def violates(self, identity: str) -> str | None:
        """The pinned model when ``identity`` is another one, else None (pinning it if first)."""
        if self.pinned is None:
            # None back: the ledger is down and failing open; the next call asks again.
            self.pinned = self._pin(identity)
        if self.pinned is not None and self.pinned != identity:
            return self.pinned
        return None
