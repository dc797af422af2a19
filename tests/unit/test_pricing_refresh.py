"""Price List parsing, classification and the join to model ids: pure logic, no AWS."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costguard.errors import PricingError
from costguard.pricing import PriceCatalog
from costguard.pricing.key import CallUsage
from costguard.pricing.refresh import RefreshResult, build_override, model_directory, normalise_name, parse_product
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
    ("inference_type", "kwargs", "set_name", "direction"),
    [
        ("Input tokens", {}, "standard", "input"),
        ("Input tokens", {"usagetype": "USE1-Claude4Sonnet-input-tokens-cross-region-global"}, "global", "input"),
        ("Output tokens", {"usagetype": "USE1-Claude4.5Sonnet-output-tokens-cross-region"}, "geo", "output"),
        ("Input tokens", {"usagetype": "USE1-Claude4.5Sonnet-input-tokens-long-context"}, "long", "input"),
        ("Input tokens", {"usagetype": "USE1-Claude4.5Sonnet-input-tokens-cross-region-global-long-context"},
         "global+long", "input"),
        ("Input tokens priority", {"service_tier": "priority"}, "priority", "input"),
        ("Output tokens flex", {"service_tier": "flex"}, "flex", "output"),
        ("Input tokens", {"usagetype": "USE2-Claude3.5Haiku-input-tokens-latency-optimized"}, "latency", "input"),
        (None, {"usagetype": "USE1-Claude4Sonnet-cache-read-input-token-count-cross-region-global"}, "global", "cache_read"),
        (None, {"usagetype": "USE1-Claude4.5Sonnet-cache-write-input-token-count"}, "standard", "cache_write_5m"),
        (None, {"usagetype": "USE1-Claude4.5Sonnet-cache-write-1h-input-token-count"}, "standard", "cache_write_1h"),
    ],
)
def test_dimensions_are_read_from_the_product(
    inference_type: str | None, kwargs: dict[str, str], set_name: str, direction: str
) -> None:
    entries, reasons = parse_product(product("Claude Sonnet 4.5", inference_type, "0.003", **kwargs))
    assert reasons == []
    assert [(e.set_name, e.direction, e.usd_per_million) for e in entries] == [(set_name, direction, Decimal("3"))]


def test_the_region_in_a_description_is_not_a_scope() -> None:
    description = "$0.0005 per 1K input tokens for Qwen3 Coder Next in US East (N. Virginia) via Global endpoint docs"
    entries, _ = parse_product(product("qwen.qwen3-coder-next", "Input tokens", "0.0005", description=description))
    assert entries[0].scope == "in_region" and entries[0].usd_per_million == Decimal("0.5")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"feature": "Batch Inference"},
        {"usagetype": "USE1-Claude4Sonnet-input-tokens-cross-region-global-batch"},
        {"feature": "Model Customization"},
        {"usagetype": "USE1-NovaMicro-Model-Customization-input-tokens"},
        {"unit": "Images", "description": "per image"},
        {"unit": "1K TPM Hour", "description": "Reserved 1K TPM Hour"},
    ],
)
def test_other_purchase_options_and_units_are_skipped_with_a_reason(kwargs: dict[str, str]) -> None:
    entries, reasons = parse_product(product("Claude 3.5 Sonnet", "Input tokens", "0.003", **kwargs))
    assert entries == [] and reasons


def test_a_product_that_is_not_json_is_an_error() -> None:
    with pytest.raises(PricingError):
        parse_product("{not json")


def _entries(*docs: str) -> list:  # type: ignore[type-arg]
    out = []
    for doc in docs:
        out.extend(parse_product(doc)[0])
    return out


def test_override_takes_matching_models_and_reports_the_rest() -> None:
    # GIVEN prices for a known model (changed), an unknown name, and a half-priced model
    known = PriceCatalog.shipped()
    entries = _entries(
        product("Claude 3 Haiku", "Input tokens", "0.0003"),
        product("Claude 3 Haiku", "Output tokens", "0.0015"),
        product("Brand New Model", "Input tokens", "0.001"),
        product("Nova Pro", "Input tokens", "0.0008"),
    )
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
    assert result.new_models == []
    # the layered catalog prices with the refreshed figure and round-trips through JSON
    layered = known.layered(PriceCatalog.from_dict(json.loads(json.dumps(catalog.to_dict()))))
    assert layered.quote("anthropic.claude-3-haiku-20240307-v1:0").price.input == Decimal("0.3")


def test_two_prices_for_one_direction_refuse_the_model() -> None:
    known = PriceCatalog.shipped()
    entries = _entries(
        product("Claude 3 Haiku", "Input tokens", "0.00025", sku="A"),
        product("Claude 3 Haiku", "Input tokens", "0.00030", sku="B"),
        product("Claude 3 Haiku", "Output tokens", "0.00125"),
    )
    result = RefreshResult(region="us-east-1", catalog=None)
    assert build_override(entries, known, "us-east-1", "2026-11-22", result) is None
    assert result.incomplete == ["anthropic.claude-3-haiku-20240307-v1:0"]


# ListFoundationModels / ListInferenceProfiles summaries, shaped by botocore's bedrock service model
# (FoundationModelSummary, FoundationModelLifecycle, InferenceProfileSummary).
NEW_MODEL = {
    "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/acme.falcon-9-v1:0",
    "modelId": "acme.falcon-9-v1:0",
    "modelName": "Falcon 9",
    "providerName": "Acme",
    "inferenceTypesSupported": ["ON_DEMAND"],
    "modelLifecycle": {"status": "ACTIVE"},
}
LEGACY_MODEL = {
    "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/acme.falcon-8-v1:0:128k",
    "modelId": "acme.falcon-8-v1:0:128k",
    "modelName": "Falcon 8",
    "providerName": "Acme",
    "modelLifecycle": {"status": "LEGACY", "endOfLifeTime": datetime(2099, 3, 1, tzinfo=UTC)},
}
PROFILE = {
    "inferenceProfileName": "US Acme Rocket 2",
    "inferenceProfileArn": "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.acme.rocket-2-v1:0",
    "inferenceProfileId": "us.acme.rocket-2-v1:0",
    "models": [{"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/acme.rocket-2-v1:0"},
               {"modelArn": "arn:aws:bedrock:us-west-2::foundation-model/acme.rocket-2-v1:0"}],
    "status": "ACTIVE",
    "type": "SYSTEM_DEFINED",
}


def test_models_launched_after_the_release_are_found_and_priced() -> None:
    known = PriceCatalog.shipped()
    directory = model_directory(known, [NEW_MODEL, LEGACY_MODEL], [{**PROFILE, "models": PROFILE["models"][:1]}])
    entries = _entries(
        product("Falcon 9", "Input tokens", "0.0004", provider="Acme"),
        product("Falcon 9", "Output tokens", "0.0016", provider="Acme"),
        product("Falcon 9", "Input tokens priority", "0.0007", service_tier="priority"),
        product("Falcon 9", "Output tokens priority", "0.0028", service_tier="priority"),
        product("acme.falcon-8-v1:0", "Input tokens", "0.001"),  # some products name the model id
        product("acme.falcon-8-v1:0", "Output tokens", "0.002"),
        product("Acme Rocket 2", "Input tokens", "0.002"),  # known only through its profile's name
        product("Acme Rocket 2", "Output tokens", "0.008"),
    )
    result = RefreshResult(region="us-east-1", catalog=None)
    catalog = build_override(entries, known, "us-east-1", "2026-12-01", result, directory)
    assert catalog is not None
    assert result.new_models == ["acme.falcon-8-v1:0", "acme.falcon-9-v1:0", "acme.rocket-2-v1:0"]
    falcon = catalog.entries["acme.falcon-9-v1:0"]
    assert (falcon.name, falcon.provider, falcon.status) == ("Falcon 9", "Acme", "active")
    assert catalog.entries["acme.falcon-8-v1:0"].status == "legacy"
    assert catalog.entries["acme.falcon-8-v1:0"].end_of_life == "2099-03-01"
    layered = known.layered(PriceCatalog.from_dict(json.loads(json.dumps(catalog.to_dict()))))
    usage = CallUsage(1_000_000, 1_000_000)
    # 0.40 + 1.60 USD per 1M tokens standard; 0.70 + 2.80 priority
    assert layered.rate_card("us.acme.falcon-9-v1:0", region="us-east-1").price(usage).cost_nanos == 2_000_000_000
    priority = layered.rate_card("acme.falcon-9-v1:0", region="us-east-1", tier="priority").price(usage)
    assert priority.cost_nanos == 3_500_000_000 and priority.flags == set()
    assert layered.rate_card("acme.rocket-2-v1:0", region="us-east-1").price(usage).cost_nanos == 10_000_000_000


def test_scoped_prices_refresh_only_their_own_rate_sets() -> None:
    known = PriceCatalog.shipped()
    sonnet = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    entries = _entries(
        product("Claude Sonnet 4.5", "Input tokens", "0.0036"),
        product("Claude Sonnet 4.5", "Output tokens", "0.018"),
        product("Claude Sonnet 4.5", "Input tokens", "0.0032", usagetype="USE1-Claude4.5Sonnet-input-tokens-cross-region-global"),
        product("Claude Sonnet 4.5", "Output tokens", "0.016", usagetype="USE1-Claude4.5Sonnet-output-tokens-cross-region-global"),
    )
    result = RefreshResult(region="eu-west-1", catalog=None)
    catalog = build_override(entries, known, "eu-west-1", "2026-12-01", result)
    assert catalog is not None and set(catalog.entries[sonnet].rates) == {"standard", "global"}
    layered = known.layered(catalog)
    usage = CallUsage(100_000, 0)  # below the 200K long-context threshold
    assert layered.rate_card(sonnet, region="eu-west-1").price(usage).cost_nanos == 360_000_000  # x 3.60 per 1M
    assert layered.rate_card("global." + sonnet, region="eu-west-1").price(usage).cost_nanos == 320_000_000  # x 3.20
    # us-east-1 keeps the shipped figures (3.30 in-region), and the long-context rates stay
    assert layered.rate_card(sonnet, region="us-east-1").price(usage).cost_nanos == 330_000_000
    long = layered.rate_card(sonnet, region="eu-west-1").price(CallUsage(300_000, 0))
    assert long.key.context == "long" and long.cost_nanos == 1_980_000_000  # 300K x 6.60 per 1M
