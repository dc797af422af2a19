"""The price key: every dimension AWS prices a Bedrock model call on, and a priced call.

A call's cost depends on more than its model: the region it ran in, the scope of the id it was
sent to (in-region, a geo cross-region profile such as ``us.``/``eu.``/``apac.``/``jp.``/``au.``,
or a ``global.`` profile), whether its context exceeded the model's long-context threshold,
the TTL of its cache writes (5 minutes or 1 hour), the service tier it ran on (``standard``,
``priority``, ``flex``) and whether it asked for latency-optimized inference. This module holds
the value types only; :meth:`costguard.pricing.PriceCatalog.rate_card` turns a model id and
those dimensions into a :class:`RateCard`, which prices a :class:`CallUsage` in exact integer
nano-dollars.

A dimension a model does not price on falls back to the model's base rate: the card says so in
``flags`` (``tier_assumed``, ``region_assumed``...), so nothing is silently mispriced and nothing
is ever priced at $0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

Scope = Literal["in_region", "geo", "global"]
Tier = Literal["standard", "priority", "flex"]
ContextBand = Literal["standard", "long"]
CacheTtl = Literal["none", "5m", "1h"]

SCOPES: tuple[str, ...] = ("in_region", "geo", "global")
TIERS: tuple[str, ...] = ("standard", "priority", "flex")

#: Flags a priced call can carry. ``unpriced``: the model is not in the catalog, the fallback
#: rate was used. ``region_assumed``: no published figure for the region, the us-east-1 figure was
#: used. ``tier_assumed``/``scope_assumed``/``latency_assumed``/``long_context_assumed``: the
#: model has no rate for that dimension, its base rate was used. ``estimated``: the token counts
#: were estimated (the operation reports no usage). ``usage_suspect``: a token count was out of
#: range and clamped. ``usage_unknown``: the response never arrived; settled at the estimate.
KNOWN_FLAGS: frozenset[str] = frozenset(
    {
        "unpriced",
        "region_assumed",
        "tier_assumed",
        "scope_assumed",
        "latency_assumed",
        "long_context_assumed",
        "estimated",
        "usage_suspect",
        "usage_unknown",
    }
)


@dataclass(frozen=True, slots=True)
class CallUsage:
    """The token counts of one model call, split the way AWS prices them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def context_tokens(self) -> int:
        """What AWS compares with a long-context threshold: input + cache read + cache write."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def cache_ttl(self) -> CacheTtl:
        if self.cache_write_1h_tokens:
            return "1h"
        if self.cache_write_5m_tokens:
            return "5m"
        return "none"


@dataclass(frozen=True, slots=True)
class PriceKey:
    """The dimensions one call was priced on; stored with every model-call row."""

    model: str
    region: str
    scope: Scope = "in_region"
    context: ContextBand = "standard"
    cache_ttl: CacheTtl = "none"
    tier: Tier = "standard"
    latency_optimized: bool = False

    def label(self) -> str:
        """A compact, stable, parseable form: ``model|region|scope|context|ttl|tier|lat``.

        Memoised: the meter stores one per model call, and a process sees few distinct keys."""
        return _label(self)

    def _joined(self) -> str:
        return "|".join(
            (
                self.model,
                self.region,
                self.scope,
                self.context,
                self.cache_ttl,
                self.tier,
                "latency" if self.latency_optimized else "-",
            )
        )

    @classmethod
    def parse(cls, label: str) -> PriceKey:
        model, region, scope, context, ttl, tier, lat = label.rsplit("|", 6)
        return cls(model, region, scope, context, ttl, tier, lat == "latency")  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PricedCall:
    """What one call cost and how it was priced."""

    cost_nanos: int
    key: PriceKey
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def priced(self) -> bool:
        return "unpriced" not in self.flags


@lru_cache(maxsize=4096)
def _label(key: PriceKey) -> str:
    return key._joined()
