"""ConverseStream: usage, tier and router choice from the stream's final ``metadata`` event;
tool calls from ``contentBlockStart`` events (see :mod:`costguard.meter.tools`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from costguard.meter.operations import register
from costguard.meter.operations.base import CHARS_PER_TOKEN, StreamingOperation
from costguard.meter.operations.converse import converse_steps, estimate_request_tokens, prepare_tool_turn
from costguard.meter.request import RequestMeter
from costguard.meter.tools import ToolTurn
from costguard.trace import ModelCall

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient


class _MetadataConsumer:
    __slots__ = ("meter", "model_id", "request", "turn", "seen_usage", "output_bytes")

    def __init__(self, meter: RequestMeter, model_id: str, request: dict[str, Any], turn: ToolTurn) -> None:
        self.meter = meter
        self.model_id = model_id
        self.request = request
        self.turn = turn
        self.seen_usage = False
        self.output_bytes = 0

    def feed(self, event: dict[str, Any]) -> bool:
        delta = event.get("contentBlockDelta")
        if delta is not None:
            self.meter.mark_output()
            text = (delta.get("delta") or {}).get("text") if isinstance(delta, dict) else None
            if isinstance(text, str):
                self.output_bytes += len(text)
        elif "contentBlockStart" in event:
            start = event["contentBlockStart"]
            begun = start.get("start") if isinstance(start, dict) else None
            if isinstance(begun, dict):
                step = self.turn.call_started(begun.get("toolUse"))
                if step is not None:
                    self.meter.on_step(step)
        elif "metadata" in event:
            self.seen_usage = True
            for step in converse_steps(self.model_id, self.request, event["metadata"]):
                self.meter.on_step(step)
        return True

    def end(self, completed: bool) -> None:
        if not self.seen_usage:
            # The model was called even if its usage never arrived: count and price the call at
            # an estimate of what was asked and what had streamed back.
            self.meter.on_step(
                ModelCall(self.model_id, "CONVERSE", estimate_request_tokens(self.request),
                          -(-self.output_bytes // CHARS_PER_TOKEN), usage_missing=True,
                          flags=frozenset({"usage_unknown", "estimated"}))
            )


@register
class ConverseStream(StreamingOperation):
    method = "converse_stream"
    api_name = "ConverseStream"
    stream_key = "stream"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        return prepare_tool_turn(super().prepare(proxy, kwargs), kwargs)

    def consumer(self, meter: RequestMeter, state: tuple[str, ToolTurn], kwargs: dict[str, Any], response: Any) -> _MetadataConsumer:
        model_id, turn = state
        turn.sent()
        return _MetadataConsumer(meter, model_id, kwargs, turn)
