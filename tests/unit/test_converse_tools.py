"""The Converse-boundary tool memory and tool result sizing (pure logic)."""

from __future__ import annotations

from costguard.meter.tools import ToolUseMemory, tool_result_bytes


def test_the_memory_is_bounded_in_sessions_and_in_ids_per_session() -> None:
    memory = ToolUseMemory(max_sessions=2, max_ids=3)
    for n in range(5):
        assert memory.called("a", f"t{n}", "search")
    assert not memory.called("a", "t4", "search")  # already counted
    assert memory.lookup("a", "t0") is None and memory.lookup("a", "t1") is None  # oldest ids dropped
    assert memory.lookup("a", "t4").name == "search"  # type: ignore[union-attr]
    memory.called("b", "x", None)
    memory.lookup("a", "t4")  # a lookup does not refresh a session: only use does
    memory.called("a", "t9", None)
    memory.called("c", "y", None)
    assert memory.lookup("b", "x") is None  # least recently used session dropped
    assert memory.lookup("a", "t9") is not None and memory.lookup("c", "y") is not None


def test_results_are_marked_sized_once_sent() -> None:
    memory = ToolUseMemory()
    memory.called("s", "t1", "search")
    memory.sized("s", ["t1", "restored"])
    assert memory.lookup("s", "t1").result_sized  # type: ignore[union-attr]
    assert memory.lookup("s", "restored").result_sized  # type: ignore[union-attr]


def test_result_sizes_are_what_the_model_rereads() -> None:
    assert tool_result_bytes([{"text": "héllo"}]) == 6
    assert tool_result_bytes([{"json": {"k": ["v", 1], "n": None}}]) == len('{"k":["v",1],"n":null}')
    assert tool_result_bytes([{"image": {"format": "png", "source": {"bytes": b"\x00" * 10}}}]) == 10
    assert tool_result_bytes([{"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}}]) == 0
    assert tool_result_bytes([{"document": {"format": "txt", "name": "n", "source": {"content": [{"text": "abc"}, {"text": "de"}]}}}]) == 5
    assert tool_result_bytes([{"searchResult": {"source": "src", "title": "t", "content": [{"text": "1234"}]}}]) == 8
    assert tool_result_bytes([{"text": "a"}, {"video": {"format": "mp4", "source": {"bytes": b"v" * 7}}}]) == 8
    assert tool_result_bytes("not a list") == 0 and tool_result_bytes([None, 3, {"text": 5}]) == 0
