"""Pure logic of stuck-loop counting and session pins."""

from __future__ import annotations

from costguard.meter.loops import RepeatCounter, converse_tool_uses
from costguard.meter.pinning import SessionPin
from costguard.trace import tool_call_hash


def test_call_keys_ignore_parameter_order_but_not_values() -> None:
    a = tool_call_hash("search", {"page": 1, "filters": [{"k": "status"}, {"k": "owner"}]})
    b = tool_call_hash("search", {"filters": [{"k": "owner"}, {"k": "status"}], "page": 1})
    assert a == b and len(a) == 64
    assert tool_call_hash("search", {"page": 2, "filters": [{"k": "status"}, {"k": "owner"}]}) != a
    assert tool_call_hash("lookup", {"page": 1, "filters": [{"k": "status"}, {"k": "owner"}]}) != a
    assert "page" not in a  # a key, never the parameters


def test_repeat_counter_counts_request_and_session() -> None:
    counter = RepeatCounter({"k": 2})
    assert counter.count("k") == (1, 3)
    assert counter.count("k", new_to_session=False) == (2, 3)
    assert counter.count("j") == (1, 1)
    assert dict(counter.added) == {"k": 1, "j": 1}


def test_converse_tool_uses_marks_the_last_assistant_turn_new() -> None:
    use = {"name": "search", "input": {"page": 1}}
    messages = [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"text": "looking"}, {"toolUse": {"toolUseId": "1", **use}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "1", "content": []}}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "2", **use}}, {"toolUse": {"toolUseId": "3", "name": 7}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "2", "content": []}}]},
        "junk",
        {"role": "assistant", "content": "not a list"},
    ]
    found = list(converse_tool_uses(messages))
    key = tool_call_hash("search", {"page": 1})
    assert found == [("search", key, False), ("search", key, False), (None, tool_call_hash(None, None), False)]
    assert list(converse_tool_uses(messages[:5])) == [
        ("search", key, False), ("search", key, True), (None, tool_call_hash(None, None), True)]
    assert list(converse_tool_uses(None)) == []


def test_a_session_pin_is_asked_of_the_ledger_once_per_process() -> None:
    asked: list[str] = []
    known: dict[str, str] = {}

    def pin(model: str) -> str:
        asked.append(model)
        return "anthropic.claude-3-5-sonnet-20240620-v1:0"

    assert SessionPin("s-1", pin, known).violates("anthropic.claude-3-5-sonnet-20240620-v1:0") is None
    assert SessionPin("s-1", pin, known).violates("amazon.nova-micro-v1:0") == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert asked == ["anthropic.claude-3-5-sonnet-20240620-v1:0"]


def test_a_ledger_down_pins_nothing_and_asks_again() -> None:
    known: dict[str, str] = {}
    pin = SessionPin("s-1", lambda model: None, known)
    assert pin.violates("a") is None and pin.violates("b") is None and known == {}
