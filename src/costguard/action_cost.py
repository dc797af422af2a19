"""What an action group Lambda invocation costs: billed duration x memory, plus the request.

Lambda bills the handler's duration rounded up to the next millisecond, times the memory
configured for the function (``context.memory_limit_in_mb``; ``$AWS_LAMBDA_FUNCTION_MEMORY_SIZE``
when the context has none), at its architecture's GB-second price in the function's region
(``$AWS_REGION``), plus a per-request price (:mod:`costguard.pricing.lambda_prices`).

Lambda exposes no variable naming the architecture, so it is read from the processor the code
runs on (``platform.machine()``: ``aarch64`` on arm64 functions, ``x86_64`` on x86_64 ones);
``$COSTGUARD_LAMBDA_ARCHITECTURE`` (``x86_64`` or ``arm64``) overrides it, e.g. for tests or a
local emulator. The environment variables are those the Lambda runtime defines for every
function ("Defined runtime environment variables", AWS Lambda Developer Guide).
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costguard.pricing.lambda_prices import ARCHITECTURES, lambda_prices

ARCHITECTURE_VARIABLE = "COSTGUARD_LAMBDA_ARCHITECTURE"
_MACHINES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}


@dataclass(frozen=True, slots=True)
class InvocationCost:
    billed_ms: int
    memory_mb: int
    architecture: str
    region: str
    cost_nanos: int
    #: True when the region had no price of its own (priced at the fallback region's).
    region_assumed: bool = False


def billed_ms(elapsed_s: float) -> int:
    """Lambda's billed duration: the wall time rounded up to the next millisecond (at least 1)."""
    return max(1, math.ceil(round(elapsed_s * 1000, 6)))


def memory_mb(context: Any, environ: Mapping[str, str]) -> int | None:
    """The function's configured memory (the runtime's context gives it as a string or an int)."""
    for value in (getattr(context, "memory_limit_in_mb", None), environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")):
        try:
            mb = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if mb > 0:
            return mb
    return None


def architecture(environ: Mapping[str, str]) -> str:
    configured = environ.get(ARCHITECTURE_VARIABLE, "").strip().lower()
    if configured in ARCHITECTURES:
        return configured
    return _MACHINES.get(platform.machine().lower(), "x86_64")


def invocation_cost(context: Any, elapsed_s: float, environ: Mapping[str, str] | None = None) -> InvocationCost | None:
    """The cost of one invocation that ran ``elapsed_s`` seconds; None outside Lambda (no memory size)."""
    env = os.environ if environ is None else environ
    mb = memory_mb(context, env)
    if mb is None:
        return None
    arch = architecture(env)
    price = lambda_prices().for_region(env.get("AWS_REGION"))
    ms = billed_ms(elapsed_s)
    return InvocationCost(ms, mb, arch, price.region, price.cost_nanos(ms, mb, arch), price.assumed)
