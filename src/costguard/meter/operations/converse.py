"""Converse: usage from the response's ``usage`` (with ``cacheDetails`` TTLs), the tier and
latency mode it ran on, the model a prompt router picked, and guardrail units from its trace.

Shapes from botocore's bedrock-runtime service model (2023-09-30): ``TokenUsage`` (inputTokens,
outputTokens, cacheReadInputTokens, cacheWriteInputTokens, cacheDetails[{ttl: 5m|1h,
inputTokens}]), ``ServiceTier{type: priority|default|flex|reserved}``,
``PerformanceConfiguration{latency: standard|optimized}``, ``ConverseTrace{guardrail,
promptRouter{invokedModelId}}``, ``GuardrailAssessment.invocationMetrics.usage``. Tool calls
and tool results: :mod:`costguard.meter.tools`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from costguard.coerce import optional_ms, text_id, token_count, usage_counts
from costguard.meter.operations import register
from costguard.meter.operations.base import SingleResponseOperation, estimate_tokens
from costguard.meter.request import GuardrailUsage, RequestMeter
from costguard.meter.tools import ToolTurn
from costguard.trace import ModelCall

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient

_USAGE_FIELDS = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
_SUSPECT = frozenset({"usage_suspect"})
_NO_FLAGS: frozenset[str] = frozenset()
_UNKNOWN = frozenset({"usage_unknown", "estimated"})
#: ``serviceTier.type`` -> the tier prices are keyed by. ``reserved`` capacity is prepaid; it is
#: priced at the standard rate and flagged, never as free.
_TIERS = {"default": "standard", "priority": "priority", "flex": "flex"}


def service_tier(value: Any) -> tuple[str, frozenset[str]]:
    tier = value.get("type") if isinstance(value, dict) else value
    if tier is None:
        return "standard", _NO_FLAGS
    known = _TIERS.get(tier) if isinstance(tier, str) else None
    if known is None:
        return "standard", frozenset({"tier_assumed"})
    return known, _NO_FLAGS


def latency_optimized(value: Any) -> bool:
    latency = value.get("latency") if isinstance(value, dict) else value
    return latency == "optimized"


def converse_steps(model_id: str, request: Mapping[str, Any], body: Mapping[str, Any]) -> Iterator[object]:
    """The steps of one Converse response, or of a ConverseStream ``metadata`` event body.

    Tier and latency mode come from the response when it says (it reports what ran), else from
    the request.
    """
    tier, tier_flags = service_tier(body.get("serviceTier") or request.get("serviceTier"))
    optimized = latency_optimized(body.get("performanceConfig") or request.get("performanceConfig"))
    trace = body.get("trace")
    routed = None
    if isinstance(trace, dict):
        router = trace.get("promptRouter")
        if isinstance(router, dict):
            routed = text_id(router.get("invokedModelId"))
    metrics = body.get("metrics")
    latency = optional_ms(metrics.get("latencyMs")) if isinstance(metrics, dict) else None
    usage = body.get("usage")
    model = routed or model_id
    if not isinstance(usage, dict):
        # No usage reported: priced at an estimate of the request, never at $0.
        yield ModelCall(model, "CONVERSE", estimate_request_tokens(request), latency_ms=latency,
                        usage_missing=True, tier=tier, latency_optimized=optimized,
                        flags=tier_flags | _UNKNOWN, routed=routed is not None)
    else:
        i, o, cr, cw, suspect = usage_counts(usage, _USAGE_FIELDS)
        cw_1h, suspect_1h = cache_write_1h(usage.get("cacheDetails"))
        flags = tier_flags | (_SUSPECT if suspect or suspect_1h else _NO_FLAGS)
        yield ModelCall(model, "CONVERSE", i, o, cr, cw, latency, cache_write_1h_tokens=min(cw_1h, cw),
                        tier=tier, latency_optimized=optimized, flags=flags, routed=routed is not None)
    if isinstance(trace, dict):
        yield from guardrail_steps(trace.get("guardrail"))


def estimate_request_tokens(request: Mapping[str, Any]) -> int:
    return estimate_tokens(request.get("system"), request.get("messages"), request.get("toolConfig"))


def cache_write_1h(details: Any) -> tuple[int, bool]:
    """Tokens written to the cache with a 1-hour TTL (priced above the 5-minute rate)."""
    if not isinstance(details, list):
        return 0, details is not None
    total, suspect = 0, False
    for detail in details:
        if not isinstance(detail, dict):
            suspect = True
            continue
        if detail.get("ttl") == "1h":
            count, bad = token_count(detail.get("inputTokens"))
            total += count
            suspect = suspect or bad
    return total, suspect


def guardrail_steps(assessment: Any) -> Iterator[GuardrailUsage]:
    """Guardrail units of a Converse guardrail trace: one step per assessment that reports usage."""
    if not isinstance(assessment, dict):
        return
    found: list[Any] = []
    inputs = assessment.get("inputAssessment")
    if isinstance(inputs, dict):
        found.extend(inputs.values())
    outputs = assessment.get("outputAssessments")
    if isinstance(outputs, dict):
        for items in outputs.values():
            if isinstance(items, list):
                found.extend(items)
    for item in found:
        metrics = item.get("invocationMetrics") if isinstance(item, dict) else None
        usage = metrics.get("usage") if isinstance(metrics, dict) else None
        if isinstance(usage, dict):
            yield guardrail_usage(usage)


def guardrail_usage(usage: Mapping[str, Any]) -> GuardrailUsage:
    units: dict[str, int] = {}
    suspect = False
    for name, value in usage.items():
        count, bad = token_count(value)
        suspect = suspect or bad
        if count:
            units[str(name)] = count
    return GuardrailUsage(units, _SUSPECT if suspect else _NO_FLAGS)


def prepare_tool_turn(
    prepared: tuple[RequestMeter, dict[str, Any], str], kwargs: Mapping[str, Any]
) -> tuple[RequestMeter, dict[str, Any], tuple[str, ToolTurn]]:
    """Converse and ConverseStream: size the tool results the request carries, before it is sent."""
    meter, send_kwargs, model_id = prepared
    turn = ToolTurn(meter, meter.guard.tool_uses)
    turn.check_request(kwargs)
    return meter, send_kwargs, (model_id, turn)


@register
class Converse(SingleResponseOperation):
    method = "converse"
    api_name = "Converse"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        return prepare_tool_turn(super().prepare(proxy, kwargs), kwargs)

    def steps(self, state: tuple[str, ToolTurn], kwargs: dict[str, Any], response: Any) -> Iterator[object]:
        model_id, turn = state
        turn.sent()
        yield from converse_steps(model_id, kwargs, response)
        yield from turn.response_calls(response)
