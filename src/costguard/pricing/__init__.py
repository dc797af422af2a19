"""Bedrock model prices: the shipped catalog, local overrides, rate cards and model-id normalisation.

The meter's entry points: ``PriceCatalog.load()``, then per call
``catalog.rate_card(model_id, region=..., tier=..., latency_optimized=...).price(CallUsage(...))``
-> :class:`PricedCall` (integer nano-dollars, the :class:`PriceKey` it was priced on, flags);
``catalog.guardrail_card(region).price(usage)`` for guardrail units; :func:`is_prompt_router` to
know when to price the routed model instead.
"""

from __future__ import annotations

from costguard.pricing.catalog import (
    FALLBACK_MODEL_ID,
    InferenceProfileResolver,
    ModelEntry,
    ModelPrice,
    PriceCatalog,
    PriceQuote,
    base_model_id,
    default_override_path,
    is_prompt_router,
    scope_of,
)
from costguard.pricing.key import CallUsage, PricedCall, PriceKey
from costguard.pricing.rates import GuardrailRateCard, RateCard, RateSet

__all__ = [
    "FALLBACK_MODEL_ID",
    "CallUsage",
    "GuardrailRateCard",
    "InferenceProfileResolver",
    "ModelEntry",
    "ModelPrice",
    "PriceCatalog",
    "PriceKey",
    "PriceQuote",
    "PricedCall",
    "RateCard",
    "RateSet",
    "base_model_id",
    "default_override_path",
    "is_prompt_router",
    "scope_of",
]
