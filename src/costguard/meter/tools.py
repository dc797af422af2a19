"""Tool calls and tool results of a Converse agent loop, seen at the Converse boundary.

A framework (Strands, LangChain, your own loop) runs tools between two model calls: each tool
call is a ``toolUse`` block in a Converse response, and its result comes back as a ``toolResult``
block in the next request, after which every later request repeats it as history. So a tool call
is counted when a response asks for it, and a result is sized once, by ``toolUseId``, when a
request first carries it: before that request is sent, so an oversize result is refused while it
has cost nothing yet.

Which ids a session has shown is remembered per session (the wrapped client's ``session_id``) in
a bounded LRU, so a long-lived process holds a fixed amount of it. Only the trailing user turn of
a request is read for new results: that is where a loop puts them, and it keeps the check's cost
independent of how long the history has grown.

Shapes from botocore's bedrock-runtime service model (2023-09-30): ``ContentBlock.toolUse``
(``ToolUseBlock{toolUseId, name, input}``), ``ContentBlock.toolResult`` (``ToolResultBlock{toolUseId,
content[ToolResultContentBlock{json|text|image|document|video|searchResult}]}``), and in
ConverseStream ``contentBlockStart.start.toolUse`` (``ToolUseBlockStart{toolUseId, name}``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.coerce import text_id, utf8_len
from costguard.errors import PolicyViolation
from costguard.trace import ToolCall, ToolResult

if TYPE_CHECKING:
    from costguard.meter.request import RequestMeter

#: The ``kind`` of tool rows recorded at the Converse boundary (the agent traces use the action
#: group, knowledge base... kinds Bedrock Agents report).
TOOL_USE_KIND = "TOOL_USE"


@dataclass(slots=True)
class _ToolUse:
    name: str | None
    result_sized: bool = False


class ToolUseMemory:
    """The toolUseIds each session has shown: at most ``max_sessions`` sessions (least recently
    used dropped first), and at most ``max_ids`` ids per session."""

    def __init__(self, max_sessions: int = 1024, max_ids: int = 2048) -> None:
        self.max_sessions = max_sessions
        self.max_ids = max_ids
        self._sessions: OrderedDict[str, OrderedDict[str, _ToolUse]] = OrderedDict()
        self._lock = threading.Lock()

    def _ids(self, session_id: str) -> OrderedDict[str, _ToolUse]:
        ids = self._sessions.get(session_id)
        if ids is None:
            ids = self._sessions[session_id] = OrderedDict()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        return ids

    def called(self, session_id: str, tool_use_id: str, name: str | None) -> bool:
        """Remember a tool call a response asked for; False when this id was already counted."""
        with self._lock:
            ids = self._ids(session_id)
            if tool_use_id in ids:
                return False
            ids[tool_use_id] = _ToolUse(name)
            while len(ids) > self.max_ids:
                ids.popitem(last=False)
            return True

    def lookup(self, session_id: str, tool_use_id: str) -> _ToolUse | None:
        with self._lock:
            ids = self._sessions.get(session_id)
            return ids.get(tool_use_id) if ids is not None else None

    def sized(self, session_id: str, tool_use_ids: list[str]) -> None:
        """Mark results as counted (their request was sent)."""
        with self._lock:
            ids = self._ids(session_id)
            for tool_use_id in tool_use_ids:
                entry = ids.get(tool_use_id)
                if entry is None:
                    entry = ids[tool_use_id] = _ToolUse(None)
                entry.result_sized = True
                ids.move_to_end(tool_use_id)
            while len(ids) > self.max_ids:
                ids.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _NewResult:
    tool_use_id: str
    step: ToolResult


class ToolTurn:
    """One Converse request's tool traffic: the results it carries, the calls its response asks for."""

    __slots__ = ("meter", "memory", "session_id", "new_results")

    def __init__(self, meter: RequestMeter, memory: ToolUseMemory) -> None:
        self.meter = meter
        self.memory = memory
        self.session_id = meter.session_id
        self.new_results: list[_NewResult] = []

    def check_request(self, request: Mapping[str, Any]) -> None:
        """Size the results this request carries for the first time; a cap they cross is raised
        here, before the request is sent (the request is then settled as blocked)."""
        try:
            self.new_results = self._new_results(request)
        except Exception as exc:  # noqa: BLE001 - costguard's own bug: the model call is still
            # metered, only these tool results go uncounted (and the gap is counted and logged).
            self.meter.guard.contain("Converse tool results", exc)
            self.new_results = []
        try:
            for result in self.new_results:
                self.meter.on_step(result.step)
        except PolicyViolation:
            self.meter.finish("blocked", write_usage=False)
            raise

    def _new_results(self, request: Mapping[str, Any]) -> list[_NewResult]:
        found: list[_NewResult] = []
        for block in _trailing_tool_results(request.get("messages")):
            tool_use_id = text_id(block.get("toolUseId"))
            if not tool_use_id or any(r.tool_use_id == tool_use_id for r in found):
                continue
            known = self.memory.lookup(self.session_id, tool_use_id)
            if known is not None and known.result_sized:
                continue
            step = ToolResult(
                TOOL_USE_KIND,
                known.name if known is not None else None,
                tool_result_bytes(block.get("content")),
                None,
                tool_use_id,
                None,
                # A call seen in a response here was counted then; one from a history this process
                # never saw (a restored conversation) is counted now, with its result.
                call_counted=known is not None,
            )
            found.append(_NewResult(tool_use_id, step))
        return found

    def sent(self) -> None:
        """The request reached the model: its results are not counted again."""
        if self.new_results:
            self.memory.sized(self.session_id, [r.tool_use_id for r in self.new_results])

    def response_calls(self, response: Mapping[str, Any]) -> Iterator[ToolCall]:
        """The tool calls a Converse response asks for."""
        output = response.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            return
        for block in content:
            if isinstance(block, dict):
                step = self.call_started(block.get("toolUse"))
                if step is not None:
                    yield step

    def call_started(self, tool_use: Any) -> ToolCall | None:
        """A ``toolUse`` block (or a stream's ``toolUse`` block start) as a new tool call step."""
        if not isinstance(tool_use, dict):
            return None
        tool_use_id = text_id(tool_use.get("toolUseId"))
        name = text_id(tool_use.get("name"))
        if tool_use_id and not self.memory.called(self.session_id, tool_use_id, name):
            return None
        return ToolCall(TOOL_USE_KIND, name, tool_use_id, None)


