"""Builders of InvokeAgent completion events, shaped as boto3 yields them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def part(trace: dict[str, Any], *, session: str = "s-1", caller_chain: list[str] | None = None,
         collaborator: str | None = None) -> dict[str, Any]:
    tp: dict[str, Any] = {"agentId": "AGENT1", "agentAliasId": "ALIAS1", "agentVersion": "1", "sessionId": session, "trace": trace}
    if caller_chain:
        tp["callerChain"] = [{"agentAliasArn": arn} for arn in caller_chain]
    if collaborator:
        tp["collaboratorName"] = collaborator
    return {"trace": tp}


@dataclass
class Loop:
    """A request's events and the totals a correct meter must find in them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_bytes: list[int] = field(default_factory=list)

    def model_call(self, model: str | None, i: int, o: int, trace_id: str, kind: str = "orchestrationTrace", **kw: Any) -> Loop:
        mii: dict[str, Any] = {"traceId": trace_id, "type": "ORCHESTRATION"}
        if model:
            mii["foundationModel"] = model
        self.events.append(part({kind: {"modelInvocationInput": mii}}, **kw))
        self.events.append(part({kind: {"modelInvocationOutput": {"traceId": trace_id, "rawResponse": {"content": "..."},
                                 "metadata": {"usage": {"inputTokens": i, "outputTokens": o}, "totalTimeMs": 800}}}}, **kw))
        self.model_calls += 1
        self.input_tokens += i
        self.output_tokens += o
        return self

    def action_group(self, text: str, trace_id: str, group: str = "claims", function: str = "get_claim",
                     parameters: list[dict[str, Any]] | None = None, **kw: Any) -> Loop:
        agi: dict[str, Any] = {"actionGroupName": group, "function": function}
        if parameters is not None:
            agi["parameters"] = parameters
        self.events.append(part({"orchestrationTrace": {"invocationInput": {"traceId": trace_id, "invocationType": "ACTION_GROUP",
                                 "actionGroupInvocationInput": agi}}}, **kw))
        self.events.append(part({"orchestrationTrace": {"observation": {"traceId": trace_id, "type": "ACTION_GROUP",
                                 "actionGroupInvocationOutput": {"text": text, "metadata": {"totalTimeMs": 120}}}}}, **kw))
        self.tool_calls += 1
        self.tool_bytes.append(len(text.encode("utf-8")))
        return self

    def answer(self, text: str = "done") -> Loop:
        self.events.append(part({"orchestrationTrace": {"observation": {"traceId": "final", "type": "FINISH", "finalResponse": {"text": text}}}}))
        self.events.append({"chunk": {"bytes": text.encode()}})
        return self


def agent_loop(steps: int, *, tool_bytes: int = 400, model: str = SONNET, base_input: int = 1000, output: int = 100) -> Loop:
    """pre-processing, ``steps`` x (model call + action group), a final model call, the answer."""
    loop = Loop().model_call(model, 800, 40, "pre-0", kind="preProcessingTrace")
    context = base_input
    for step in range(steps):
        loop.model_call(model, context, output, f"t-{step}")
        loop.action_group('{"k": "' + "v" * max(0, tool_bytes - 9) + '"}', f"t-{step}")
        context += output + tool_bytes // 4
    loop.model_call(model, context, output, f"t-{steps}")
    return loop.answer()
