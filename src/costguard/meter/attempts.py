"""Every attempt botocore sends for a metered call, seen through the client's event hooks.

botocore retries some failures by itself (read timeouts, connection resets, throttling). An
attempt that was sent but whose response never arrived (``ReadTimeoutError``,
``ConnectionClosedError``) may well have run the model and been billed; costguard cannot know
its usage, so the request settles it at an estimate flagged ``usage_unknown`` instead of
releasing it at $0. Hooks (``before-send.<service>`` and ``response-received.<service>``,
emitted by ``botocore.endpoint.Endpoint`` once per attempt) are registered once per client
(``unique_id``) and find the call in progress through a thread-local, since botocore emits them
on the calling thread.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ConnectionClosedError, ReadTimeoutError, ResponseStreamingError

#: Failures after the request went out: the model may have run.
_SENT_BUT_UNANSWERED = (ReadTimeoutError, ConnectionClosedError, ResponseStreamingError)

_current = threading.local()


class Attempts:
    __slots__ = ("sent", "unanswered")

    def __init__(self) -> None:
        self.sent = 0
        self.unanswered = 0


def install(client: Any) -> None:
    """Register the hooks on ``client`` (idempotent: a client wrapped twice keeps one pair)."""
    events = getattr(getattr(client, "meta", None), "events", None)
    if events is None:
        return
    service = client.meta.service_model.service_id.hyphenize()
    events.register(f"before-send.{service}", _before_send, unique_id="costguard-before-send")
    events.register(f"response-received.{service}", _response_received, unique_id="costguard-response-received")


class tracking:  # noqa: N801 - used as ``with attempts.tracking() as tried``, like a function
    """Attempts of the call made inside the ``with`` on this thread.

    A class, not a ``contextmanager`` generator: it runs on every metered call."""

    __slots__ = ("previous",)

    def __enter__(self) -> Attempts:
        self.previous = getattr(_current, "attempts", None)
        attempts = _current.attempts = Attempts()
        return attempts

    def __exit__(self, *exc_info: object) -> None:
        _current.attempts = self.previous


def _before_send(**kwargs: Any) -> None:
    attempts = getattr(_current, "attempts", None)
    if attempts is not None:
        attempts.sent += 1
    # None: botocore sends the request itself (a non-None return would be used as the response).


def _response_received(exception: BaseException | None = None, **kwargs: Any) -> None:
    attempts = getattr(_current, "attempts", None)
    if attempts is not None and isinstance(exception, _SENT_BUT_UNANSWERED):
        attempts.unanswered += 1
