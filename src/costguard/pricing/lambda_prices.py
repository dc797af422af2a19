"""AWS Lambda on-demand prices (requests and GB-seconds per architecture and region).

Shipped as ``pricing/data/lambda_prices.json`` with its source and retrieval date. A Lambda
invocation costs ``request + memory_mb / 1024 x billed_ms / 1000 x gb_second[architecture]``;
the exact Decimal is rounded once, half-even, to integer nano-dollars (as every model call is).
A region missing from the file is priced at ``fallback_region``'s figures and flagged
``region_assumed``, never at $0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from typing import Any

from costguard.errors import PricingError
from costguard.usage import usd_to_nanos

ARCHITECTURES = ("x86_64", "arm64")
_MB_PER_GB = Decimal(1024)
_MS_PER_S = Decimal(1000)


@dataclass(frozen=True, slots=True)
class LambdaPrice:
    """What one region charges for Lambda requests and duration, per architecture."""

    region: str
    request: Decimal
    gb_second: Mapping[str, Decimal]
    assumed: bool = False

    def cost_nanos(self, billed_ms: int, memory_mb: int, architecture: str) -> int:
        """The cost of one invocation, in nano-dollars (rounded once, half-even)."""
        rate = self.gb_second.get(architecture)
        if rate is None:
            raise PricingError(f"no Lambda duration price for architecture {architecture!r}")
        duration = Decimal(memory_mb) / _MB_PER_GB * Decimal(billed_ms) / _MS_PER_S * rate
        return usd_to_nanos(duration + self.request)


@dataclass(frozen=True, slots=True)
class LambdaPriceTable:
    source: str
    retrieved: str
    regions: Mapping[str, LambdaPrice]
    fallback_region: str

    def for_region(self, region: str | None) -> LambdaPrice:
        price = self.regions.get(region or "")
        if price is not None:
            return price
        fallback = self.regions[self.fallback_region]
        return LambdaPrice(fallback.region, fallback.request, fallback.gb_second, assumed=True)


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise PricingError(f"lambda prices: {where} must be a decimal string, not {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise PricingError(f"lambda prices: {where} is not a number: {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise PricingError(f"lambda prices: {where} must be a price >= 0, not {value!r}")
    return number


def parse_lambda_prices(document: Mapping[str, Any]) -> LambdaPriceTable:
    regions: dict[str, LambdaPrice] = {}
    raw_regions = document.get("regions")
    if not isinstance(raw_regions, Mapping) or not raw_regions:
        raise PricingError("lambda prices: 'regions' must be a non-empty object")
    for region, entry in raw_regions.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("gb_second"), Mapping):
            raise PricingError(f"lambda prices: regions.{region} needs 'request' and 'gb_second'")
        rates = {
            arch: _decimal(value, f"regions.{region}.gb_second.{arch}")
            for arch, value in entry["gb_second"].items()
        }
        regions[region] = LambdaPrice(region, _decimal(entry.get("request"), f"regions.{region}.request"), rates)
    fallback = document.get("fallback_region")
    if fallback not in regions:
        raise PricingError(f"lambda prices: fallback_region {fallback!r} is not one of the regions")
    return LambdaPriceTable(str(document.get("source", "")), str(document.get("retrieved", "")), regions, fallback)


@cache
def lambda_prices() -> LambdaPriceTable:
    """The shipped price table (read once per process)."""
    text = resources.files("costguard.pricing").joinpath("data/lambda_prices.json").read_text("utf-8")
    return parse_lambda_prices(json.loads(text))
