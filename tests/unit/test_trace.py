from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

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
    TraceSink,
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


class _Recorder(TraceSink):
    """A sink that writes down every call it gets, by method name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name in ("calls", "__dict__", "__class__") or name.startswith("_"):
            return object.__getattribute__(self, name)
        return lambda *args: self.calls.append((name, args))


def _mixed_stream() -> list[dict[str, Any]]:
    ag_in = {"invocationInput": {"traceId": "t-0", "invocationType": "ACTION_GROUP",
                                 "actionGroupInvocationInput": {"actionGroupName": "claims", "function": "get", "parameters": [{"name": "id", "value": "7"}]}}}
    ag_out = {"observation": {"traceId": "t-0", "actionGroupInvocationOutput": {"text": "é" * 10, "metadata": {"totalTimeMs": 12}}}}
    return [
        part({"preProcessingTrace": model_in("pre-0", kind="PRE_PROCESSING")}),
        part({"preProcessingTrace": model_out("pre-0", 300, 20)}),
        orch(model_in("t-0")), orch(model_out("t-0", 1000, 50)), orch(ag_in), orch(ag_out),
        orch({"rationale": {"text": "thinking"}}),
        orch(model_in("t-1")),
        orch({"modelInvocationOutput": {"traceId": "t-1", "metadata": {"usage": {"inputTokens": -5, "outputTokens": "9", "cacheReadInputTokens": 40}}}}),
        orch(model_in("t-2", model=None)), orch({"modelInvocationOutput": {"traceId": "t-2"}}),
        part({"guardrailTrace": {"action": "INTERVENED", "traceId": "g"}}),
        part({"failureTrace": {"failureCode": 500, "traceId": "f"}}),
        orch(model_in("c-0"), collaboratorName="helper"), orch(model_out("c-0", 10, 1), collaboratorName="helper"),
        orch({"observation": {"traceId": "t-3", "finalResponse": {"text": "done"}}}),
        {"chunk": {"bytes": b"done"}},
        {"returnControl": {"invocationId": "inv-1", "invocationInputs": [{}, {}]}},
        {"trace": {"trace": {"brandNewTrace": {}}}},
        {"files": {}},
    ]


def test_a_sink_is_told_every_step_feed_returns() -> None:
    # GIVEN the same stream read through a sink and fed for steps
    events = _mixed_stream()
    stepper, recorder = AgentTraceNormalizer("default-model"), _Recorder()
    reader = AgentTraceNormalizer("default-model", sink=recorder)
    steps = [s for s in (stepper.feed(e) for e in events) if s is not None]
    for e in events:
        reader.read(e)
    # THEN the sink got one call per step, in order, with the step's kind
    kinds = {
        "model_started": ModelCallStarted, "model_call": ModelCall, "tool_call": ToolCall, "tool_result": ToolResult,
        "guardrail_intervention": GuardrailIntervention, "failure": Failure, "final_answer": FinalAnswer,
        "answer_chunk": AnswerChunk, "return_control": ReturnControl, "unknown": UnknownEvent,
    }
    assert [kinds[name] for name, _ in recorder.calls] == [type(s) for s in steps]
    # AND the model calls carry what the steps carry (suspect usage coerced and flagged the same way)
    calls = [args for name, args in recorder.calls if name == "model_call"]
    model_steps = [s for s in steps if isinstance(s, ModelCall)]
    assert [(a[0], a[1], a[2], a[3], a[4], a[6], a[8], a[9], a[10]) for a in calls] == [
        (s.model_id, s.step_type, s.input_tokens, s.output_tokens, s.cache_read_tokens, s.latency_ms, s.agent, s.flags, s.usage_missing)
        for s in model_steps
    ]
    assert model_steps[2].flags == frozenset({"usage_suspect"}) and model_steps[3].usage_missing
    assert model_steps[4].agent == "helper"
    assert reader.unknown_events == stepper.unknown_events == 1
    # AND the tool call and its result: the name joined with the function, the size in UTF-8 bytes
    tool_call = next(args for name, args in recorder.calls if name == "tool_call")
    tool_result = next(args for name, args in recorder.calls if name == "tool_result")
    assert tool_call[:2] == ("ACTION_GROUP", "claims::get") and tool_call[4] is not None  # hashed by default
    assert tool_result[:4] == ("ACTION_GROUP", "claims::get", 20, 12)


def test_an_error_raised_by_the_sink_is_the_sinks_not_a_malformed_event() -> None:
    # GIVEN a sink with a bug
    class Broken(TraceSink):
        def model_call(self, *args: Any) -> None:
            raise TypeError("bug in the meter")

    n = AgentTraceNormalizer(sink=Broken())
    n.read(orch(model_in("t-0")))
    # THEN the bug reaches the caller of read (the metered stream contains and counts it)...
    with pytest.raises(TypeError, match="bug in the meter"):
        n.read(orch(model_out("t-0", 1, 1)))
    assert n.unknown_events == 0
    # ...while a malformed event after it is still counted, never raised
    n.read({"trace": {"trace": {"orchestrationTrace": {"modelInvocationOutput": "not a dict"}}}})
    assert n.unknown_events == 1


def test_feed_needs_no_sink_and_read_needs_one() -> None:
    n = AgentTraceNormalizer(sink=TraceSink())
    with pytest.raises(TypeError):  # feed() with a sink must say to call read()
        n.feed(orch(model_in("t-0")))
