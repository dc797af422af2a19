"""Rollups in the DynamoDB ledger: the day partition's aggregate items, from rollup deltas.

``D#{day}`` holds, per workflow, one item per base model (``{wf}#{model}``), per agent
(``#A#{wf}#{agent}``) and per price key (``#P#{wf}#{model}#{price key}``), each updated with ADDs
in the transaction that writes the rows they summarise. Deltas are aggregated by key first: an
item may appear only once in a transaction. ``requests`` per key is not kept here (a
continuation would need a read to know which keys its request already counted): reports count
requests per key from the day's request rows, which list the models, agents and price keys each
request used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costguard.ledger.rollups import CALL_COUNTERS, DAY_MS, RollupDeltas
from costguard.usage import day_key

#: The sort key prefix of each call dimension's aggregates ("#" sorts before every model item,
#: whose first character is never "#").
SORT_PREFIX = {"model": "", "agent": "#A#", "price": "#P#"}
_COUNTED = CALL_COUNTERS[1:]  # everything but requests
_TOKENS_AND_COST = ("model_calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos")


def aggregate_updates(
    deltas: RollupDeltas, new_update: Callable[[str, str], Any], quote: Callable[[str], str]
) -> list[Any]:
    """One update (``new_update(pk, sk)``, an ``_Update`` builder) per call rollup key."""
    updates = []
    for (dimension, day, workflow, key, variant), sums in sorted(deltas.calls.items()):
        day_text = day_key(day * DAY_MS)
        prefix = SORT_PREFIX[dimension]
        sk = f"{prefix}{quote(workflow)}#{quote(key)}" + (f"#{quote(variant)}" if dimension == "price" else "")
        update = new_update(f"D#{day_text}", sk)
        update.set("day", {"S": day_text}).set("workflow", {"S": workflow})
        if dimension == "agent":
            update.set("agent", {"S": key})
        else:
            update.set("base_model_id", {"S": key})
        if dimension == "price":
            update.set("price_key", {"S": variant})
        counted = _TOKENS_AND_COST if dimension == "agent" else _COUNTED
        for attr in counted:
            update.add(attr, sums[CALL_COUNTERS.index(attr)])
        updates.append(update)
    return updates
