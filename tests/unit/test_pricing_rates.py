"""Rate cards priced from the shipped catalog: every dimension, exact to the nano-dollar.

Expected costs are written as arithmetic on the published USD-per-1M-token prices (the figures in
the shipped data file, whose sources it names: AWS's Bedrock pricing page and Price List offer
files as carried by litellm 1.110.2, cross-checked against genai-prices), never computed by the
code under test.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

from costguard.errors import PricingError
from costguard.pricing import PriceCatalog
from costguard.pricing.catalog import is_prompt_router, scope_of
from costguard.pricing.key import KNOWN_FLAGS, CallUsage, PriceKey


@pytest.fixture(scope="module")
def shipped() -> PriceCatalog:
    return PriceCatalog.shipped()


def nanos(*terms: tuple[int, str]) -> int:
    """sum(tokens x USD per 1M tokens) in nano-dollars, rounded half-even once."""
    usd_per_million = sum((Decimal(tokens) * Decimal(price) for tokens, price in terms), Decimal(0))
    return int((usd_per_million * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


def U(i: int = 0, o: int = 0, read: int = 0, w5: int = 0, w1: int = 0) -> CallUsage:  # noqa: N802
    return CallUsage(i, o, read, w5, w1)


SONNET_45 = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SONNET_46 = "anthropic.claude-sonnet-4-6"
HAIKU_45 = "anthropic.claude-haiku-4-5-20251001-v1:0"
OPUS_46 = "anthropic.claude-opus-4-6-v1"
FALLBACK_IN, FALLBACK_OUT = "27.5", "137.5"  # the highest catalog rates: Claude Mythos Preview
NONE: frozenset[str] = frozenset()

# (model id as a caller sends it, region, tier, latency, usage, [(tokens, USD per 1M)], flags, scope, context)
CASES: list[tuple[str, str, str, bool, CallUsage, list[tuple[int, str]], frozenset[str], str, str]] = [
    # -- Anthropic: in-region and geo cost 10% more than global from Sonnet 4.5 / Haiku 4.5 / Opus 4.5 on
    (SONNET_45, "us-east-1", "standard", False, U(1000, 500), [(1000, "3.30"), (500, "16.50")], NONE, "in_region", "standard"),
    ("us." + SONNET_45, "us-east-1", "standard", False, U(1000, 500), [(1000, "3.30"), (500, "16.50")], NONE, "geo", "standard"),
    ("global." + SONNET_45, "us-east-1", "standard", False, U(1000, 500), [(1000, "3.00"), (500, "15.00")], NONE, "global", "standard"),
    ("eu." + SONNET_45, "eu-central-1", "standard", False, U(1000, 500), [(1000, "3.30"), (500, "16.50")], NONE, "geo", "standard"),
    ("jp." + SONNET_45, "ap-northeast-1", "standard", False, U(2000, 10), [(2000, "3.30"), (10, "16.50")], NONE, "geo", "standard"),
    # long context: above 200K input + cache tokens the whole call moves to the long rates
    (SONNET_45, "us-east-1", "standard", False, U(210_000, 1000), [(210_000, "6.60"), (1000, "24.75")], NONE, "in_region", "long"),
    ("global." + SONNET_45, "us-west-2", "standard", False, U(150_000, 100, read=60_000),
     [(150_000, "6.00"), (100, "22.50"), (60_000, "0.60")], NONE, "global", "long"),
    ("global." + SONNET_45, "us-east-1", "standard", False, U(140_000, 100, read=60_000),
     [(140_000, "3.00"), (100, "15.00"), (60_000, "0.30")], NONE, "global", "standard"),  # exactly 200K: standard
    (SONNET_45, "us-east-1", "standard", False, U(190_000, 0, w1=20_000), [(190_000, "6.60"), (20_000, "13.20")], NONE, "in_region", "long"),
    # cache writes: 5-minute at 1.25x input, 1-hour at 2x
    ("global." + SONNET_46, "us-east-1", "standard", False, U(100, 10, w1=10_000), [(100, "3.00"), (10, "15.00"), (10_000, "6.00")], NONE, "global", "standard"),
    (SONNET_46, "eu-west-1", "standard", False, U(100, 10, w5=10_000), [(100, "3.30"), (10, "16.50"), (10_000, "4.125")], NONE, "in_region", "standard"),
    ("us." + HAIKU_45, "us-east-1", "standard", False, U(50, 20, read=5000, w5=3000, w1=1000),
     [(50, "1.10"), (20, "5.50"), (5000, "0.11"), (3000, "1.375"), (1000, "2.20")], NONE, "geo", "standard"),
    (OPUS_46, "us-east-1", "standard", False, U(1000, 1000), [(1000, "5.50"), (1000, "27.50")], NONE, "in_region", "standard"),
    ("global." + OPUS_46, "eu-west-1", "standard", False, U(1000, 1000), [(1000, "5.00"), (1000, "25.00")], NONE, "global", "standard"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/global." + HAIKU_45, "us-east-1", "standard", False,
     U(1000, 100), [(1000, "1.00"), (100, "5.00")], NONE, "global", "standard"),
    ("arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0", "us-west-2", "standard", False,
     U(1000, 100, read=2000, w5=400), [(1000, "3.00"), (100, "15.00"), (2000, "0.30"), (400, "3.75")], NONE, "in_region", "standard"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "us-east-1", "standard", False, U(4000, 300), [(4000, "0.25"), (300, "1.25")], NONE, "in_region", "standard"),
    # a retired model still prices (Claude Sonnet 4, end of life 2026-10-14), long context included
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "us-east-1", "standard", False, U(250_000, 2000),
     [(250_000, "6.00"), (2000, "22.50")], NONE, "geo", "long"),
    # -- Amazon Nova: regional prices differ; priority and flex tiers
    ("amazon.nova-pro-v1:0", "us-east-1", "standard", False, U(10_000, 1000, read=5000), [(10_000, "0.80"), (1000, "3.20"), (5000, "0.20")], NONE, "in_region", "standard"),
    ("eu.amazon.nova-pro-v1:0", "eu-central-1", "standard", False, U(10_000, 1000), [(10_000, "1.05"), (1000, "4.20")], NONE, "geo", "standard"),
    ("amazon.nova-pro-v1:0", "us-east-1", "priority", False, U(10_000, 1000), [(10_000, "1.40"), (1000, "5.60")], NONE, "in_region", "standard"),
    ("amazon.nova-pro-v1:0", "us-east-1", "flex", False, U(10_000, 1000), [(10_000, "0.40"), (1000, "1.60")], NONE, "in_region", "standard"),
    ("us.amazon.nova-2-lite-v1:0", "us-east-1", "standard", False, U(10_000, 1000), [(10_000, "0.33"), (1000, "2.75")], NONE, "geo", "standard"),
    ("global.amazon.nova-2-lite-v1:0", "us-east-1", "standard", False, U(10_000, 1000), [(10_000, "0.30"), (1000, "2.50")], NONE, "global", "standard"),
    ("global.amazon.nova-2-lite-v1:0", "us-east-1", "priority", False, U(10_000, 1000), [(10_000, "0.525"), (1000, "4.375")], NONE, "global", "standard"),
    ("jp.amazon.nova-2-lite-v1:0", "ap-northeast-1", "standard", False, U(10_000, 1000), [(10_000, "0.396"), (1000, "3.311")], NONE, "geo", "standard"),
    ("amazon.nova-micro-v1:0", "us-east-1", "standard", False, U(1, 1), [(1, "0.035"), (1, "0.14")], NONE, "in_region", "standard"),
    # half-even rounding, once per call: 2 x 0.00875 = 17.5 nano -> 18; 6 x 0.00875 = 52.5 -> 52
    ("amazon.nova-micro-v1:0", "us-east-1", "standard", False, U(read=2), [(2, "0.00875")], NONE, "in_region", "standard"),
    ("amazon.nova-micro-v1:0", "us-east-1", "standard", False, U(read=6), [(6, "0.00875")], NONE, "in_region", "standard"),
    ("us.amazon.nova-lite-v1:0", "us-west-2", "standard", False, U(3000, 700), [(3000, "0.06"), (700, "0.24")], NONE, "geo", "standard"),
    # -- Meta Llama
    ("meta.llama3-3-70b-instruct-v1:0", "us-east-1", "standard", False, U(5000, 5000), [(5000, "0.72"), (5000, "0.72")], NONE, "in_region", "standard"),
    ("us.meta.llama4-maverick-17b-instruct-v1:0", "us-west-2", "standard", False, U(5000, 500), [(5000, "0.24"), (500, "0.97")], NONE, "geo", "standard"),
    ("meta.llama3-70b-instruct-v1:0", "eu-west-1", "standard", False, U(5000, 500), [(5000, "2.86"), (500, "3.78")], NONE, "in_region", "standard"),
    # -- Mistral
    ("mistral.mistral-large-3-675b-instruct", "us-east-1", "standard", False, U(8000, 800), [(8000, "0.50"), (800, "1.50")], NONE, "in_region", "standard"),
    ("mistral.mistral-large-3-675b-instruct", "us-east-1", "flex", False, U(8000, 800), [(8000, "0.25"), (800, "0.75")], NONE, "in_region", "standard"),
    ("eu.mistral.pixtral-large-2502-v1:0", "eu-central-1", "standard", False, U(8000, 800), [(8000, "2.00"), (800, "6.00")], NONE, "geo", "standard"),
    ("mistral.ministral-3-8b-instruct", "us-east-1", "priority", False, U(8000, 800), [(8000, "0.26"), (800, "0.26")], NONE, "in_region", "standard"),
    # -- DeepSeek
    ("deepseek.v3.2", "us-east-1", "standard", False, U(7000, 900), [(7000, "0.62"), (900, "1.85")], NONE, "in_region", "standard"),
    ("deepseek.v3.2", "ap-northeast-1", "standard", False, U(7000, 900), [(7000, "0.74"), (900, "2.22")], NONE, "in_region", "standard"),
    ("deepseek.v3.2", "us-west-2", "priority", False, U(7000, 900), [(7000, "1.085"), (900, "3.2375")], NONE, "in_region", "standard"),
    ("us.deepseek.r1-v1:0", "us-east-1", "standard", False, U(7000, 900), [(7000, "1.35"), (900, "5.40")], NONE, "geo", "standard"),
    ("deepseek.v3-v1:0", "us-east-1", "standard", False, U(7000, 900), [(7000, "0.58"), (900, "1.68")], NONE, "in_region", "standard"),
    # -- OpenAI gpt-oss and GPT (long context above 272K)
    ("openai.gpt-oss-120b-1:0", "us-east-1", "standard", False, U(9000, 3000), [(9000, "0.15"), (3000, "0.60")], NONE, "in_region", "standard"),
    ("openai.gpt-oss-20b-1:0", "us-east-1", "flex", False, U(9000, 3000), [(9000, "0.035"), (3000, "0.15")], NONE, "in_region", "standard"),
    ("openai.gpt-oss-120b-1:0", "us-east-1", "priority", False, U(9000, 3000), [(9000, "0.2625"), (3000, "1.05")], NONE, "in_region", "standard"),
    ("global.openai.gpt-5.4", "us-east-1", "standard", False, U(300_000, 1000), [(300_000, "5.00"), (1000, "22.50")], NONE, "global", "long"),
    # -- Qwen
    ("qwen.qwen3-32b-v1:0", "us-east-1", "standard", False, U(6000, 600), [(6000, "0.15"), (600, "0.60")], NONE, "in_region", "standard"),
    ("qwen.qwen3-coder-480b-a35b-v1:0", "us-east-1", "standard", False, U(6000, 600), [(6000, "0.45"), (600, "1.80")], NONE, "in_region", "standard"),
    ("qwen.qwen3-32b-v1:0", "us-east-1", "flex", False, U(6000, 600), [(6000, "0.075"), (600, "0.30")], NONE, "in_region", "standard"),
    # -- the rest of today's catalog
    ("google.gemma-3-27b-it", "us-east-1", "standard", False, U(6000, 600), [(6000, "0.23"), (600, "0.38")], NONE, "in_region", "standard"),
    ("minimax.minimax-m2.5", "eu-west-1", "standard", False, U(6000, 600), [(6000, "0.36"), (600, "1.44")], NONE, "in_region", "standard"),
    ("moonshotai.kimi-k2.5", "us-east-1", "standard", False, U(6000, 600), [(6000, "0.60"), (600, "3.00")], NONE, "in_region", "standard"),
    ("zai.glm-5", "us-east-1", "flex", False, U(6000, 600), [(6000, "0.50"), (600, "1.60")], NONE, "in_region", "standard"),
    ("nvidia.nemotron-super-3-120b", "us-east-1", "standard", False, U(6000, 600), [(6000, "0.15"), (600, "0.65")], NONE, "in_region", "standard"),
    ("us.writer.palmyra-x5-v1:0", "us-west-2", "standard", False, U(6000, 600), [(6000, "0.60"), (600, "6.00")], NONE, "geo", "standard"),
    # -- dimensions a model does not price on: base rate, flagged
    (SONNET_46, "us-east-1", "priority", False, U(1000, 100), [(1000, "3.30"), (100, "16.50")], frozenset({"tier_assumed"}), "in_region", "standard"),
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "us-east-2", "standard", True, U(1000, 100), [(1000, "0.80"), (100, "4.00")],
     frozenset({"latency_assumed", "region_assumed"}), "geo", "standard"),
    ("global.meta.llama3-3-70b-instruct-v1:0", "us-east-1", "standard", False, U(1000, 100), [(1000, "0.72"), (100, "0.72")],
     frozenset({"scope_assumed"}), "global", "standard"),
    ("qwen.qwen3-32b-v1:0", "eu-central-1", "standard", False, U(1000, 100), [(1000, "0.15"), (100, "0.60")], frozenset({"region_assumed"}), "in_region", "standard"),
    ("openai.gpt-oss-120b-1:0", "us-east-1", "turbo", False, U(1000, 100), [(1000, "0.15"), (100, "0.60")], frozenset({"tier_assumed"}), "in_region", "standard"),
    # -- nothing is ever $0 and nothing raises: unknown ids, unparseable ARNs, routers
    ("acme.brand-new-model-v1:0", "us-east-1", "standard", False, U(1000, 100), [(1000, FALLBACK_IN), (100, FALLBACK_OUT)], frozenset({"unpriced"}), "in_region", "standard"),
    ("arn:aws:bedrock:us-east-1:123456789012:nonsense/x", "us-east-1", "standard", False, U(1000, 100), [(1000, FALLBACK_IN), (100, FALLBACK_OUT)], frozenset({"unpriced"}), "in_region", "standard"),
    ("arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/anthropic.claude:1", "us-east-1", "standard", False, U(1000, 100),
     [(1000, FALLBACK_IN), (100, FALLBACK_OUT)], frozenset({"unpriced"}), "in_region", "standard"),
    ("arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1b2c3", "eu-west-1", "standard", False, U(1000, 100),
     [(1000, FALLBACK_IN), (100, FALLBACK_OUT)], frozenset({"unpriced"}), "in_region", "standard"),
    ("", "us-east-1", "standard", False, U(1000, 100), [(1000, FALLBACK_IN), (100, FALLBACK_OUT)], frozenset({"unpriced"}), "in_region", "standard"),
]


@pytest.mark.parametrize(
    ("model_id", "region", "tier", "latency", "usage", "terms", "flags", "scope", "context"),
    CASES,
    ids=[f"{c[0][:60]}|{c[1]}|{c[2]}{'|lat' if c[3] else ''}|{i}" for i, c in enumerate(CASES)],
)
def test_priced_exactly(
    shipped: PriceCatalog,
    model_id: str,
    region: str,
    tier: str,
    latency: bool,
    usage: CallUsage,
    terms: list[tuple[int, str]],
    flags: frozenset[str],
    scope: str,
    context: str,
) -> None:
    card = shipped.rate_card(model_id, region=region, tier=tier, latency_optimized=latency)
    priced = card.price(usage)
    assert priced.cost_nanos == nanos(*terms)
    assert priced.cost_nanos > 0
    assert priced.flags == flags
    assert priced.flags <= KNOWN_FLAGS
    key = priced.key
    assert (key.region, key.scope, key.context) == (region, scope, context)
    assert key.tier == (tier if tier in ("standard", "priority", "flex") else "standard")
    assert key.latency_optimized is latency
    assert key.cache_ttl == usage.cache_ttl
    assert PriceKey.parse(key.label()) == key
    # The meter's hot path prices the same call without building objects: the same cost, key, flags.
    assert card.cost_of(
        usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
    ) == (priced.cost_nanos, key.label(), priced.flags)


def test_the_table_covers_what_the_issue_asks(shipped: PriceCatalog) -> None:
    assert len(CASES) >= 40
    providers = {shipped.rate_card(c[0], region=c[1]).provider for c in CASES}
    assert {"Anthropic", "Amazon", "Meta", "Mistral AI", "DeepSeek", "OpenAI", "Qwen"} <= providers
    scopes = {c[7] for c in CASES}
    assert scopes == {"in_region", "geo", "global"}
    assert {c[8] for c in CASES} == {"standard", "long"}
    assert {c[2] for c in CASES} >= {"standard", "priority", "flex"}


def test_geo_and_in_region_cost_ten_percent_more_than_global(shipped: PriceCatalog) -> None:
    usage = U(1_000_000, 1_000_000)
    for model in (SONNET_45, SONNET_46, HAIKU_45, OPUS_46, "anthropic.claude-opus-4-5-20251101-v1:0"):
        global_cost = shipped.rate_card("global." + model, region="us-east-1").price(usage).cost_nanos
        for prefix in ("", "us.", "eu."):
            regional = shipped.rate_card(prefix + model, region="us-east-1").price(usage).cost_nanos
            assert regional * 10 == global_cost * 11, prefix + model


def test_cards_are_memoised_and_immutable(shipped: PriceCatalog) -> None:
    card = shipped.rate_card(SONNET_45, region="us-east-1", tier="standard")
    assert shipped.rate_card(SONNET_45, region="us-east-1", tier="standard") is card
    assert shipped.rate_card(SONNET_45, region="us-west-2") is not card
    with pytest.raises(AttributeError):
        card.priced = False  # type: ignore[misc]


def test_extra_flags_are_merged_into_the_priced_call(shipped: PriceCatalog) -> None:
    card = shipped.rate_card("qwen.qwen3-32b-v1:0", region="eu-central-1")
    priced = card.price(U(10, 10), frozenset({"estimated"}))
    assert priced.flags == {"estimated", "region_assumed"}
    assert not priced.priced or "unpriced" not in priced.flags


@pytest.mark.parametrize(
    "model_id",
    ["   ", "arn:", "arn:aws:bedrock:::", "us.", "global.", "x" * 5000, "模型", "anthropic.claude\x00", ":::", "..."],
)
def test_no_string_makes_a_card_raise_or_cost_nothing(shipped: PriceCatalog, model_id: str) -> None:
    card = shipped.rate_card(model_id, region="us-east-1")
    assert not card.priced and "unpriced" in card.flags
    assert card.price(U(1, 1)).cost_nanos > 0


def test_blank_region_prices_at_the_catalog_region_flagged(shipped: PriceCatalog) -> None:
    card = shipped.rate_card("amazon.nova-pro-v1:0", region="")
    priced = card.price(U(1000, 0))
    assert priced.cost_nanos == nanos((1000, "0.80")) and priced.flags == {"region_assumed"}
    assert priced.key.region == "us-east-1"


def test_estimate_uses_the_band_the_input_alone_reaches(shipped: PriceCatalog) -> None:
    card = shipped.rate_card(SONNET_45, region="us-east-1")
    assert card.estimate_nanos(1000, 1000) == nanos((1000, "3.30"), (1000, "16.50"))
    assert card.estimate_nanos(300_000, 1000) == nanos((300_000, "6.60"), (1000, "24.75"))


def test_a_first_version_suffix_finds_the_unversioned_id(shipped: PriceCatalog) -> None:
    # Sources list some models without Bedrock's `-v1:0` suffix; callers may send either form.
    for sent in ("qwen.qwen3-vl-235b-a22b", "qwen.qwen3-vl-235b-a22b-v1:0", "us.qwen.qwen3-vl-235b-a22b-v1:0"):
        card = shipped.rate_card(sent, region="us-east-1")
        assert card.priced and card.base_model_id == "qwen.qwen3-vl-235b-a22b", sent
        assert card.price(U(1000, 1000)).cost_nanos == nanos((1000, "0.53"), (1000, "2.66"))
    assert not shipped.rate_card("qwen.qwen3-vl-235b-a22b-v2:0", region="us-east-1").priced


def test_scope_and_router_detection() -> None:
    assert scope_of("global.anthropic.claude-sonnet-4-6") == "global"
    assert scope_of("us-gov.anthropic.claude-sonnet-4-6") == "geo"
    assert scope_of("apac.amazon.nova-pro-v1:0") == "geo"
    assert scope_of("amazon.nova-pro-v1:0") == "in_region"
    assert scope_of("arn:aws:bedrock:us-east-1:1:inference-profile/eu.amazon.nova-pro-v1:0") == "geo"
    assert scope_of("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0") == "in_region"
    assert is_prompt_router("arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/meta.llama:1")
    assert is_prompt_router("arn:aws:bedrock:us-east-1:123456789012:prompt-router/abcd1234")
    assert not is_prompt_router("amazon.nova-pro-v1:0")


# -- guardrails ------------------------------------------------------------------------------------


def guardrail_nanos(*terms: tuple[int, str]) -> int:
    """sum(units x USD per 1,000 units) in nano-dollars, rounded half-even once."""
    usd_per_thousand = sum((Decimal(units) * Decimal(price) for units, price in terms), Decimal(0))
    return int((usd_per_thousand * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def test_guardrail_units_are_priced_per_policy_type(shipped: PriceCatalog) -> None:
    # An ApplyGuardrail `usage` (botocore bedrock-runtime GuardrailUsage), every field set.
    usage = {
        "topicPolicyUnits": 2,
        "contentPolicyUnits": 3,
        "wordPolicyUnits": 5,
        "sensitiveInformationPolicyUnits": 4,
        "sensitiveInformationPolicyFreeUnits": 7,
        "contextualGroundingPolicyUnits": 1,
        "contentPolicyImageUnits": 2,
        "automatedReasoningPolicyUnits": 6,
        "automatedReasoningPolicies": 1,
    }
    priced = shipped.guardrail_card("us-east-1").price(usage)
    # content/topics 0.15, sensitive information 0.10, grounding 0.10, automated reasoning 0.17,
    # images 0.00075 each (0.75 per 1,000); word filters and regex entities are free.
    assert priced.cost_nanos == guardrail_nanos((2, "0.15"), (3, "0.15"), (4, "0.10"), (1, "0.10"), (2, "0.75"), (6, "0.17"))
    assert priced.flags == set() and priced.key.model == "guardrail" and priced.key.region == "us-east-1"


def test_guardrail_regions_without_a_figure_are_flagged(shipped: PriceCatalog) -> None:
    priced = shipped.guardrail_card("eu-west-1").price({"contentPolicyUnits": 1})
    assert priced.cost_nanos == guardrail_nanos((1, "0.15")) and priced.flags == {"region_assumed"}
    assert shipped.guardrail_card("eu-west-1") is shipped.guardrail_card("eu-west-1")


def test_guardrail_unknown_and_bad_counts(shipped: PriceCatalog) -> None:
    card = shipped.guardrail_card("us-east-1")
    unknown = card.price({"contentPolicyUnits": 1, "futurePolicyUnits": 2})
    assert unknown.cost_nanos == guardrail_nanos((1, "0.15"), (2, "0.75")) and unknown.flags == {"unpriced"}
    bad = card.price({"contentPolicyUnits": -4, "topicPolicyUnits": True, "wordPolicyUnits": "9"})
    assert bad.cost_nanos == 0 and bad.flags == {"usage_suspect"}


# -- the data file and its formats -----------------------------------------------------------------


def test_every_model_names_its_sources_and_lifecycle(shipped: PriceCatalog) -> None:
    assert {"litellm", "genai-prices"} <= set(shipped.sources)
    for model_id, entry in shipped.entries.items():
        assert entry.sources, model_id
        assert entry.status in ("active", "legacy", "retired"), model_id
        if entry.status != "active":
            assert entry.end_of_life, model_id
        for rates in entry.rates.values():
            assert rates.input > 0 or "embed" in model_id, model_id
    retired = [m for m, e in shipped.entries.items() if e.status == "retired"]
    assert "anthropic.claude-sonnet-4-20250514-v1:0" in retired


def _v2(models: dict[str, Any]) -> dict[str, Any]:
    return {"format": 2, "source": "t", "retrieved": "2026-12-01", "region": "us-east-1", "models": models}


def test_long_context_without_a_long_rate_for_the_tier_is_flagged() -> None:
    catalog = PriceCatalog.from_dict(
        _v2(
            {
                "x.model-v1:0": {
                    "name": "X",
                    "long_context_threshold": 1000,
                    "rates": {
                        "standard": {"input": "1", "output": "2"},
                        "long": {"input": "2", "output": "4"},
                        "priority": {"input": "3", "output": "6"},
                    },
                    "sources": ["test"],
                }
            }
        )
    )
    priority = catalog.rate_card("x.model-v1:0", region="us-east-1", tier="priority")
    assert priority.price(U(500, 10)).flags == set()
    long = priority.price(U(2000, 10))
    assert long.cost_nanos == nanos((2000, "3"), (10, "6"))
    assert long.flags == {"long_context_assumed"} and long.key.context == "long"
    standard = catalog.rate_card("x.model-v1:0", region="us-east-1").price(U(2000, 10))
    assert standard.cost_nanos == nanos((2000, "2"), (10, "4")) and standard.flags == set()


def test_a_format1_override_replaces_only_the_standard_rates(tmp_path: Path, shipped: PriceCatalog) -> None:
    override = {
        "source": "AWS Price List API",
        "retrieved": "2026-12-02",
        "region": "us-east-1",
        "models": {SONNET_45: {"input": "3.50", "output": "17.00"}},
    }
    path = tmp_path / "pricing.json"
    path.write_text(json.dumps(override), encoding="utf-8")
    catalog = PriceCatalog.load(path)
    assert catalog.rate_card(SONNET_45, region="us-east-1").price(U(1000, 0)).cost_nanos == nanos((1000, "3.50"))
    # the global and long-context rates and the name are kept
    assert catalog.rate_card("global." + SONNET_45, region="us-east-1").price(U(1000, 0)).cost_nanos == nanos((1000, "3.00"))
    assert catalog.entries[SONNET_45].name == "Claude Sonnet 4.5"
    assert catalog.entries[SONNET_45].long_context_threshold == 200_000
    assert catalog.to_dict()["format"] == 2


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"rates": {"long": {"input": "1", "output": "1"}}}, "'standard' rate set is required"),
        ({"rates": {"standard": {"input": "1", "output": "1"}, "long+global": {"input": "1", "output": "1"}}}, "not a rate set name"),
        ({"rates": {"standard": {"input": "1", "output": "1", "cache_write": "1"}}}, "unknown field"),
        ({"rates": {"standard": {"input": "1", "output": "1"}}, "regions": {"moon-base-1x": "same"}}, "not a region name"),
        ({"rates": {"standard": {"input": "1", "output": "1"}}, "status": "sunset"}, "status"),
        ({"rates": {"standard": {"input": "1", "output": "1"}}, "end_of_life": "next year"}, "end_of_life"),
        ({"rates": {"standard": {"input": "1", "output": "1"}}, "long_context_threshold": 0}, "long_context_threshold"),
        ({"rates": {"standard": {"input": "0.0000000001", "output": "1"}}}, "9 decimals"),
    ],
)
def test_malformed_format2_entries_are_refused(entry: dict[str, Any], needle: str) -> None:
    with pytest.raises(PricingError, match=needle):
        catalog = PriceCatalog.from_dict(_v2({"x.model-v1:0": entry}), origin="t.json")
        catalog.rate_card("x.model-v1:0", region="us-east-1").price(U(1, 1))
