"""Bedrock responses -> typed steps.

:class:`AgentTraceNormalizer` turns the events boto3 yields for InvokeAgent and InvokeInlineAgent
(``chunk``, ``trace``, ``returnControl``, ``files``) into at most one step per event. It is
stateful per request: a ``modelInvocationOutput`` takes its model from the preceding
``modelInvocationInput`` of the same ``traceId`` and an observation takes its tool name from the
matching ``invocationInput``. Unknown or malformed events become :class:`UnknownEvent` steps and
are counted; they never raise.

The runtime operations (Converse, InvokeModel, ...) are normalised by their adapters in
:mod:`costguard.meter.operations`; they produce the same step types.

Steps keep sizes and ids only: no prompt, output, rationale or tool text leaves this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from costguard.coerce import canonical_hash, optional_ms, text_id, usage_counts, utf8_len

#: invocationType values that are tool calls (DESIGN.md section 5).
TOOL_KINDS = frozenset(
    {"ACTION_GROUP", "KNOWLEDGE_BASE", "ACTION_GROUP_CODE_INTERPRETER", "AGENT_COLLABORATOR"}
)

#: The Trace union members whose model invocations count as model calls.
_MODEL_TRACE_KINDS = {
    "orchestrationTrace": "ORCHESTRATION",
    "preProcessingTrace": "PRE_PROCESSING",
    "postProcessingTrace": "POST_PROCESSING",
    "routingClassifierTrace": "ROUTING_CLASSIFIER",
}


@dataclass(slots=True)
class ModelCallStarted:
    """A ``modelInvocationInput``: the model is known before its output (allow-list, loop cap)."""

    model_id: str | None
    step_type: str
    trace_id: str | None
    agent: str | None


@dataclass(slots=True)
class ModelCall:
    model_id: str | None
    step_type: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_ms: int | None = None
    trace_id: str | None = None
    agent: str | None = None
    usage_missing: bool = False
    #: The part of ``cache_write_tokens`` written with a 1-hour TTL (priced at its own rate).
    cache_write_1h_tokens: int = 0
    tier: str = "standard"
    latency_optimized: bool = False
    #: Price flags the normaliser already knows (``usage_suspect``, ``estimated``...).
    flags: frozenset[str] = frozenset()
    #: True when the model was picked by AWS (a prompt router), not by the caller: the
    #: allow-list is checked on it after the fact.
    routed: bool = False


@dataclass(slots=True)
class ToolCall:
    """An ``invocationInput`` of a tool kind: counted when the agent decides to call it."""

    kind: str
    name: str | None
    trace_id: str | None
    agent: str | None
    #: :func:`tool_call_hash` of the tool and its parameters (never the parameters themselves):
    #: equal hashes are repeats of one call (``max_repeated_tool_calls``).
    call_hash: str | None = None


def tool_call_hash(name: str | None, parameters: Any) -> str:
    """The key of a call for loop detection: the tool and the canonical JSON of its parameters."""
    return canonical_hash(name, parameters)


@dataclass(slots=True)
class ToolResult:
    """The observation that answers a tool call, with the UTF-8 size of what the agent re-reads."""

    kind: str
    name: str | None
    response_bytes: int
    latency_ms: int | None
    trace_id: str | None
    agent: str | None
    #: The call this answers was already counted (a Converse ``toolUse`` seen in an earlier response).
    call_counted: bool = False


@dataclass(slots=True)
class GuardrailIntervention:
    action: str
    trace_id: str | None
    agent: str | None


@dataclass(slots=True)
class Failure:
    code: int | None
    trace_id: str | None
    agent: str | None


@dataclass(slots=True)
class FinalAnswer:
    response_bytes: int
    trace_id: str | None
    agent: str | None


@dataclass(slots=True)
class AnswerChunk:
    response_bytes: int


@dataclass(slots=True)
class ReturnControl:
    invocation_id: str | None
    inputs: int


@dataclass(slots=True)
class UnknownEvent:
    what: str


Step = (
    ModelCallStarted
    | ModelCall
    | ToolCall
    | ToolResult
    | GuardrailIntervention
    | Failure
    | FinalAnswer
    | AnswerChunk
    | ReturnControl
    | UnknownEvent
)

class TraceSink:
    """What a normaliser reports as it reads a stream, one call per step (every method a no-op here).

    The meter is a sink itself, so an agent stream is metered without building a step object per
    event; :class:`StepBuilder` turns the calls back into :data:`Step` objects.
    """

    __slots__ = ()

    def model_started(self, model_id: str | None, step_type: str, trace_id: str | None, agent: str | None) -> None:
        pass

    def model_call(
        self,
        model_id: str | None,
        step_type: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        latency_ms: int | None,
        trace_id: str | None,
        agent: str | None,
        flags: frozenset[str],
        usage_missing: bool,
    ) -> None:
        pass

    def tool_call(self, kind: str, name: str | None, trace_id: str | None, agent: str | None, call_hash: str | None) -> None:
        pass

    def tool_result(
        self, kind: str, name: str | None, response_bytes: int, latency_ms: int | None, trace_id: str | None,
        agent: str | None,
    ) -> None:
        pass

    def guardrail_intervention(self, action: str, trace_id: str | None, agent: str | None) -> None:
        pass

    def failure(self, code: int | None, trace_id: str | None, agent: str | None) -> None:
        pass

    def final_answer(self, response_bytes: int, trace_id: str | None, agent: str | None) -> None:
        pass

    def answer_chunk(self, response_bytes: int) -> None:
        pass

    def return_control(self, invocation_id: str | None, inputs: int) -> None:
        pass

    def unknown(self, what: str) -> None:
        pass


class StepBuilder(TraceSink):
    """A sink that keeps the step it was told of last, as a :data:`Step` object."""

    __slots__ = ("step",)

    def __init__(self) -> None:
        self.step: Step | None = None

    def model_started(self, model_id: str | None, step_type: str, trace_id: str | None, agent: str | None) -> None:
        self.step = ModelCallStarted(model_id, step_type, trace_id, agent)

    def model_call(
        self,
        model_id: str | None,
        step_type: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        latency_ms: int | None,
        trace_id: str | None,
        agent: str | None,
        flags: frozenset[str],
        usage_missing: bool,
    ) -> None:
        self.step = ModelCall(
            model_id, step_type, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, latency_ms,
            trace_id, agent, usage_missing, flags=flags,
        )

    def tool_call(self, kind: str, name: str | None, trace_id: str | None, agent: str | None, call_hash: str | None) -> None:
        self.step = ToolCall(kind, name, trace_id, agent, call_hash)

    def tool_result(
        self, kind: str, name: str | None, response_bytes: int, latency_ms: int | None, trace_id: str | None,
        agent: str | None,
    ) -> None:
        self.step = ToolResult(kind, name, response_bytes, latency_ms, trace_id, agent)

    def guardrail_intervention(self, action: str, trace_id: str | None, agent: str | None) -> None:
        self.step = GuardrailIntervention(action, trace_id, agent)

    def failure(self, code: int | None, trace_id: str | None, agent: str | None) -> None:
        self.step = Failure(code, trace_id, agent)

    def final_answer(self, response_bytes: int, trace_id: str | None, agent: str | None) -> None:
        self.step = FinalAnswer(response_bytes, trace_id, agent)

    def answer_chunk(self, response_bytes: int) -> None:
        self.step = AnswerChunk(response_bytes)

    def return_control(self, invocation_id: str | None, inputs: int) -> None:
        self.step = ReturnControl(invocation_id, inputs)

    def unknown(self, what: str) -> None:
        self.step = UnknownEvent(what)


_AGENT_USAGE_FIELDS = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
_SUSPECT = frozenset({"usage_suspect"})
_NO_FLAGS: frozenset[str] = frozenset()

#: Looks up an agent's configured model when its traces name none: (agent_id, version) -> model.
AgentModelLookup = Callable[[str, str | None], str | None]


def _opt_int(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


class AgentTraceNormalizer:
    """Stateful per request: feed it every event of one InvokeAgent stream, in order.

    :meth:`read` tells ``sink`` of each step; :meth:`feed` (no sink given) returns it as a
    :data:`Step` object.
    """

    __slots__ = (
        "default_model",
        "agent_model_lookup",
        "unknown_events",
        "_model_by_trace",
        "_last_model_by_agent",
        "_tools_by_trace",
        "hash_tool_calls",
        "sink",
        "_builder",
        "_in_sink",
    )

    def __init__(
        self,
        default_model: str | None = None,
        agent_model_lookup: AgentModelLookup | None = None,
        *,
        hash_tool_calls: bool = True,
        sink: TraceSink | None = None,
    ) -> None:
        #: Only repeat caps need a call's hash: without them hashing is skipped (it is the
        #: costliest thing done per tool call).
        self.hash_tool_calls = hash_tool_calls
        self.default_model = default_model
        self.agent_model_lookup = agent_model_lookup
        self.unknown_events = 0
        self._model_by_trace: dict[str | None, str | None] = {}
        self._last_model_by_agent: dict[str | None, str] = {}
        self._tools_by_trace: dict[str | None, list[tuple[str, str | None]]] = {}
        self._builder = StepBuilder() if sink is None else None
        self.sink: TraceSink = sink if sink is not None else self._builder  # type: ignore[assignment]
        #: Set while the sink runs: an error raised there is the sink's, not a malformed event.
        self._in_sink = False

    def feed(self, event: Mapping[str, Any]) -> Step | None:
        """The step this event is, or None for events that carry nothing to meter."""
        builder = self._builder
        if builder is None:
            raise TypeError("feed() returns steps only without a sink: call read()")
        builder.step = None
        self.read(event)
        return builder.step

    def read(self, event: Mapping[str, Any]) -> None:
        """Tell the sink what this event is (nothing for events that carry nothing to meter).

        The model invocations, which are most of an agent stream, are read inline here: this
        runs for every event the caller reads, between botocore's parsing of one and the next.
        """
        self._in_sink = False
        try:
            if "trace" in event:
                part = event["trace"]
                trace = part.get("trace")
                if not isinstance(trace, dict) or not trace:
                    self._unknown("trace: missing trace")
                    return
                for key, body in trace.items():
                    break
                if key == "orchestrationTrace":
                    if "rationale" in body:
                        return
                    step_type: str | None = "ORCHESTRATION"
                else:
                    step_type = _MODEL_TRACE_KINDS.get(key)
                name = part.get("collaboratorName")
                agent = name if name else (_chain_agent(part) if "callerChain" in part else None)
                if step_type is None:
                    self._other_trace(key, body, agent)
                elif "modelInvocationOutput" in body:
                    self._model_output(body["modelInvocationOutput"], step_type, agent, part)
                elif "modelInvocationInput" in body:
                    mii = body["modelInvocationInput"]
                    trace_id = mii.get("traceId")
                    model = text_id(mii.get("foundationModel")) or text_id(self._fallback_model(agent, part))
                    if model:
                        self._last_model_by_agent[agent] = model
                    self._model_by_trace[trace_id] = model
                    kind = mii.get("type") or step_type
                    self._in_sink = True
                    self.sink.model_started(model, kind, trace_id, agent)
                elif "invocationInput" in body:
                    self._invocation_input(body["invocationInput"], agent)
                elif "observation" in body:
                    self._observation(body["observation"], agent)
                elif "rationale" not in body:
                    self._unknown(f"{step_type.lower()}: " + ",".join(body))
            elif "chunk" in event:
                chunk = event["chunk"]
                size = utf8_len(chunk.get("bytes")) if isinstance(chunk, dict) else 0
                self._in_sink = True
                self.sink.answer_chunk(size)
            elif "returnControl" in event:
                payload = event["returnControl"]
                if not isinstance(payload, dict):
                    self._unknown("returnControl: not an object")
                    return
                inputs = payload.get("invocationInputs")
                invocation_id = payload.get("invocationId")
                self._in_sink = True
                self.sink.return_control(invocation_id, len(inputs) if isinstance(inputs, list) else 0)
            elif "files" not in event:
                self._unknown("event: " + ",".join(str(k) for k in event) if event else "event: empty")
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            if self._in_sink:
                raise  # the sink's own error: its caller contains it
            # A malformed event must never break the caller's stream: count it and go on.
            self._unknown(f"malformed event: {type(exc).__name__}")

    def _unknown(self, what: str) -> None:
        self.unknown_events += 1
        self._in_sink = True
        self.sink.unknown(what)

    def _other_trace(self, key: str, body: Mapping[str, Any], agent: str | None) -> None:
        if key == "guardrailTrace":
            action = body.get("action")
            if action == "INTERVENED":
                trace_id = body.get("traceId")
                self._in_sink = True
                self.sink.guardrail_intervention(action, trace_id, agent)
        elif key == "failureTrace":
            code, trace_id = _opt_int(body.get("failureCode")), body.get("traceId")
            self._in_sink = True
            self.sink.failure(code, trace_id, agent)
        elif key != "customOrchestrationTrace":
            self._unknown(f"trace: {key}")

    def _model_output(self, mio: Mapping[str, Any], step_type: str, agent: str | None, part: Mapping[str, Any]) -> None:
        trace_id = mio.get("traceId")
        model = self._model_by_trace.pop(trace_id, None) or text_id(self._fallback_model(agent, part))
        metadata = mio.get("metadata")
        usage = metadata.get("usage") if isinstance(metadata, dict) else None
        if not isinstance(usage, dict):
            self._in_sink = True
            self.sink.model_call(model, step_type, 0, 0, 0, 0, None, trace_id, agent, _NO_FLAGS, True)
            return
        i, o, cr, cw, suspect = usage_counts(usage, _AGENT_USAGE_FIELDS)
        latency = optional_ms(metadata.get("totalTimeMs"))  # type: ignore[union-attr]
        self._in_sink = True
        self.sink.model_call(model, step_type, i, o, cr, cw, latency, trace_id, agent, _SUSPECT if suspect else _NO_FLAGS, False)

    def _fallback_model(self, agent: str | None, part: Mapping[str, Any]) -> str | None:
        model = self._last_model_by_agent.get(agent)
        if model:
            return model
        agent_id = part.get("agentId")
        if self.agent_model_lookup is not None and agent_id:
            model = self.agent_model_lookup(agent_id, part.get("agentVersion"))
            if model:
                return model
        return self.default_model

    def _invocation_input(self, ii: Mapping[str, Any], agent: str | None) -> None:
        kind = ii.get("invocationType")
        if kind not in TOOL_KINDS:
            return
        name: str | None
        # What makes two calls of one tool the same call (hashed, never kept).
        parameters: Any
        if kind == "ACTION_GROUP":
            ag = ii.get("actionGroupInvocationInput") or {}
            name = ag.get("actionGroupName")
            op = ag.get("function") or ag.get("apiPath")
            if name and op:
                name = f"{name}::{op}"
            parameters = {k: ag.get(k) for k in ("verb", "parameters", "requestBody")}
        elif kind == "KNOWLEDGE_BASE":
            kb = ii.get("knowledgeBaseLookupInput") or {}
            name = kb.get("knowledgeBaseId")
            parameters = kb.get("text")
        elif kind == "AGENT_COLLABORATOR":
            collaborator = ii.get("agentCollaboratorInvocationInput") or {}
            name = collaborator.get("agentCollaboratorName")
            parameters = collaborator.get("input")
        else:
            name = "codeInterpreter"
            parameters = ii.get("codeInterpreterInvocationInput")
        name = text_id(name)
        trace_id = ii.get("traceId")
        pending = self._tools_by_trace.get(trace_id)
        if pending is None:
            self._tools_by_trace[trace_id] = [(kind, name)]
        else:
            pending.append((kind, name))
        call_hash = tool_call_hash(name, parameters) if self.hash_tool_calls else None
        self._in_sink = True
        self.sink.tool_call(kind, name, trace_id, agent, call_hash)

    def _observation(self, obs: Mapping[str, Any], agent: str | None) -> None:
        trace_id = obs.get("traceId")
        if "actionGroupInvocationOutput" in obs:
            out = obs["actionGroupInvocationOutput"] or {}
            size = utf8_len(out.get("text"))
            kind = "ACTION_GROUP"
        elif "finalResponse" in obs:
            final = obs["finalResponse"] or {}
            size = utf8_len(final.get("text"))
            self._in_sink = True
            self.sink.final_answer(size, trace_id, agent)
            return
        elif "knowledgeBaseLookupOutput" in obs:
            out = obs["knowledgeBaseLookupOutput"] or {}
            refs = out.get("retrievedReferences") or []
            size = sum(utf8_len((ref.get("content") or {}).get("text")) for ref in refs)
            kind = "KNOWLEDGE_BASE"
        elif "agentCollaboratorInvocationOutput" in obs:
            out = obs["agentCollaboratorInvocationOutput"] or {}
            size = utf8_len((out.get("output") or {}).get("text"))
            kind = "AGENT_COLLABORATOR"
        elif "codeInterpreterInvocationOutput" in obs:
            out = obs["codeInterpreterInvocationOutput"] or {}
            size = utf8_len(out.get("executionOutput")) + utf8_len(out.get("executionError"))
            kind = "ACTION_GROUP_CODE_INTERPRETER"
        else:
            # REPROMPT and ASK_USER observations feed nothing back from a tool.
            return
        metadata = out.get("metadata")
        latency = optional_ms(metadata.get("totalTimeMs")) if isinstance(metadata, dict) else None
        name = self._match_tool(trace_id, kind)
        self._in_sink = True
        self.sink.tool_result(kind, name, size, latency, trace_id, agent)

    def _match_tool(self, trace_id: str | None, kind: str) -> str | None:
        pending = self._tools_by_trace.get(trace_id)
        if not pending:
            return None
        for index, (pending_kind, name) in enumerate(pending):
            if pending_kind == kind:
                del pending[index]
                return name
        return None


def _chain_agent(part: Mapping[str, Any]) -> str | None:
    """The collaborator a step belongs to when the part names none: None for the agent the caller
    invoked.

    ``callerChain`` lists the agents from the one invoked down to the one that made the step, so
    a chain longer than one means a collaborator.
    """
    chain = part.get("callerChain")
    if isinstance(chain, list) and len(chain) > 1:
        last = chain[-1]
        if isinstance(last, dict):
            return last.get("agentAliasArn")
    return None
