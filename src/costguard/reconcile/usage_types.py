"""What a Cost Explorer ``USAGE_TYPE`` string says: region, edition, model, token kind, scope, tier.

Cost Explorer returns Bedrock spend per usage type. Two grammars are in use (sources below,
checked 2026-12-01):

* **First-party** (Price List service code ``AmazonBedrock``, pricing unit ``1K tokens``)::

      USE1-NovaLite-input-tokens
      USE1-Nova2.0Lite-cache-read-input-token-count
      USE1-Claude4Sonnet-output-tokens-long-context-cross-region-global
      USE1-NovaPro-input-tokens-latency-optimized
      USE1-Nova2.0Lite-input-tokens-flex          (also -priority, -standard)
      USE1-NovaPro-input-tokens-batch             (also -cross-region-global-batch)
      EU-Qwen3-32B-output-tokens-batch            (a geo billing prefix)
      USE1-openai.gpt-oss-120b-mantle-input-tokens-standard

  ``<region>-<model>-<kind>[-<qualifier>...]`` where kind is ``input-tokens``,
  ``output-tokens``, ``cache-read-input-token-count`` or ``cache-write-input-token-count``.

* **Marketplace editions** (Price List service code ``AmazonBedrockFoundationModels``, billed
  under a service named ``<model> (Amazon Bedrock Edition)``, pricing unit ``1M tokens``)::

      USE1-MP:USE1_InputTokenCount-Units
      USE1-MP:USE1_CacheReadInputTokenCount_Global-Units
      USE1-MP:USE1_CacheWrite1hInputTokenCount_Global-Units
      USE1-MP:USE1_input_tokens_global_standard-Units

  The usage type does not name the model: the service name does.

``UsageQuantity`` is in the pricing unit of the usage type, so :attr:`UsageClass.tokens_per_unit`
turns it into tokens (first-party 1,000; Marketplace 1,000,000).

Sources:

* AWS, "Understanding your Amazon Bedrock Cost and Usage Report data",
  https://docs.aws.amazon.com/bedrock/latest/userguide/cost-mgmt-understanding-cur-data.html
  (token-type patterns ``*-input-tokens``, ``*-output-tokens``, ``*-cache-read-input-token-count``,
  ``*-cache-write-input-token-count``, ``*-mantle-input-tokens-*``; tier and cross-region
  routing are part of the usage type).
* AWS Price List API, service codes ``AmazonBedrock`` and ``AmazonBedrockFoundationModels``:
  the ``usagetype`` attribute of on-demand, batch, flex/priority, latency-optimized,
  long-context and cross-region products, and their ``unit`` (``1K tokens`` / ``1M tokens``).
* AWS re:Invent 2025 COP401, ``BedrockCostAllocation.sql`` (github.com/awssteph/reinvent25-cop401):
  CUR 2.0 query noting Marketplace usage types such as ``USW2-MP:USW2_InputTokenCount-Units``.
* Cloud Intelligence Dashboards, CUDOS 5.3 changelog (github.com/aws-samples/
  aws-cudos-framework-deployment): "Amazon Bedrock spend per UsageType Group" splits Bedrock
  spend into image generation, input tokens, output tokens, model units (provisioned
  throughput) and model customization, the non-token columns below.

Anything the tables below do not recognise is ``unclassified``: it is reported with its cost,
never dropped and never compared with metered spend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

__all__ = [
    "AGENTCORE",
    "NON_TOKEN_CATEGORIES",
    "TOKEN",
    "TOKEN_KINDS",
    "UNCLASSIFIED",
    "UsageClass",
    "classify",
]

#: The token kinds AWS bills separately; ``cache_write`` has a 5-minute and a 1-hour TTL price.
TOKEN_KINDS: Final[tuple[str, ...]] = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")

TOKEN: Final = "token"  # on-demand model tokens: what the meter prices and drift compares
UNCLASSIFIED: Final = "unclassified"
AGENTCORE: Final = "agentcore"
#: Bedrock spend the meter never sees, reported beside the drift (AgentCore has its own column).
NON_TOKEN_CATEGORIES: Final[tuple[str, ...]] = (
    "batch",
    "provisioned",
    "knowledge_base",
    "guardrails",
    "flows",
    "customization",
    "embeddings",
    "images",
)

FIRST_PARTY_TOKENS_PER_UNIT: Final = 1_000  # Price List unit "1K tokens" (AmazonBedrock)
MARKETPLACE_TOKENS_PER_UNIT: Final = 1_000_000  # Price List unit "1M tokens" (AmazonBedrockFoundationModels)


@dataclass(frozen=True, slots=True)
class UsageClass:
    """One usage type, classified. ``kind`` is a token kind or None for non-token spend."""

    usage_type: str
    category: str  # TOKEN, one of NON_TOKEN_CATEGORIES, AGENTCORE or UNCLASSIFIED
    region: str | None = None  # the billing prefix: USE1, EUC1, EU...
    marketplace: bool = False
    model: str | None = None  # the billing name of the model (first-party only)
    kind: str | None = None
    scope: str = "in_region"  # in_region | geo | global
    tier: str = "standard"  # standard | priority | flex
    long_context: bool = False
    latency_optimized: bool = False
    batch: bool = False
    tokens_per_unit: int = 0  # 0: the quantity is not tokens

    @property
    def is_token(self) -> bool:
        return self.category == TOKEN


# -- the pattern tables -----------------------------------------------------------------------------

_REGION = r"(?P<region>[A-Z]{2,4}[0-9]?)"
_FIRST_PARTY_RE: Final = re.compile(
    _REGION
    + r"-(?P<model>.+?)(?:-mantle)?-"
    + r"(?P<kind>input-tokens|output-tokens|cache-read-input-token-count|cache-write-input-token-count"
    + r"|cache-read-tokens|cache-write-tokens)"
    + r"(?P<quals>(?:-[A-Za-z0-9]+)*)$"
)
_MARKETPLACE_RE: Final = re.compile(_REGION + r"-MP:[A-Z0-9]+_(?P<meter>.+?)-Units$")

_FIRST_PARTY_KINDS: Final = {
    "input-tokens": "input",
    "output-tokens": "output",
    "cache-read-input-token-count": "cache_read",
    "cache-read-tokens": "cache_read",
    "cache-write-input-token-count": "cache_write_5m",  # no TTL named: the default 5-minute cache
    "cache-write-tokens": "cache_write_5m",
}
# Qualifiers after the kind, as dash-joined phrases; longest first so "cross-region-global" wins.
_QUALIFIERS: Final[tuple[tuple[str, tuple[str, str]], ...]] = (
    ("cross-region-global", ("scope", "global")),
    ("cross-region-geo", ("scope", "geo")),
    ("latency-optimized", ("latency", "yes")),
    ("long-context", ("context", "long")),
    ("long-ctx", ("context", "long")),
    ("standard", ("tier", "standard")),
    ("priority", ("tier", "priority")),
    ("flex", ("tier", "flex")),
    ("batch", ("batch", "yes")),
    ("global", ("scope", "global")),
    ("geo", ("scope", "geo")),
    ("5m", ("ttl", "5m")),
    ("1h", ("ttl", "1h")),
)

# Marketplace meters, as lower-case words once camelCase and underscores are split.
_MARKETPLACE_KINDS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("cache", "write", "1h", "input", "token", "count"), "cache_write_1h"),
    (("cache", "write", "input", "token", "count"), "cache_write_5m"),
    (("cache", "read", "input", "token", "count"), "cache_read"),
    (("input", "token", "count"), "input"),
    (("output", "token", "count"), "output"),
    (("cache", "write", "1h", "input", "tokens"), "cache_write_1h"),
    (("cache", "write", "input", "tokens"), "cache_write_5m"),
    (("cache", "read", "input", "tokens"), "cache_read"),
    (("input", "tokens"), "input"),
    (("output", "tokens"), "output"),
    (("response", "token", "count"), "output"),
    (("cache", "write", "1h", "tokens"), "cache_write_1h"),
    (("cache", "write", "tokens"), "cache_write_5m"),
    (("cache", "read", "tokens"), "cache_read"),
    (("million", "batch", "input", "tokens"), "input"),
    (("million", "batch", "output", "tokens"), "output"),
)

# Non-token Bedrock spend, matched on the usage type (case-insensitive), first match wins.
# AgentCore comes first: its usage types can mention models or tokens too.
_CATEGORY_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"agentcore", re.I), AGENTCORE),
    (re.compile(r"model-?units?|provisioned|reserved-\d+-month", re.I), "provisioned"),
    (re.compile(r"customi[sz]ation|custom-model|training|model-?storage", re.I), "customization"),
    (re.compile(r"knowledge-?base|search-?units?|rerank|structured-?data|retriev", re.I), "knowledge_base"),
    (re.compile(r"guardrail|content-?policy|topic-?policy|sensitive-?info|contextual-?grounding"
                r"|automated-?reasoning", re.I), "guardrails"),
    (re.compile(r"flows?\b|flow-|node-?transition", re.I), "flows"),
    (re.compile(r"embed", re.I), "embeddings"),
    (re.compile(r"image|canvas|reel|video", re.I), "images"),
)
_EMBEDDING_MODEL_RE: Final = re.compile(r"embed", re.I)
_CAMEL_RE: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_GLUED_TTL_RE: Final = re.compile(r"(?i)(write)(\d+[mh])")


def _qualifiers(text: str) -> dict[str, str] | None:
    """``-long-context-cross-region-global`` -> {"context": "long", "scope": "global"}; None if unknown."""
    found: dict[str, str] = {}
    rest = text.lower().lstrip("-")
    while rest:
        for phrase, (axis, value) in _QUALIFIERS:
            if rest == phrase or rest.startswith(phrase + "-"):
                found[axis] = value
                rest = rest[len(phrase):].lstrip("-")
                break
        else:
            return None
    return found


def _apply(base: UsageClass, kind: str, quals: dict[str, str]) -> UsageClass:
    if kind == "cache_write_5m" and quals.get("ttl") == "1h":
        kind = "cache_write_1h"
    batch = quals.get("batch") == "yes"
    category = "batch" if batch else TOKEN
    if base.model and _EMBEDDING_MODEL_RE.search(base.model):
        category = "embeddings"
    return UsageClass(
        usage_type=base.usage_type,
        category=category,
        region=base.region,
        marketplace=base.marketplace,
        model=base.model,
        kind=kind,
        scope=quals.get("scope", "in_region"),
        tier=quals.get("tier", "standard"),
        long_context=quals.get("context") == "long",
        latency_optimized=quals.get("latency") == "yes",
        batch=batch,
        tokens_per_unit=base.tokens_per_unit,
    )


def _marketplace(usage_type: str, match: re.Match[str]) -> UsageClass | None:
    meter = _GLUED_TTL_RE.sub(r"\1_\2", _CAMEL_RE.sub("_", match["meter"]))
    words = [w for w in meter.lower().split("_") if w]
    base = UsageClass(usage_type, UNCLASSIFIED, region=match["region"], marketplace=True,
                      tokens_per_unit=MARKETPLACE_TOKENS_PER_UNIT)
    for pattern, kind in _MARKETPLACE_KINDS:
        if tuple(words[: len(pattern)]) == pattern:
            quals = _qualifiers("-".join(words[len(pattern):]))
            if quals is None:
                return None
            if pattern[0] == "million":  # MillionBatchInputTokens
                quals["batch"] = "yes"
            return _apply(base, kind, quals)
    return None


@lru_cache(maxsize=16_384)
def classify(usage_type: str) -> UsageClass:
    """Classify one Cost Explorer usage type (pure, cached: a run sees each string many times)."""
    text = usage_type.strip()
    for pattern, category in _CATEGORY_PATTERNS[:1]:
        if pattern.search(text):
            return UsageClass(usage_type, category)
    match = _MARKETPLACE_RE.match(text)
    if match:
        found = _marketplace(usage_type, match)
        if found is not None:
            return found
    match = _FIRST_PARTY_RE.match(text)
    if match:
        quals = _qualifiers(match["quals"])
        if quals is not None:
            base = UsageClass(usage_type, UNCLASSIFIED, region=match["region"], model=match["model"],
                              tokens_per_unit=FIRST_PARTY_TOKENS_PER_UNIT)
            return _apply(base, _FIRST_PARTY_KINDS[match["kind"]], quals)
    for pattern, category in _CATEGORY_PATTERNS[1:]:
        if pattern.search(text):
            return UsageClass(usage_type, category)
    return UsageClass(usage_type, UNCLASSIFIED)
