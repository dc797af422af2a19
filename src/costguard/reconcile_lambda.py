"""Action group Lambda spend in reconciliation: what Cost Explorer billed for the functions
carrying the workflow tag, beside what ``action_guard`` metered for them.

Cost Explorer bills Lambda under the service ``AWS Lambda``; a function tagged with the cost
allocation tag (``costguard:workflow`` = the workflow, activated in the Billing console like the
inference-profile tag) lands in that workflow's ``TAG`` group. The query is the one the Bedrock
side uses (daily, grouped by the tag and usage type), filtered on that service: one more
``GetCostAndUsage`` request per page ($0.01 each), so it runs only when asked for
(``Reconciler(include_lambda=True)``, ``costguard reconcile --lambda``).

The metered side is the ledger's action records (billed duration x memory at the published
price, first duration tier, free tier not deducted), summed per workflow and UTC day.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import pandas as pd

from costguard.usage import ActionRecord, nanos_to_usd

#: The ``SERVICE`` dimension value Cost Explorer bills Lambda under.
LAMBDA_SERVICE: Final = "AWS Lambda"
LAMBDA_SPEND_COLUMNS: Final[tuple[str, ...]] = (
    "workflow",
    "day",
    "metered_lambda_usd",
    "billed_lambda_usd",
    "invocations",
    "drift_usd",
)


def build_lambda_spend(
    days: Sequence[str], billed: Any, actions: Sequence[ActionRecord]
) -> pd.DataFrame:
    """One row per (workflow, day) with metered or billed Lambda spend in ``days``.

    ``billed`` is the :class:`costguard.reconcile.BilledCosts` of the ``AWS Lambda`` query; a day
    Cost Explorer has no figure for yet has ``billed_lambda_usd`` None.
    """
    wanted = set(days)
    metered: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for action in actions:
        day = datetime.fromtimestamp(action.ts_ms / 1000, UTC).date().isoformat()
        if day in wanted:
            cell = metered[(action.workflow, day)]
            cell[0] += action.cost_nanos
            cell[1] += 1
    rows: list[dict[str, Any]] = []
    for workflow, day in sorted(set(metered) | {key for key in billed.costs if key[1] in wanted}):
        nanos, invocations = metered.get((workflow, day), [0, 0])
        metered_usd = nanos_to_usd(nanos)
        billed_usd: Decimal | None = billed.costs.get((workflow, day), Decimal(0)) if day in billed.days else None
        rows.append(
            {
                "workflow": workflow,
                "day": day,
                "metered_lambda_usd": metered_usd,
                "billed_lambda_usd": billed_usd,
                "invocations": invocations,
                "drift_usd": None if billed_usd is None else billed_usd - metered_usd,
            }
        )
    return pd.DataFrame(rows, columns=list(LAMBDA_SPEND_COLUMNS))
