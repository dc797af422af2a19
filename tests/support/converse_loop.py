"""Scripting a model that asks for tools, for agent-loop tests against the local endpoint, and
reading back what the ledger holds."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import costguard
from costguard.policy import PolicySet
from tests.support.wire import FakeBedrock

# Published on-demand prices, USD per 1M tokens (https://aws.amazon.com/bedrock/pricing/):
# Amazon Nova Micro 0.035 input / 0.14 output.
NOVA_MICRO = "amazon.nova-micro-v1:0"
NOVA_MICRO_IN, NOVA_MICRO_OUT = "0.035", "0.14"


def nanos(tokens: int, usd_per_million: str) -> int:
    """Nano-dollars for ``tokens`` at a per-1M-token price: USD/1M x 1000 = nano-dollars per token."""
    value = Decimal(usd_per_million) * 1000 * tokens
    assert value == value.to_integral_value()
    return int(value)


def nova_micro_nanos(input_tokens: int, output_tokens: int) -> int:
    return nanos(input_tokens, NOVA_MICRO_IN) + nanos(output_tokens, NOVA_MICRO_OUT)


def guard_for(tmp_path: Path, workflow_yaml: str = "mode: enforce", defaults_yaml: str = "") -> costguard.Guard:
    """A guard for workflow ``wf`` with these policy YAML lines (and ``defaults``), SQLite ledger."""
    text = "version: 1\n"
    if defaults_yaml:
        text += "defaults:\n" + "".join(f"  {line}\n" for line in defaults_yaml.strip().splitlines())
    text += "workflows:\n  wf:\n" + "".join(f"    {line}\n" for line in workflow_yaml.strip().splitlines())
    return costguard.Guard(PolicySet.from_yaml(text), ledger=f"sqlite:///{tmp_path}/ledger.db")


def guard_with(tmp_path: Path, limits: str, workflow: str = "wf") -> costguard.Guard:
    """A guard enforcing ``limits`` (policy YAML lines under the workflow) on a SQLite ledger."""
    text = f"version: 1\nworkflows:\n  {workflow}:\n    mode: enforce\n"
    text += "".join(f"    {line}\n" for line in limits.strip().splitlines())
    # Raw user ids (an explicit opt-in; hashed by default) so tests can read attribution back.
    return costguard.Guard(PolicySet.from_yaml(text), ledger=f"sqlite:///{tmp_path}/ledger.db", user_id_key=False)


def queue_tool_use(fake: FakeBedrock, *, streaming: bool, tool_use_id: str, name: str, tool_input: dict[str, Any],
                   input_tokens: int, output_tokens: int) -> None:
    """One model turn that asks for one tool call, as Converse or as ConverseStream events."""
    if not streaming:
        fake.queue_converse(input_tokens, output_tokens, stop_reason="tool_use",
                            content=[{"toolUse": {"toolUseId": tool_use_id, "name": name, "input": tool_input}}])
        return
    fake.queue_stream("ConverseStream", [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockStart": {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": json.dumps(tool_input)}}}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                "totalTokens": input_tokens + output_tokens}, "metrics": {"latencyMs": 200}}},
    ])


def queue_answer(fake: FakeBedrock, *, streaming: bool, text: str, input_tokens: int, output_tokens: int) -> None:
    """One final model turn answering ``text``."""
    if not streaming:
        fake.queue_converse(input_tokens, output_tokens, text=text)
        return
    fake.queue_stream("ConverseStream", [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": text}}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                "totalTokens": input_tokens + output_tokens}, "metrics": {"latencyMs": 200}}},
    ])


def ledger_rows(guard: costguard.Guard, table: str) -> list[dict[str, Any]]:
    guard.flush()
    conn = sqlite3.connect(guard.ledger.path)  # type: ignore[attr-defined]
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]  # noqa: S608 - test helper
    finally:
        conn.close()


def ledger_bytes(guard: costguard.Guard) -> bytes:
    """Every byte of the ledger's files (database, journal, WAL) after closing it."""
    path = Path(guard.ledger.path)  # type: ignore[attr-defined]
    guard.close()
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def tool_results_sent(fake: FakeBedrock) -> list[dict[str, Any]]:
    """The toolResult blocks each request carried in its last message."""
    found = []
    for request in fake.requests:
        messages = request["body"].get("messages") or []
        last = messages[-1] if messages else {}
        found.append([b["toolResult"] for b in last.get("content", []) if "toolResult" in b])
    return found
