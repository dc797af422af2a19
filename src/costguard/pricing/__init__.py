"""Bedrock model prices: the shipped catalog, local overrides, and model-id normalisation."""

from __future__ import annotations

from costguard.pricing.catalog import (
    FALLBACK_MODEL_ID,
    InferenceProfileResolver,
    ModelPrice,
    PriceCatalog,
    PriceQuote,
    base_model_id,
    default_override_path,
)

__all__ = [
    "FALLBACK_MODEL_ID",
    "InferenceProfileResolver",
    "ModelPrice",
    "PriceCatalog",
    "PriceQuote",
    "base_model_id",
    "default_override_path",
]
