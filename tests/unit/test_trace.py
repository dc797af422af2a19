from __future__ import annotations

import hashlib
import json
from typing import Any

from costguard.trace import (
    AgentTraceNormalizer,
    AnswerChunk,
    Failure,
    FinalAnswer,
    GuardrailIntervention,
    ModelCall,
    ModelCallStarted,
    ReturnControl,
    ToolCall,
    ToolResult,
    UnknownEvent,
)

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def part(trace: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"trace": {"agentId": "A1", "agentAliasId": "AL1", "agentVersion": "3", "sessionId": "s", "trace": trace, **extra}}


def orch(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return part({"orchestrationTrace": body}, **extra)


def model_in(trace_id: str, model: str | None = SONNET, kind: str = "ORCHESTRATION") -> dict[str, Any]:
    mii: dict[str, Any] = {"traceId": trace_id, "type": kind, "text": "secret prompt"}
    if model:
        mii["foundationModel"] = model
    return {"modelInvocationInput": mii}


def model_out(trace_id: str, i: int, o: int, ms: int = 900) -> dict[str, Any]:
    return {
        "modelInvocationOutput": {
            "traceId": trace_id,
            "rawResponse": {"content": "model output text"},
            "metadata": {"usage": {"inputTokens": i, "outputTokens": o}, "totalTimeMs": ms},
        }
    }


def test_orchestration_model_call_takes_model_from_matching_input() -> None:
    # GIVEN a normaliser and a model invocation input/output pair
    n = AgentTraceNormalizer()
    # WHEN both events are fed
    started = n.feed(orch(model_in("t-0")))
    call = n.feed(orch(model_out("t-0", 1200, 80)))
    # THEN the output is one model call with the input's model, tokens and latency
    assert started == ModelCallStarted(SONNET, "ORCHESTRATION", "t-0", None)
    assert call == ModelCall(SONNET, "ORCHESTRATION", 1200, 80, 0, 0, 900, "t-0", None)


def test_model_falls_back_to_last_model_then_lookup_then_default() -> None:
    looked_up: list[tuple[str, str | None]] = []

    def lookup(agent_id: str, version: str | None) -> str | None:
        looked_up.append((agent_id, version))
        return "amazon.nova-pro-v1:0"

    n = AgentTraceNormalizer(default_model="amazon.nova-micro-v1:0", agent_model_lookup=lookup)
    call = n.feed(orch(model_out("x", 10, 1)))
    assert isinstance(call, ModelCall) and call.model_id == "amazon.nova-pro-v1:0"
    assert looked_up == [("A1", "3")]

    n2 = AgentTraceNormalizer(default_model="amazon.nova-micro-v1:0")
    call2 = n2.feed(part({"preProcessingTrace": model_out("p", 5, 5)}))
    assert isinstance(call2, ModelCall)
    assert (call2.model_id, call2.step_type) == ("amazon.nova-micro-v1:0", "PRE_PROCESSING")

    n3 = AgentTraceNormalizer()
    n3.feed(orch(model_in("a")))
    n3.feed(orch(model_out("a", 1, 1)))
    call3 = n3.feed(orch(model_out("b", 2, 2)))  # no input for b: last model of this agent
    assert isinstance(call3, ModelCall) and call3.model_id == SONNET


def test_every_model_trace_kind_counts() -> None:
    n = AgentTraceNormalizer(default_model=SONNET)
    kinds = {
        "preProcessingTrace": "PRE_PROCESSING",
        "orchestrationTrace": "ORCHESTRATION",
        "postProcessingTrace": "POST_PROCESSING",
        "routingClassifierTrace": "ROUTING_CLASSIFIER",
    }
    for key, step_type in kinds.items():
        step = n.feed(part({key: model_out("t", 3, 4)}))
        assert isinstance(step, ModelCall)
        assert step.step_type == step_type
        assert (step.input_tokens, step.output_tokens) == (3, 4)


def test_missing_usage_is_a_model_call_flagged_usage_missing() -> None:
    n = AgentTraceNormalizer(default_model=SONNET)
    step = n.feed(orch({"modelInvocationOutput": {"traceId": "t", "rawResponse": {"content": "x"}}}))
    assert isinstance(step, ModelCall) and step.usage_missing and step.input_tokens == 0


def test_action_group_call_and_response_bytes_are_utf8_bytes() -> None:
    n = AgentTraceNormalizer()
    call = n.feed(
        orch(
            {
                "invocationInput": {
                    "traceId": "t-1",
                    "invocationType": "ACTION_GROUP",
                    "actionGroupInvocationInput": {"actionGroupName": "claims", "apiPath": "/claims/{id}", "verb": "get"},
                }
            }
        )
    )
    text = '{"name": "Zoë", "city": "Zürich", "note": "€"}'
    result = n.feed(
        orch(
            {
                "observation": {
                    "traceId": "t-1",
                    "type": "ACTION_GROUP",
                    "actionGroupInvocationOutput": {"text": text, "metadata": {"totalTimeMs": 42}},
                }
            }
        )
    )
    # The call's key: SHA-256 of the canonical JSON of the tool and its parameters.
    material = ["claims::/claims/{id}", {"parameters": None, "requestBody": None, "verb": "get"}]
    key = hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert call == ToolCall("ACTION_GROUP", "claims::/claims/{id}", "t-1", None, key)
    assert result == ToolResult("ACTION_GROUP", "claims::/claims/{id}", len(text.encode("utf-8")), 42, "t-1", None)
    assert len(text.encode("utf-8")) > len(text)


def test_knowledge_base_response_size_is_sum_of_retrieved_texts() -> None:
    n = AgentTraceNormalizer()
    n.feed(
        orch(
            {
                "invocationInput": {
                    "traceId": "k",
                    "invocationType": "KNOWLEDGE_BASE",
                    "knowledgeBaseLookupInput": {"knowledgeBaseId": "KB1", "text": "q"},
                }
            }
        )
    )
    refs = [{"content": {"text": "a" * 100}}, {"content": {"text": "é" * 10}}, {"location": {}}]
    step = n.feed(orch({"observation": {"traceId": "k", "type": "KNOWLEDGE_BASE", "knowledgeBaseLookupOutput": {"retrievedReferences": refs}}}))
    assert isinstance(step, ToolResult)
    assert (step.kind, step.name, step.response_bytes) == ("KNOWLEDGE_BASE", "KB1", 120)


def test_collaborator_and_code_interpreter_outputs() -> None:
    n = AgentTraceNormalizer()
    n.feed(orch({"invocationInput": {"traceId": "c", "invocationType": "AGENT_COLLABORATOR", "agentCollaboratorInvocationInput": {"agentCollaboratorName": "billing"}}}))
    step = n.feed(orch({"observation": {"traceId": "c", "type": "AGENT_COLLABORATOR", "agentCollaboratorInvocationOutput": {"agentCollaboratorName": "billing", "output": {"text": "x" * 77, "type": "TEXT"}}}}))
    assert isinstance(step, ToolResult) and (step.name, step.response_bytes) == ("billing", 77)
    n.feed(orch({"invocationInput": {"traceId": "ci", "invocationType": "ACTION_GROUP_CODE_INTERPRETER", "codeInterpreterInvocationInput": {"code": "1+1"}}}))
    step2 = n.feed(orch({"observation": {"traceId": "ci", "codeInterpreterInvocationOutput": {"executionOutput": "2" * 9, "executionError": "e"}}}))
    assert isinstance(step2, ToolResult) and step2.response_bytes == 10 and step2.kind == "ACTION_GROUP_CODE_INTERPRETER"


def test_multi_agent_steps_are_attributed_to_the_collaborator() -> None:
    n = AgentTraceNormalizer()
    chain = [{"agentAliasArn": "arn:aws:bedrock:us-east-1:1:agent-alias/SUP/A"}, {"agentAliasArn": "arn:aws:bedrock:us-east-1:1:agent-alias/COL/B"}]
    n.feed(orch(model_in("m"), callerChain=chain, collaboratorName="billing"))
    step = n.feed(orch(model_out("m", 1, 1), callerChain=chain, collaboratorName="billing"))
    assert isinstance(step, ModelCall) and step.agent == "billing"
    step2 = n.feed(orch(model_out("m2", 1, 1), callerChain=chain))
    assert isinstance(step2, ModelCall) and step2.agent == chain[1]["agentAliasArn"]
    step3 = n.feed(orch(model_out("m3", 1, 1), callerChain=chain[:1]))
    assert isinstance(step3, ModelCall) and step3.agent is None


def test_other_events() -> None:
    n = AgentTraceNormalizer()
    assert n.feed({"chunk": {"bytes": b"hello"}}) == AnswerChunk(5)
    assert n.feed({"returnControl": {"invocationId": "inv-1", "invocationInputs": [{}, {}]}}) == ReturnControl("inv-1", 2)
    assert n.feed(part({"guardrailTrace": {"action": "INTERVENED", "traceId": "g"}})) == GuardrailIntervention("INTERVENED", "g", None)
    assert n.feed(part({"guardrailTrace": {"action": "NONE"}})) is None
    assert n.feed(part({"failureTrace": {"failureCode": 500, "failureReason": "boom", "traceId": "f"}})) == Failure(500, "f", None)
    assert n.feed(orch({"observation": {"traceId": "z", "type": "FINISH", "finalResponse": {"text": "done"}}})) == FinalAnswer(4, "z", None)
    assert n.feed(orch({"rationale": {"text": "thinking", "traceId": "r"}})) is None
    assert n.feed(part({"customOrchestrationTrace": {"event": {"text": "x"}}})) is None
    assert n.feed({"files": {"files": []}}) is None
    assert n.unknown_events == 0


def test_unknown_and_malformed_events_are_counted_never_raised() -> None:
    n = AgentTraceNormalizer()
    bad: list[Any] = [
        {},
        {"somethingNew": {}},
        {"trace": None},
        {"trace": {"trace": None}},
        {"trace": {"trace": {"brandNewTrace": {}}}},
        {"trace": {"trace": {"orchestrationTrace": {"somethingElse": {}}}}},
        {"trace": {"trace": {"orchestrationTrace": None}}},
        {"trace": {"trace": {"orchestrationTrace": {"modelInvocationOutput": "not a dict"}}}},
        {"returnControl": "nope"},
    ]
    steps = [n.feed(e) for e in bad]
    assert all(isinstance(s, UnknownEvent) for s in steps), steps
    assert n.unknown_events == len(bad)

