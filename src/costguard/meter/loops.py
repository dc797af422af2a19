"""Stuck-loop detection: the same tool called with the same parameters again and again.

A call is keyed by :func:`costguard.trace.tool_call_hash` (the tool and the canonical JSON of its
parameters, hashed: parameters are never kept). ``max_repeated_tool_calls`` caps how often one
key may occur: ``per_request`` within one request (an InvokeAgent call with its return-control
continuations; for Converse, the conversation the request carries), ``per_session`` across the
session's requests and processes, through the ledger's per-session repeat counters (read once per
request, and only when a per-session cap is set; the request's new calls are added when it is
recorded).

InvokeAgent: every ``invocationInput`` step carries its key; the step that repeats a call once
too often is the violation, so the stream is stopped before the agent runs the tool again.

Converse: a tool call is a ``toolUse`` block (``name``, ``input``) in an assistant message; the
agent loop sends the whole conversation back with each call. Before a request is sent, the
conversation's ``toolUse`` blocks are counted: a request that carries the result of a call
repeated once too often is refused before it is sent. The calls new to the session are those of
the last assistant message (answered by the request's final user message).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from costguard.trace import tool_call_hash


class RepeatCounter:
    """How often each call key occurred in one request, and in its session before it."""

    __slots__ = ("request", "session_before", "added")

    def __init__(self, session_before: Mapping[str, int] | None = None) -> None:
        self.request: Counter[str] = Counter()
        self.session_before: Mapping[str, int] = session_before or {}
        #: Calls this request adds to the session's counters.
        self.added: Counter[str] = Counter()

    def count(self, key: str, *, new_to_session: bool = True) -> tuple[int, int]:
        """Count one occurrence of ``key``: ``(calls in the request, calls in the session)``."""
        self.request[key] += 1
        if new_to_session:
            self.added[key] += 1
        return self.request[key], self.session_before.get(key, 0) + self.added[key]


def converse_tool_uses(messages: Any) -> Iterator[tuple[str | None, str, bool]]:
    """``(tool name, call key, new to the session)`` of every toolUse block of a Converse request.

    Blocks of the last assistant message are new: the previous response asked for them and this
    request carries their results. Earlier ones were counted when their own results were sent.
    """
    if not isinstance(messages, list):
        return
    last_assistant = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=-1,
    )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            use = block.get("toolUse") if isinstance(block, dict) else None
            if isinstance(use, dict):
                name = use.get("name") if isinstance(use.get("name"), str) else None
                yield name, tool_call_hash(name, use.get("input")), index == last_assistant
