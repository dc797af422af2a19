"""InvokeAgent: every model call, tool call and tool result from the ``completion`` trace events.

Tracing is turned on when the caller did not ask for it (the usage lives in the trace) and the
trace events are then hidden from that caller. A ``returnControl`` continuation
(``sessionState.invocationId`` with ``returnControlInvocationResults``) continues the request it
paused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from costguard.coerce import text_id
from costguard.meter.operations import register
from costguard.meter.operations.base import Operation
from costguard.meter.request import RequestMeter
from costguard.meter.streams import MeteredStream
from costguard.trace import AgentTraceNormalizer

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient


class AgentTraceConsumer:
    """Feeds agent stream events through the trace normaliser, whose sink is the request meter."""

    __slots__ = ("meter", "normalizer", "hide_traces")

    def __init__(self, meter: RequestMeter, normalizer: AgentTraceNormalizer, hide_traces: bool) -> None:
        self.meter = meter
        self.normalizer = normalizer
        self.hide_traces = hide_traces

    def feed(self, event: dict[str, Any]) -> bool:
        self.normalizer.read(event)
        return not (self.hide_traces and "trace" in event)

    def end(self, completed: bool) -> None:
        self.meter.unknown_events += self.normalizer.unknown_events
        self.normalizer.unknown_events = 0


@register
class InvokeAgent(Operation):
    service = "bedrock-agent-runtime"
    method = "invoke_agent"
    api_name = "InvokeAgent"
    state_key: ClassVar[str] = "sessionState"

    def inline_model(self, kwargs: dict[str, Any]) -> str | None:
        return None

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        guard = proxy.guard
        session_id = text_id(kwargs.get("sessionId")) or proxy.binding.session_id or ""
        continuation, previous = guard.continued_request(session_id, kwargs.get(self.state_key))
        inline_model = self.inline_model(kwargs)
        meter = proxy.start_request(
            self.api_name,
            session_id=session_id,
            agent_id=text_id(kwargs.get("agentId") or kwargs.get("agentName")),
            agent_alias_id=text_id(kwargs.get("agentAliasId")),
            model_id=inline_model,
            continuation_of=continuation,
            previous=previous,
        )
        # The meter needs the trace; a caller that did not ask for it does not see it.
        hide_traces = not kwargs.get("enableTrace")
        if hide_traces:
            kwargs = {**kwargs, "enableTrace": True}
        return meter, kwargs, (inline_model, hide_traces)

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        inline_model, hide_traces = state
        normalizer = AgentTraceNormalizer(
            inline_model or meter.policy.default_model, meter.guard.agent_models, hash_tool_calls=meter.counts_repeats,
            sink=meter,
        )
        response["completion"] = MeteredStream(
            response["completion"], meter, AgentTraceConsumer(meter, normalizer, hide_traces)
        )
        return response