def _trailing_tool_results(messages: Any) -> Iterator[Mapping[str, Any]]:
    """The ``toolResult`` blocks of the user turn(s) after the last assistant message."""
    if not isinstance(messages, list):
        return
    start = len(messages)
    while start > 0:
        message = messages[start - 1]
        if isinstance(message, dict) and message.get("role") == "assistant":
            break
        start -= 1
    for message in messages[start:]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for block in content:
            result = block.get("toolResult") if isinstance(block, dict) else None
            if isinstance(result, dict):
                yield result


def tool_result_bytes(content: Any) -> int:
    """UTF-8 bytes of a tool result as the model re-reads it: text, JSON in its compact
    serialisation, and the raw bytes of images, documents and videos (a result stored in S3 is
    not visible here and counts 0)."""
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        if "text" in block:
            total += utf8_len(block["text"])
        if "json" in block:
            total += _json_bytes(block["json"])
        for media in ("image", "document", "video"):
            item = block.get(media)
            if isinstance(item, dict):
                total += _source_bytes(item.get("source"))
        search = block.get("searchResult")
        if isinstance(search, dict):
            total += utf8_len(search.get("source")) + utf8_len(search.get("title"))
            total += _text_blocks_bytes(search.get("content"))
    return total


def _source_bytes(source: Any) -> int:
    if not isinstance(source, dict):
        return 0
    return utf8_len(source.get("bytes")) + utf8_len(source.get("text")) + _text_blocks_bytes(source.get("content"))


def _text_blocks_bytes(blocks: Any) -> int:
    if not isinstance(blocks, list):
        return 0
    return sum(utf8_len(b.get("text")) for b in blocks if isinstance(b, dict))


def _json_bytes(value: Any) -> int:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return 0
    return utf8_len(text)
