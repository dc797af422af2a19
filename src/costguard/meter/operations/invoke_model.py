"""InvokeModel: token counts in the response's HTTP headers; tier and latency mode too.

Headers from the Bedrock runtime API reference (InvokeModel): ``X-Amzn-Bedrock-Input-Token-Count``,
``-Output-Token-Count``, ``-Cache-Read-Input-Token-Count``, ``-Cache-Write-Input-Token-Count``,
``-Invocation-Latency``; ``X-Amzn-Bedrock-Service-Tier`` and
``X-Amzn-Bedrock-PerformanceConfig-Latency`` are modelled in botocore (bedrock-runtime
2023-09-30) and arrive as ``serviceTier`` / ``performanceConfigLatency``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from costguard.coerce import optional_ms, token_count
from costguard.meter.operations import register
from costguard.meter.operations.base import SingleResponseOperation, estimate_tokens
from costguard.meter.operations.converse import latency_optimized, service_tier
from costguard.trace import ModelCall

_HEADERS = (
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
)


def invoke_model_call(model_id: str, request: dict[str, Any], response: Any) -> ModelCall:
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    counts: list[int] = []
    suspect = False
    for header in _HEADERS:
        count, bad = token_count(headers.get(header))
        counts.append(count)
        # Headers are text: a numeric string is the normal form here, not a suspect one.
        raw = headers.get(header)
        suspect = suspect or (bad and not (isinstance(raw, str) and raw.strip().isdigit()))
    try:
        latency = optional_ms(int(headers.get("x-amzn-bedrock-invocation-latency")))
    except (TypeError, ValueError):
        latency = None
    tier, flags = service_tier(response.get("serviceTier") or request.get("serviceTier"))
    optimized = latency_optimized(response.get("performanceConfigLatency") or request.get("performanceConfigLatency"))
    if suspect:
        flags = flags | {"usage_suspect"}
    if headers.get(_HEADERS[0]) is None and headers.get(_HEADERS[1]) is None:
        # No usage reported: priced at an estimate of the request, never at $0.
        return ModelCall(model_id, "INVOKE_MODEL", estimate_tokens(request.get("body")), latency_ms=latency,
                         usage_missing=True, tier=tier, latency_optimized=optimized,
                         flags=flags | {"usage_unknown", "estimated"})
    return ModelCall(model_id, "INVOKE_MODEL", *counts, latency_ms=latency, tier=tier,
                     latency_optimized=optimized, flags=flags)


@register
class InvokeModel(SingleResponseOperation):
    method = "invoke_model"
    api_name = "InvokeModel"

    def steps(self, model_id: str, kwargs: dict[str, Any], response: Any) -> Iterator[object]:
        yield invoke_model_call(model_id, kwargs, response)
