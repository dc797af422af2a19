"""Model-invocation-log recordings: parsing and what a replay under policies keeps."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from costguard.meter import Guard
from costguard.policy import PolicySet
from costguard.pricing import PriceCatalog
from costguard.replay import ReplayError, read_invocation_log, replay_file

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def record(model: str = SONNET, tokens_in: int = 1000, tokens_out: int = 100, **extra: object) -> dict:
    return {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "operation": "Converse", "modelId": model,
            "input": {"inputTokenCount": tokens_in, "inputBodyJson": {"messages": ["secret prompt"]}},
            "output": {"outputTokenCount": tokens_out, "outputBodyJson": {"text": "secret answer"}}, **extra}


def write(path: Path, records: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n\n")
    return path


def test_counts_are_read_and_bodies_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "log.jsonl", [record(tokens_in=10, tokens_out=2, requestMetadata={"sessionId": "s-9"}),
                                          record(**{"input": {"inputTokenCount": 5, "cacheReadInputTokenCount": 7}})])
    calls = read_invocation_log(path)
    assert [(c.input_tokens, c.output_tokens, c.cache_read_tokens, c.session_id) for c in calls] == [
        (10, 2, 0, "s-9"), (5, 100, 7, None)]
    assert "secret" not in repr(calls)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (record(**{"input": {}}), "2: inputTokenCount"),
        (record(**{"output": {"outputTokenCount": -1}}), "2: outputTokenCount"),
        (record(modelId=""), "2: modelId"),
        ({"chunk": {"bytes": "aGk="}}, "2: not a ModelInvocationLog"),
        ("{oops", "2: not JSON"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, bad: dict | str, message: str) -> None:
    path = write(tmp_path / "log.jsonl", [record(), bad])
    with pytest.raises(ReplayError, match=message):
        read_invocation_log(path)


def test_replay_under_a_session_cap_keeps_what_the_cap_allows(tmp_path: Path) -> None:
    # GIVEN five logged calls and a session cap of three model calls
    path = write(tmp_path / "log.jsonl", [record() for _ in range(5)])
    policies = PolicySet.from_dict({"version": 1, "workflows": {"wf": {"per_session": {"max_model_calls": 3}}}})
    pricing = PriceCatalog.shipped()
    guard = Guard(policies, ledger=f"sqlite:///{tmp_path}/l.db", pricing=pricing)
    # WHEN the log is replayed
    result = replay_file(path, guard, "wf", pricing=pricing)
    guard.close()
    # THEN three calls are kept, two blocked before sending, and the avoided cost is exactly theirs
    per_call, _ = pricing.cost(SONNET, 1000, 100)
    assert per_call == Decimal("0.0045")
    assert (result.model_calls_full, result.model_calls_kept) == (5, 3)
    assert result.capped_by == "per_session.max_model_calls" and result.capped_at_event == 4
    assert result.cost_full == 5 * per_call and result.cost_avoided == 2 * per_call
