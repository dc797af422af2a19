"""Metered event streams: yield exactly what boto3 yields, meter each event, settle once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from costguard.errors import LedgerError, PolicyViolation
from costguard.meter.request import RequestMeter

logger = logging.getLogger("costguard")


class EventConsumer(Protocol):
    """What an operation adapter does with its stream's events."""

    def feed(self, event: dict[str, Any]) -> bool:
        """Meter ``event`` (calling ``meter.on_step``); True to hand it to the caller."""

    def end(self, completed: bool) -> None:
        """The stream is over (``completed``: read to its end); meter what only the end tells."""


def error_status(exc: ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", "error"))
    return "throttled" if "hrottl" in code else f"error:{code}"


def call_error_status(exc: BaseException) -> str:
    """The status of a request whose call failed before a response: "throttled" or "error"."""
    return "throttled" if isinstance(exc, ClientError) and error_status(exc) == "throttled" else "error"


class MeteredStream:
    """A boto3 event stream, metered. Iterate it, ``close()`` it, or use it as a context manager:
    ``with resp["stream"] as events: ...`` settles the request even when the loop is left early."""

    def __init__(self, raw: Any, meter: RequestMeter, consumer: EventConsumer) -> None:
        self._raw = raw
        self._meter = meter
        self._consumer = consumer
        self._iterator: Iterator[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading: closes the HTTP stream and records what was metered so far."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        if not self._meter.finished:
            try:
                self._raw.close()
            finally:
                self._settle("abandoned", completed=False)

    def __del__(self) -> None:
        # A stream dropped without being read still holds a budget reservation: give it back.
        if not self._meter.finished:
            try:
                self._settle("abandoned", completed=False)
            except Exception:  # noqa: BLE001 - nothing may escape a finalizer
                logger.exception("could not record an abandoned stream")

    def _settle(self, status: str, *, completed: bool) -> None:
        meter = self._meter
        try:
            self._consumer.end(completed)
        except PolicyViolation:
            pass  # the stream is over; the violation is recorded with the segment
        except Exception as exc:  # noqa: BLE001 - costguard's own code: contained, never the caller's
            meter.guard.contain(f"{meter.operation} stream end", exc)
        meter.finish(status)

    def _events(self) -> Iterator[dict[str, Any]]:
        feed = self._consumer.feed
        meter = self._meter
        status = "abandoned"
        completed = False
        try:
            for event in self._raw:
                try:
                    show = feed(event)
                except (PolicyViolation, LedgerError):
                    raise
                except Exception as exc:  # noqa: BLE001 - a bug of costguard's must not break the stream
                    meter.guard.contain(f"{meter.operation} event", exc)
                    meter.unknown_events += 1
                    show = True
                if show:
                    yield event
            status = "ok"
            completed = True
        except PolicyViolation:
            status = "violation"
            raise
        except ClientError as exc:
            # An exception event mid-stream (throttling, dependency failure...) still leaves
            # the usage metered so far to record.
            status = error_status(exc)
            raise
        except BotoCoreError:
            status = "error"
            raise
        finally:
            if not meter.finished:
                if status != "ok":
                    self._raw.close()
                self._settle(status, completed=completed)
