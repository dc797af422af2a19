"""InvokeModelWithResponseStream: the last chunk carries ``amazon-bedrock-invocationMetrics``.

Each event is ``{"chunk": {"bytes": <model JSON>}}`` (botocore ``ResponseStream.chunk``
``PayloadPart``); Bedrock adds ``amazon-bedrock-invocationMetrics`` (``inputTokenCount``,
``outputTokenCount``, ``invocationLatency``, ``firstByteLatency``, and
``cacheReadInputTokenCount``/``cacheWriteInputTokenCount`` for models with prompt caching) to the
final chunk's JSON (Bedrock user guide, "Invoke a model with streaming"). LangChain's ChatBedrock
streams through this method. Only a chunk that contains the marker is parsed.
"""

from __future__ import annotations

import json
from typing import Any

from costguard.coerce import optional_ms, usage_counts
from costguard.meter.operations import register
from costguard.meter.operations.base import StreamingOperation, estimate_tokens
from costguard.meter.operations.converse import latency_optimized, service_tier
from costguard.meter.request import RequestMeter
from costguard.trace import ModelCall

_MARKER = b"amazon-bedrock-invocationMetrics"
_FIELDS = ("inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount")


class _MetricsConsumer:
    __slots__ = ("meter", "model_id", "request", "tier", "optimized", "flags", "seen", "output_bytes")

    def __init__(self, meter: RequestMeter, model_id: str, request: dict[str, Any], response: Any) -> None:
        self.meter = meter
        self.model_id = model_id
        self.request = request
        self.tier, self.flags = service_tier(response.get("serviceTier") or request.get("serviceTier"))
        self.optimized = latency_optimized(
            response.get("performanceConfigLatency") or request.get("performanceConfigLatency")
        )
        self.seen = False
        self.output_bytes = 0

    def feed(self, event: dict[str, Any]) -> bool:
        chunk = event.get("chunk")
        payload = chunk.get("bytes") if isinstance(chunk, dict) else None
        if not isinstance(payload, (bytes, bytearray)):
            return True
        self.output_bytes += len(payload)
        self.meter.mark_output()
        if _MARKER in payload:
            metrics = json.loads(payload).get("amazon-bedrock-invocationMetrics")
            if isinstance(metrics, dict):
                self.seen = True
                i, o, cr, cw, suspect = usage_counts(metrics, _FIELDS)
                flags = self.flags | {"usage_suspect"} if suspect else self.flags
                self.meter.on_step(
                    ModelCall(self.model_id, "INVOKE_MODEL", i, o, cr, cw,
                              optional_ms(metrics.get("invocationLatency")), tier=self.tier,
                              latency_optimized=self.optimized, flags=flags)
                )
        return True

    def end(self, completed: bool) -> None:
        if not self.seen:
            # Broken off before the final chunk: the model ran; price what was asked and seen.
            self.meter.on_step(
                ModelCall(self.model_id, "INVOKE_MODEL", estimate_tokens(self.request.get("body")),
                          -(-self.output_bytes // 4), usage_missing=True, tier=self.tier,
                          latency_optimized=self.optimized,
                          flags=self.flags | {"usage_unknown", "estimated"})
            )


@register
class InvokeModelWithResponseStream(StreamingOperation):
    method = "invoke_model_with_response_stream"
    api_name = "InvokeModelWithResponseStream"
    stream_key = "body"

    def consumer(self, meter: RequestMeter, model_id: str, kwargs: dict[str, Any], response: Any) -> _MetricsConsumer:
        return _MetricsConsumer(meter, model_id, kwargs, response)
