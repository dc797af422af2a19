"""InvokeFlow: model usage from the flow's trace events.

Shapes from botocore's bedrock-agent-runtime service model (2023-07-26): ``responseStream`` events
``flowOutputEvent``, ``flowCompletionEvent``, ``flowMultiTurnInputRequestEvent`` and
``flowTraceEvent{trace: FlowTrace}``. ``FlowTrace.nodeDependencyTrace.traceElements.agentTraces``
carries the ``TracePart`` events of agent nodes (metered like InvokeAgent's);
``FlowTrace.nodeActionTrace`` names the service and operation a node called, and when its
``operationResponse`` document carries a Converse-shaped ``usage`` that call is metered too.
Tracing is turned on when the caller did not ask for it, and the trace events hidden from it.
Flow node transitions are billed separately by AWS and are not priced here (see the README).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costguard.coerce import text_id
from costguard.meter.operations import register
from costguard.meter.operations.base import Operation
from costguard.meter.operations.converse import converse_steps
from costguard.meter.operations.invoke_agent import AgentTraceConsumer
from costguard.meter.request import RequestMeter
from costguard.meter.streams import MeteredStream
from costguard.trace import AgentTraceNormalizer

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient


class _FlowTraceConsumer(AgentTraceConsumer):
    """Agent traces arrive wrapped in flow trace events; node actions may carry Converse usage."""

    __slots__ = ()

    def feed(self, event: dict[str, Any]) -> bool:
        body = event.get("flowTraceEvent")
        if body is None:
            return True
        trace = body.get("trace") if isinstance(body, Mapping) else None
        if isinstance(trace, Mapping):
            dependency = trace.get("nodeDependencyTrace")
            if isinstance(dependency, Mapping):
                elements = dependency.get("traceElements")
                parts = elements.get("agentTraces") if isinstance(elements, Mapping) else None
                for part in parts if isinstance(parts, list) else ():
                    self.normalizer.read({"trace": part})
            action = trace.get("nodeActionTrace")
            if isinstance(action, Mapping):
                self._node_action(action)
        return not self.hide_traces

    def _node_action(self, action: Mapping[str, Any]) -> None:
        response = action.get("operationResponse")
        if not isinstance(response, Mapping) or not isinstance(response.get("usage"), Mapping):
            return
        request = action.get("operationRequest")
        request = request if isinstance(request, Mapping) else {}
        model_id = text_id(request.get("modelId")) or self.meter.policy.default_model or "unknown"
        for step in converse_steps(model_id, request, response):
            self.meter.on_step(step)


@register
class InvokeFlow(Operation):
    service = "bedrock-agent-runtime"
    method = "invoke_flow"
    api_name = "InvokeFlow"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        meter = proxy.start_request(
            self.api_name,
            session_id=text_id(kwargs.get("executionId")) or proxy.binding.session_id or "",
            agent_id=text_id(kwargs.get("flowIdentifier")),
            agent_alias_id=text_id(kwargs.get("flowAliasIdentifier")),
        )
        hide_traces = not kwargs.get("enableTrace")
        if hide_traces:
            kwargs = {**kwargs, "enableTrace": True}
        return meter, kwargs, hide_traces

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        normalizer = AgentTraceNormalizer(
            meter.policy.default_model, meter.guard.agent_models, hash_tool_calls=meter.counts_repeats, sink=meter
        )
        response["responseStream"] = MeteredStream(
            response["responseStream"], meter, _FlowTraceConsumer(meter, normalizer, state)
        )
        return response
