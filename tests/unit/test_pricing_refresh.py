"""Price List parsing and matching: pure logic, no AWS."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from costguard.errors import PricingError
from costguard.pricing import PriceCatalog
from costguard.pricing.refresh import RefreshResult, build_override, normalise_name, parse_product
from tests.support.pricelist import product


def test_names_normalise_across_both_service_codes() -> None:
    assert normalise_name("Claude 3.5 Sonnet (Amazon Bedrock Edition)") == normalise_name("Claude 3.5 Sonnet")
    assert normalise_name("Anthropic Claude 3 Haiku") == "claude3haiku"
    assert normalise_name("Command R+") != normalise_name("Command R")


def test_per_1k_prices_become_per_1m_exactly() -> None:
    entries, reasons = parse_product(product("Nova Micro", "Input tokens", "0.000035"))
    assert reasons == []
    assert [(e.direction, e.usd_per_million) for e in entries] == [("input", Decimal("0.035"))]
    entries, _ = parse_product(product("Nova Micro", "Output tokens", "0.14", unit="1M tokens"))
    assert entries[0].usd_per_million == Decimal("0.14")
    entries, _ = parse_product(product("Claude 3.5 Sonnet", "Cache read input tokens", "0.0003"))
    assert entries[0].direction == "cache_read" and entries[0].usd_per_million == Decimal("0.3")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"feature": "Batch Inference"},
        {"usagetype": "USE1-Claude3.5Sonnet-Batch-input-tokens"},
        {"usagetype": "USE1-GlobalInference-Claude-input-tokens"},
        {"usagetype": "USE1-LongContext-Claude-input-tokens"},
        {"unit": "Images", "description": "per image"},
    ],
)
def test_other_tiers_and_units_are_skipped_with_a_reason(kwargs: dict[str, str]) -> None:
    entries, reasons = parse_product(product("Claude 3.5 Sonnet", "Input tokens", "0.003", **kwargs))
    assert entries == [] and reasons


def test_a_product_that_is_not_json_is_an_error() -> None:
    with pytest.raises(PricingError):
        parse_product("{not json")


def test_override_takes_matching_models_and_reports_the_rest() -> None:
    # GIVEN prices for a known model (changed), an unknown name, and a half-priced model
    known = PriceCatalog.shipped()
    entries = []
    for doc in (
        product("Claude 3 Haiku", "Input tokens", "0.0003"),
        product("Claude 3 Haiku", "Output tokens", "0.0015"),
        product("Brand New Model", "Input tokens", "0.001"),
        product("Nova Pro", "Input tokens", "0.0008"),
    ):
        entries.extend(parse_product(doc)[0])
    result = RefreshResult(region="us-east-1", catalog=None)
    # WHEN the override is built
    catalog = build_override(entries, known, "us-east-1", "2026-11-22", result)
    # THEN only the fully priced known model is in it, the rest is reported
    assert catalog is not None and list(catalog.models) == ["anthropic.claude-3-haiku-20240307-v1:0"]
    price = catalog.models["anthropic.claude-3-haiku-20240307-v1:0"]
    assert (price.input, price.output) == (Decimal("0.3"), Decimal("1.5"))
    assert result.unmatched_names == ["Brand New Model"]
    assert result.incomplete == ["amazon.nova-pro-v1:0"]
    assert set(result.changed) == {"anthropic.claude-3-haiku-20240307-v1:0"}
    # the layered catalog prices with the refreshed figure and round-trips through JSON
    layered = known.layered(PriceCatalog.from_dict(json.loads(json.dumps(catalog.to_dict()))))
    assert layered.quote("anthropic.claude-3-haiku-20240307-v1:0").price.input == Decimal("0.3")


def test_two_prices_for_one_direction_refuse_the_model() -> None:
    known = PriceCatalog.shipped()
    entries = []
    for doc in (
        product("Claude 3 Haiku", "Input tokens", "0.00025", sku="A"),
        product("Claude 3 Haiku", "Input tokens", "0.00030", sku="B"),
        product("Claude 3 Haiku", "Output tokens", "0.00125"),
    ):
        entries.extend(parse_product(doc)[0])
    result = RefreshResult(region="us-east-1", catalog=None)
    assert build_override(entries, known, "us-east-1", "2026-11-22", result) is None
    assert result.incomplete == ["anthropic.claude-3-haiku-20240307-v1:0"]
