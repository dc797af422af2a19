"""The usage-type classifier and the billing-name matcher, on the strings AWS bills under."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costguard.pricing.catalog import PriceCatalog
from costguard.reconcile.billing import BilledCosts, billed_by_model, billed_by_workflow, usage_tokens
from costguard.reconcile.model_names import ModelNames, name_words
from costguard.reconcile.usage_types import UNCLASSIFIED, classify

# (usage type, category, kind, marketplace, model, scope, tier, long context, latency, tokens per unit)
CASES = [
    ("USE1-NovaLite-input-tokens", "token", "input", False, "NovaLite", "in_region", "standard", False, False, 1000),
    ("USE1-NovaLite-output-tokens", "token", "output", False, "NovaLite", "in_region", "standard", False, False, 1000),
    ("USE1-Nova2.0Lite-cache-read-input-token-count", "token", "cache_read", False, "Nova2.0Lite", "in_region",
     "standard", False, False, 1000),
    ("USE1-Nova2.0Lite-cache-write-input-token-count", "token", "cache_write_5m", False, "Nova2.0Lite",
     "in_region", "standard", False, False, 1000),
    ("USE1-Claude4Sonnet-input-tokens-long-context-cross-region-global", "token", "input", False, "Claude4Sonnet",
     "global", "standard", True, False, 1000),
    ("USE1-Claude4Sonnet-cache-write-input-token-count-long-context-cross-region-global", "token",
     "cache_write_5m", False, "Claude4Sonnet", "global", "standard", True, False, 1000),
    ("USE1-Nova2.0Lite-input-tokens-cross-region-geo", "token", "input", False, "Nova2.0Lite", "geo", "standard",
     False, False, 1000),
    ("USE1-NovaPro-input-tokens-latency-optimized", "token", "input", False, "NovaPro", "in_region", "standard",
     False, True, 1000),
    ("USE1-Nova2.0Lite-input-tokens-flex", "token", "input", False, "Nova2.0Lite", "in_region", "flex", False,
     False, 1000),
    ("USE1-Qwen3-32B-output-tokens-priority", "token", "output", False, "Qwen3-32B", "in_region", "priority",
     False, False, 1000),
    ("USE1-openai.gpt-oss-120b-mantle-input-tokens-standard", "token", "input", False, "openai.gpt-oss-120b",
     "in_region", "standard", False, False, 1000),
    ("USE1-MP:USE1_InputTokenCount-Units", "token", "input", True, None, "in_region", "standard", False, False,
     1_000_000),
    ("USE1-MP:USE1_OutputTokenCount_Global-Units", "token", "output", True, None, "global", "standard", False,
     False, 1_000_000),
    ("USE1-MP:USE1_CacheReadInputTokenCount_Global-Units", "token", "cache_read", True, None, "global",
     "standard", False, False, 1_000_000),
    ("USE1-MP:USE1_CacheWriteInputTokenCount-Units", "token", "cache_write_5m", True, None, "in_region",
     "standard", False, False, 1_000_000),
    ("USE1-MP:USE1_CacheWrite1hInputTokenCount_Global-Units", "token", "cache_write_1h", True, None, "global",
     "standard", False, False, 1_000_000),
    ("USE1-MP:USE1_input_tokens_global_standard-Units", "token", "input", True, None, "global", "standard", False,
     False, 1_000_000),
    ("USW2-MP:USW2_output_tokens_standard-Units", "token", "output", True, None, "in_region", "standard", False,
     False, 1_000_000),
    # batch is token spend the meter never sees: its own column
    ("USE1-NovaPro-input-tokens-batch", "batch", "input", False, "NovaPro", "in_region", "standard", False, False,
     1000),
    ("USE1-Claude4Sonnet-output-tokens-cross-region-global-batch", "batch", "output", False, "Claude4Sonnet",
     "global", "standard", False, False, 1000),
    ("EU-Qwen3-32B-output-tokens-batch", "batch", "output", False, "Qwen3-32B", "in_region", "standard", False,
     False, 1000),
    ("USE1-MP:USE1_MillionBatchInputTokens-Units", "batch", "input", True, None, "in_region", "standard", False,
     False, 1_000_000),
    ("USE1-TitanEmbeddingsV2-Text-input-tokens", "embeddings", "input", False, "TitanEmbeddingsV2-Text",
     "in_region", "standard", False, False, 1000),
]


@pytest.mark.parametrize(
    ("usage_type", "category", "kind", "marketplace", "model", "scope", "tier", "long_context", "latency", "per_unit"),
    CASES,
)
def test_token_usage_types(usage_type: str, category: str, kind: str, marketplace: bool, model: str | None,
                           scope: str, tier: str, long_context: bool, latency: bool, per_unit: int) -> None:
    cls = classify(usage_type)
    assert (cls.category, cls.kind, cls.marketplace, cls.model) == (category, kind, marketplace, model)
    assert (cls.scope, cls.tier, cls.long_context, cls.latency_optimized) == (scope, tier, long_context, latency)
    assert cls.tokens_per_unit == per_unit
    assert cls.batch == (category == "batch")
    assert cls.region == usage_type.split("-")[0]


@pytest.mark.parametrize(
    ("usage_type", "category"),
    [
        ("USE1-Claude4Sonnet-reserved-1-month-input-tokens-per-minute-cross-region-global", "provisioned"),
        ("USE1-NovaPro-ModelUnits-NoCommit", "provisioned"),
        ("USE1-NovaLite-customization-training", "customization"),
        ("USE1-KnowledgeBase-StructuredData-Queries", "knowledge_base"),
        ("USE1-Rerank-SearchUnits", "knowledge_base"),
        ("USE1-Guardrail-ContentPolicyUnitsConsumed", "guardrails"),
        ("USE1-Flows-NodeTransitions", "flows"),
        ("USE1-NovaCanvas-output-image-count", "images"),
        ("USE1-AgentCore-Runtime-vCPU-Hours", "agentcore"),
        ("USE1-AgentCore-Gateway-InvokeTool-input-tokens", "agentcore"),  # AgentCore first, whatever it says
        ("USE1-NovaLite-input-tokens-wormhole", UNCLASSIFIED),  # an unknown qualifier: never guessed
        ("USE1-MP:USE1_SomethingNew-Units", UNCLASSIFIED),
        ("", UNCLASSIFIED),
        ("USE1-MP:", UNCLASSIFIED),
        ("USE1-MP:USE1_-Units", UNCLASSIFIED),
        ("-input-tokens", UNCLASSIFIED),
        ("USE1-Növa\u202eLite-input-tokens-\x00", UNCLASSIFIED),
        ("USE1-" + "x" * 10_000, UNCLASSIFIED),
    ],
)
def test_non_token_and_unclassified_usage_types(usage_type: str, category: str) -> None:
    cls = classify(usage_type)
    assert cls.category == category
    assert cls.kind is None and cls.tokens_per_unit == 0


def test_quantities_become_tokens_in_the_unit_of_the_usage_type() -> None:
    # first-party quantities count thousands of tokens, Marketplace "Units" millions
    assert usage_tokens(classify("USE1-NovaLite-input-tokens"), Decimal("12.345")) == 12_345
    assert usage_tokens(classify("USE1-MP:USE1_InputTokenCount-Units"), Decimal("0.0955")) == 95_500
    assert usage_tokens(classify("USE1-Guardrail-ContentPolicyUnitsConsumed"), Decimal("7")) == 0


def test_billing_names_match_catalog_names_by_their_words() -> None:
    names = ModelNames(PriceCatalog.shipped())
    assert name_words("Claude4Sonnet") == name_words("Claude Sonnet 4") == ("4", "claude", "sonnet")
    assert name_words("Nova2.0Lite") == ("2", "lite", "nova")
    assert names.resolve("NovaLite") == "amazon.nova-lite-v1:0"
    assert names.resolve("Claude4Sonnet") == "anthropic.claude-sonnet-4-20250514-v1:0"
    assert names.resolve("Claude3.5SonnetV2") == "anthropic.claude-3-5-sonnet-20241022-v2:0"
    assert names.resolve("Claude 3 Haiku (Amazon Bedrock Edition)") == "anthropic.claude-3-haiku-20240307-v1:0"
    assert names.resolve("Claude 3.5 Haiku (Amazon Bedrock Edition)") == "anthropic.claude-3-5-haiku-20241022-v1:0"
    # model ids in usage types are normalised as the meter normalises them, priced or not
    assert names.resolve("openai.gpt-oss-120b") == "openai.gpt-oss-120b"
    assert names.resolve("amazon.nova-lite-v1:0") == "amazon.nova-lite-v1:0"
    assert names.resolve("Claude Sonnet 4.5 (Amazon Bedrock Edition)") == "anthropic.claude-sonnet-4-5-20250929-v1:0"
    # a name the catalog does not know is kept as it is billed, never merged into another model
    assert names.resolve("Nova2.0Lite") == "billing:Nova2.0Lite"
    assert names.resolve("Claude Opus 9 (Amazon Bedrock Edition)") == "billing:Claude Opus 9"


def test_per_model_spend_joins_marketplace_services_and_first_party_names() -> None:
    day = "2026-11-20"
    costs = BilledCosts(
        usage={
            ("Claude 3 Haiku (Amazon Bedrock Edition)", day, "USE1-MP:USE1_InputTokenCount-Units"):
                (Decimal("0.25"), Decimal("1")),
            ("Claude 3 Haiku (Amazon Bedrock Edition)", day, "USE1-MP:USE1_CacheWrite1hInputTokenCount_Global-Units"):
                (Decimal("0.5"), Decimal("1")),
            ("Amazon Bedrock", day, "USE1-NovaLite-input-tokens"): (Decimal("0.06"), Decimal("1000")),
            ("Amazon Bedrock", day, "USE1-NovaLite-input-tokens-batch"): (Decimal("0.03"), Decimal("1000")),
            ("Amazon Bedrock AgentCore", day, "USE1-AgentCore-Runtime-vCPU-Hours"): (Decimal("2"), Decimal("10")),
            ("Amazon Bedrock", day, "USE1-Mystery-thing"): (Decimal("0.01"), Decimal("1")),
        },
        days={day},
    )
    billed = billed_by_model(costs, ModelNames(PriceCatalog.shipped()))
    haiku = billed.cells[("anthropic.claude-3-haiku-20240307-v1:0", day)]
    assert dict(haiku.token_usd) == {"input": Decimal("0.25"), "cache_write": Decimal("0.5")}
    assert dict(haiku.tokens) == {"input": 1_000_000, "cache_write": 1_000_000}
    nova = billed.cells[("amazon.nova-lite-v1:0", day)]
    assert nova.token_total == Decimal("0.06") and nova.other("batch") == Decimal("0.03")
    assert billed.cells[("Amazon Bedrock AgentCore", day)].other("agentcore") == Decimal("2")
    assert dict(billed.unclassified) == {"USE1-Mystery-thing": Decimal("0.01")}


def test_several_tag_keys_attribute_each_dollar_once() -> None:
    day = "2026-11-20"
    first = BilledCosts(usage={
        ("claims", day, "USE1-NovaLite-input-tokens"): (Decimal("1"), Decimal("1")),
        ("(untagged)", day, "USE1-NovaLite-input-tokens"): (Decimal("3"), Decimal("3")),  # broken down below
    }, days={day})
    second = BilledCosts(usage={
        ("search", day, "USE1-NovaLite-input-tokens"): (Decimal("2"), Decimal("2")),
        ("(untagged)", day, "USE1-NovaLite-input-tokens"): (Decimal("1"), Decimal("1")),
    }, days={day})
    billed = billed_by_workflow([("costguard:workflow", first), ("iamPrincipal/team", second)])
    assert {k: c.token_total for (k, _), c in billed.cells.items()} == {
        "claims": Decimal("1"), "search": Decimal("2"), "(untagged)": Decimal("1"),
    }
    assert billed.sources == {"claims": "tag:costguard:workflow", "search": "tag:iamPrincipal/team",
                              "(untagged)": "untagged"}
