"""The pure rollup deltas: one entry per key whatever the number of segments and calls."""

from __future__ import annotations

from costguard.ledger.rollups import Prior, deltas_of
from tests.support.ledger_data import DAY_START_MS, segment

DAY = DAY_START_MS // 86_400_000


def test_a_batch_folds_into_one_delta_per_key() -> None:
    first = segment("r-1", 900, model="m", model_calls=3, ts_ms=DAY_START_MS + 10)
    other = segment("r-2", 100, model="m", session="s-2", ts_ms=DAY_START_MS + 20)
    more = segment("r-1", 50, model="m", ts_ms=DAY_START_MS + 30, previous=first.totals)
    deltas = deltas_of([first, other, more])
    # requests, calls, in, out, cache read, cache write, cost, unpriced
    assert deltas.calls[("model", DAY, "wf", "m", "")] == [2, 5, 500, 50, 0, 0, 1_050, 0]
    assert deltas.calls[("agent", DAY, "wf", "A1", "")] == [2, 5, 500, 50, 0, 0, 1_050, 0]
    assert deltas.calls[("price", DAY, "wf", "m", "")] == [2, 5, 500, 50, 0, 0, 1_050, 0]
    # requests, calls, tools, in, out, cache read, cache write, cost, tool bytes, violations, shadow
    start_day = (DAY_START_MS + 10 - 500) // 86_400_000
    assert deltas.requests[(start_day, "wf", "u-1", "s-1")] == [1, 4, 2, 400, 40, 0, 0, 950, 1_000, 0, 0]
    assert deltas.requests[(start_day, "wf", "u-1", "s-2")] == [1, 1, 1, 100, 10, 0, 0, 100, 500, 0, 0]


def test_the_ledgers_word_on_a_continuation_decides_what_it_counts() -> None:
    later = segment("r-1", 70, model="m", ts_ms=DAY_START_MS + 86_400_000 + 5)
    seen = Prior(known=True, started_ms=DAY_START_MS, user_id="u-0", seen={("model", "m", ""), ("price", "m", "")})
    deltas = deltas_of([later], lambda _segment: seen)
    assert deltas.calls[("model", DAY + 1, "wf", "m", "")][0] == 0  # counted on its first day already
    assert deltas.calls[("agent", DAY + 1, "wf", "A1", "")][0] == 1  # a key it had not used
    # the request's start day and user, as its row keeps them
    assert deltas.requests[(DAY, "wf", "u-0", "s-1")][:2] == [0, 1]


def test_nothing_to_add_writes_nothing() -> None:
    empty = segment("r-1", 0, model_calls=1, tool_bytes=0)
    empty.model_calls, empty.tool_calls = [], []
    empty.delta.model_calls = empty.delta.tool_calls = empty.delta.input_tokens = empty.delta.output_tokens = 0
    empty.totals = empty.totals.copy()
    empty.totals.cost_nanos += 1  # a continuation (totals != delta) that added nothing
    assert not deltas_of([empty])
