"""ApplyGuardrail: priced from the response's ``usage`` policy units (botocore bedrock-runtime
2023-09-30 ``GuardrailUsage``) with the guardrail price table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costguard.meter.operations import register
from costguard.meter.operations.base import Operation
from costguard.meter.operations.converse import guardrail_usage
from costguard.meter.request import RequestMeter

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient


@register
class ApplyGuardrail(Operation):
    service = "bedrock-runtime"
    method = "apply_guardrail"
    api_name = "ApplyGuardrail"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        return proxy.start_request(self.api_name), kwargs, None

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        usage = response.get("usage")
        meter.run_steps([guardrail_usage(usage)] if isinstance(usage, Mapping) else [])
        return response
