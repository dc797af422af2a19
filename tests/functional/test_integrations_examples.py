"""The framework examples run offline, from the one command their docstrings give."""

from __future__ import annotations

import re

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, f"examples/{name}"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_strands_example_stops_its_runaway_tool_loop() -> None:
    pytest.importorskip("strands", reason="strands-agents is not installed: pip install 'costguard[strands]'")
    out = run_example("strands_agent.py")
    assert "stopped: per_session.max_tool_calls: observed 4 against limit 3" in out
    assert "model_calls=4 tool_calls=4" in out


def test_the_langchain_example_answers_one_session_and_refuses_the_verbose_result_of_the_other() -> None:
    pytest.importorskip("langchain_aws", reason="langchain-aws is not installed: pip install 'costguard[langchain]'")
    out = run_example("langchain_agent.py")
    assert "[chat-1] answer: You can reset it from Settings > Security." in out
    assert "[chat-2] stopped: per_request.max_tool_response_bytes" in out
    assert re.search(r"session chat-2 \(h:[0-9a-f]{32}\): model_calls=1 tool_calls=1", out)  # hashed user id
