"""Rate cards from a catalog that predates :meth:`PriceCatalog.rate_card` (removed once it lands)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costguard.pricing.key import CallUsage, PricedCall, PriceKey
from costguard.usage import usd_to_nanos


class LegacyRateCard:
    def __init__(self, catalog: Any, model_id: str, region: str) -> None:
        quote = catalog.quote(model_id)
        self.base_model_id = quote.base_model_id
        self.priced = quote.priced
        self._price = quote.price
        self._key = PriceKey(quote.base_model_id, region)
        self._flags = frozenset() if quote.priced else frozenset({"unpriced"})

    def price(self, usage: CallUsage, flags: frozenset[str] = frozenset()) -> PricedCall:
        cost = self._price.cost(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens)
        return PricedCall(usd_to_nanos(cost), self._key, self._flags | flags)


class LegacyGuardrailCard:
    def __init__(self, region: str) -> None:
        self._key = PriceKey("guardrail", region)

    def price(self, usage: Mapping[str, int]) -> PricedCall:
        return PricedCall(0, self._key, frozenset())
