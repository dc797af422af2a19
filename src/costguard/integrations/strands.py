"""Strands Agents: meter a ``strands.Agent`` in one call.

``run = meter_agent(agent, guard, workflow="support")`` replaces the client of the agent's
``BedrockModel`` (its public ``client`` attribute, built in ``BedrockModel.__init__`` from the
boto session) with a costguard-wrapped one, so every Converse / ConverseStream call the agent
loop makes is metered and capped, tool calls and tool result sizes included
(:mod:`costguard.meter.tools`). Calling ``run(prompt)`` runs the agent; a cap that trips ends the
run instead of raising: the result carries the violation and the conversation so far.

Workflow, session and user come from the arguments, else from the agent's state
(``costguard_workflow``, ``session_id``, ``user_id``), else the workflow is the agent's ``name``
and the session a new id for this agent object.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from costguard.errors import IntegrationError, PolicyViolation
from costguard.integrations._common import require, violation_in
from costguard.meter.client import GuardedClient
from costguard.meter.guard import Guard


@dataclass(slots=True)
class AgentRun:
    """How one agent invocation ended: its result, or the violation that stopped it."""

    #: The agent's ``AgentResult`` when it finished, None when a cap stopped it.
    result: Any
    #: The violation that stopped the run (None when it finished).
    violation: PolicyViolation | None
    #: The messages this run added to the conversation (the partial result of a stopped run).
    messages: list[Any] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return self.violation is not None

    @property
    def text(self) -> str:
        """The last assistant text: the answer, or what the agent had said before it was stopped."""
        if self.result is not None:
            return str(self.result).strip()
        for message in reversed(self.messages):
            if message.get("role") == "assistant":
                parts = [b["text"] for b in message.get("content", []) if isinstance(b, dict) and "text" in b]
                if parts:
                    return "\n".join(parts).strip()
        return ""


class MeteredAgent:
    """A Strands agent whose model calls are metered; calling it returns an :class:`AgentRun`."""

    def __init__(self, agent: Any, client: GuardedClient) -> None:
        self.agent = agent
        self.client = client

    @property
    def session_id(self) -> str | None:
        return self.client.binding.session_id

    def __call__(self, prompt: Any = None, **kwargs: Any) -> AgentRun:
        start = len(self.agent.messages)
        try:
            result = self.agent(prompt, **kwargs)
        except Exception as exc:
            return self._stopped(exc, start)
        return AgentRun(result, None, list(self.agent.messages[start:]))

    async def invoke_async(self, prompt: Any = None, **kwargs: Any) -> AgentRun:
        start = len(self.agent.messages)
        try:
            result = await self.agent.invoke_async(prompt, **kwargs)
        except Exception as exc:
            return self._stopped(exc, start)
        return AgentRun(result, None, list(self.agent.messages[start:]))

    def _stopped(self, exc: Exception, start: int) -> AgentRun:
        violation = violation_in(exc)
        if violation is None:
            raise exc
        return AgentRun(None, violation, list(self.agent.messages[start:]))


def meter_agent(
    agent: Any,
    guard: Guard,
    *,
    workflow: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
) -> MeteredAgent:
    """Meter ``agent`` (a ``strands.Agent`` on a ``BedrockModel``) under ``guard``."""
    bedrock = require("strands.models.bedrock", "strands")
    model = getattr(agent, "model", None)
    if not isinstance(model, bedrock.BedrockModel):
        raise IntegrationError(
            f"costguard meters Strands agents on a BedrockModel, not {type(model).__name__}"
        )
    state = _state(agent)
    workflow = workflow or state.get("costguard_workflow") or getattr(agent, "name", None)
    session_id = session_id or state.get("session_id") or uuid.uuid4().hex
    user_id = user_id or state.get("user_id")
    client = model.client
    if isinstance(client, GuardedClient):
        client = client.unwrapped
    wrapped = guard.wrap(client, workflow=str(workflow), user_id=user_id, session_id=str(session_id))
    model.client = wrapped
    return MeteredAgent(agent, wrapped)


def _state(agent: Any) -> dict[str, Any]:
    state = getattr(agent, "state", None)
    try:
        values = state.get() if state is not None else None
    except Exception:  # noqa: BLE001 - a foreign state object: no defaults from it
        return {}
    return values if isinstance(values, dict) else {}
