"""The Bedrock price catalog: model rates by region, scope, tier and context band, and id lookup.

The shipped catalog (``pricing/data/bedrock_prices.json``) is format 2; a local override written by
``costguard pricing refresh`` is layered on top. Format 2, per model (USD per 1M tokens, prices as
strings so they are read as exact decimals)::

    {"format": 2, "source": "...", "retrieved": "2026-12-01", "region": "us-east-1",
     "currency": "USD", "unit": "per 1M tokens", "sources": {...}, "notes": [...],
     "models": {"anthropic.claude-sonnet-4-5-20250929-v1:0": {
         "name": "Claude Sonnet 4.5", "provider": "Anthropic", "status": "legacy",
         "end_of_life": "2027-04-08", "long_context_threshold": 200000,
         "rates": {"standard": {"input": "3.3", "output": "16.5", "cache_read": "0.33",
                                "cache_write_5m": "4.125", "cache_write_1h": "6.6"},
                   "long": {...}, "global": {...}, "global+long": {...}},
         "regions": {"eu-central-1": "same", "ap-northeast-1": {"standard": {...}}},
         "sources": ["..."], "notes": ["..."]}},
     "guardrails": {"rates": {"contentPolicyUnits": "0.15", ...}, "regions": {}, ...},
     "fallback": {"input": "15.00", "output": "75.00"}}                       # optional

Rate set names are ``[global|geo+][priority|flex+][latency+][long]`` (``standard`` when empty);
see :mod:`costguard.pricing.rates` for how a call picks one. ``regions`` lists the regions a
published source prices (``same``: like the catalog region); any other region is priced at the
catalog region's figure and flagged ``region_assumed``.

Format 1 (no ``format`` key; what older ``pricing refresh`` wrote) is still read: per model
``input``, ``output``, optional ``cache_read``, ``cache_write`` (5-minute), ``name``,
``provider``. Layered over format 2, a format-1 model replaces only the standard in-region rates
of its region and keeps the other dimensions.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from costguard.errors import PricingError
from costguard.paths import user_data_dir
from costguard.pricing.key import TIERS, Scope
from costguard.pricing.rates import (
    GUARDRAIL_UNIT_FIELDS,
    GuardrailRateCard,
    RateCard,
    RateSet,
    rate_set_name,
    resolve_rate_sets,
)

if TYPE_CHECKING:
    import boto3

__all__ = [
    "FALLBACK_MODEL_ID",
    "InferenceProfileResolver",
    "ModelEntry",
    "ModelPrice",
    "PriceCatalog",
    "PriceQuote",
    "base_model_id",
    "default_override_path",
    "is_prompt_router",
    "scope_of",
]

logger = logging.getLogger(__name__)

_PER_TOKENS = Decimal(1_000_000)
FALLBACK_MODEL_ID = "costguard.fallback"
_MODEL_FIELDS = frozenset({"input", "output", "cache_read", "cache_write", "name", "provider"})
_ENTRY_FIELDS = frozenset(
    {"name", "provider", "status", "end_of_life", "long_context_threshold", "rates", "regions", "sources", "notes"}
)
_RATE_FIELDS = frozenset({"input", "output", "cache_read", "cache_write_5m", "cache_write_1h"})
_STATUSES = frozenset({"active", "legacy", "retired"})
_SET_PARTS = (("global", "geo"), ("priority", "flex"), ("latency",), ("long",))
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_REGION_RE = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-[0-9]+$")
#: Memoised rate cards kept per catalog; ids come from callers, so the memo is bounded.
_MAX_CARDS = 4096


# -- prices ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """On-demand prices of one model in USD per 1M tokens."""

    model_id: str
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    name: str | None = None
    provider: str | None = None

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        """Exact USD cost of a call; rounding is left to whoever displays or stores it.

        A model without a cache price still gets cache tokens charged at its input price: if
        Bedrock reports cache tokens for it, the catalog is out of date, and charging them at the
        plain input price keeps the total honest (never $0) without inventing a discount.
        """
        cache_read = self.input if self.cache_read is None else self.cache_read
        cache_write = self.input if self.cache_write is None else self.cache_write
        total = (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * cache_read
            + cache_write_tokens * cache_write
        )
        return total / _PER_TOKENS

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {"input": _money_str(self.input), "output": _money_str(self.output)}
        if self.cache_read is not None:
            out["cache_read"] = _money_str(self.cache_read)
        if self.cache_write is not None:
            out["cache_write"] = _money_str(self.cache_write)
        if self.name is not None:
            out["name"] = self.name
        if self.provider is not None:
            out["provider"] = self.provider
        return out


@dataclass(frozen=True, slots=True)
class PriceQuote:
    """How a requested model id was priced. ``priced`` is False when the fallback price was used."""

    requested_id: str
    base_model_id: str
    price: ModelPrice
    priced: bool


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model's rates in every dimension the catalog knows, with its lifecycle and sources.

    ``rates`` are the catalog region's; ``regions`` maps another region to ``None`` (a source
    prices it the same) or to the rate sets that differ there.
    """

    model_id: str
    rates: Mapping[str, RateSet]
    regions: Mapping[str, Mapping[str, RateSet] | None]
    name: str | None = None
    provider: str | None = None
    status: str = "active"
    end_of_life: str | None = None
    long_context_threshold: int | None = None
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_price(cls, price: ModelPrice) -> ModelEntry:
        return cls(price.model_id, {"standard": _rate_set_of(price)}, {}, name=price.name, provider=price.provider)

    def model_price(self, set_name: str = "standard") -> ModelPrice:
        rates = self.rates[set_name]
        return ModelPrice(
            self.model_id,
            input=rates.input,
            output=rates.output,
            cache_read=rates.cache_read,
            cache_write=rates.cache_write_5m,
            name=self.name,
            provider=self.provider,
        )

    def sets_for(self, region: str, home_region: str) -> tuple[Mapping[str, RateSet], bool]:
        """The rate sets that apply in ``region`` and whether they are assumed (no published figure)."""
        if region == home_region:
            return self.rates, False
        if region not in self.regions:
            return self.rates, True
        regional = self.regions[region]
        if regional is None:
            return self.rates, False
        return {**self.rates, **regional}, False

    def dimensions(self) -> list[str]:
        """The price dimensions this model has rates for, for ``pricing show``."""
        found = ["input", "output"]
        standard = self.rates.get("standard")
        if standard is not None:
            found += [f for f in ("cache_read", "cache_write_5m", "cache_write_1h") if getattr(standard, f) is not None]
        names = set(self.rates)
        for label, part in (("geo", "geo"), ("global", "global"), ("priority", "priority"), ("flex", "flex"),
                            ("latency", "latency"), ("long_context", "long")):
            if any(part in name.split("+") for name in names):
                found.append(label)
        if self.regions:
            found.append("regions")
        return found

    def with_standard(self, price: ModelPrice, region: str, home_region: str) -> ModelEntry:
        """This entry with ``price`` as the standard in-region rates of ``region`` (a format-1 override)."""
        new = _rate_set_of(price)
        name = price.name or self.name
        provider = price.provider or self.provider
        if region == home_region:
            return replace(self, rates={**self.rates, "standard": new}, name=name, provider=provider)
        regional = dict(self.regions.get(region) or {})
        regional["standard"] = new
        return replace(self, regions={**self.regions, region: regional}, name=name, provider=provider)

    def merged(self, newer: ModelEntry, region: str, home_region: str) -> ModelEntry:
        """This entry updated by ``newer``'s rate sets for ``region`` and its lifecycle and names."""
        if region == home_region:
            rates, regions = {**self.rates, **newer.rates}, self.regions
        else:
            rates = self.rates
            regions = {**self.regions, region: {**(self.regions.get(region) or {}), **newer.rates}}
        return replace(
            self,
            rates=rates,
            regions=regions,
            name=newer.name or self.name,
            provider=newer.provider or self.provider,
            status=newer.status,
            end_of_life=newer.end_of_life or self.end_of_life,
            long_context_threshold=newer.long_context_threshold or self.long_context_threshold,
            sources=self.sources + tuple(s for s in newer.sources if s not in self.sources),
            notes=self.notes + tuple(n for n in newer.notes if n not in self.notes),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "provider": self.provider, "status": self.status}
        if self.end_of_life is not None:
            out["end_of_life"] = self.end_of_life
        if self.long_context_threshold is not None:
            out["long_context_threshold"] = self.long_context_threshold
        out["rates"] = {name: rates.to_dict() for name, rates in self.rates.items()}
        out["regions"] = {
            region: "same" if sets is None else {name: rates.to_dict() for name, rates in sets.items()}
            for region, sets in self.regions.items()
        }
        out["sources"] = list(self.sources)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _rate_set_of(price: ModelPrice) -> RateSet:
    return RateSet(price.input, price.output, price.cache_read, price.cache_write)


@dataclass(frozen=True, slots=True)
class GuardrailPrices:
    """Guardrail prices (USD per 1,000 units per policy type) with their regions and sources."""

    rates: Mapping[str, Decimal]
    regions: Mapping[str, Mapping[str, Decimal] | None]
    unit: str = ""
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "rates": {name: _money_str(value) for name, value in self.rates.items()},
            "regions": {
                region: "same" if rates is None else {n: _money_str(v) for n, v in rates.items()}
                for region, rates in self.regions.items()
            },
            "sources": list(self.sources),
            "notes": list(self.notes),
        }


# -- model id normalisation -------------------------------------------------------------------------

# Foundation models and (system) inference profiles name the model in the ARN itself, so they can
# be resolved offline. Application inference profiles and provisioned models cannot: they are left
# as they are (see InferenceProfileResolver).
_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]*:(?:foundation-model|inference-profile)/(?P<id>.+)$"
)
# `us-gov` must be tried before `us`, or `us-gov.x.y` would fail to match at all.
_PROFILE_PREFIX_RE = re.compile(r"^(?:us-gov|us|eu|apac|global|jp|au|ca)\.(?=[a-z0-9-]+\.[a-z0-9])")
# name, an optional `:N` version, then context-window/provisioning variants (`:200k`, `:512`, `:mm`).
_SUFFIX_RE = re.compile(r"^(?P<stem>[^:]+)(?P<version>:[0-9]+)?(?::[^:]*)*$")
_DATED_VERSION_RE = re.compile(r"^(?P<family>.+-[0-9]{8})-v(?P<n>[0-9]+)$")


def base_model_id(model_id: str) -> str:
    """The id to price ``model_id`` by: ARN prefix, cross-region profile prefix and context suffix gone.

    ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0:200k``,
    ``us.anthropic.claude-3-haiku-20240307-v1:0`` and the plain id all give
    ``anthropic.claude-3-haiku-20240307-v1:0``. Pure string work, no AWS call.
    """
    mid = model_id.strip()
    match = _ARN_RE.match(mid)
    if match:
        mid = match.group("id")
    elif mid.startswith("arn:"):
        return mid
    mid = _PROFILE_PREFIX_RE.sub("", mid, count=1)
    match = _SUFFIX_RE.match(mid)
    if match:
        mid = match.group("stem") + (match.group("version") or "")
    return mid


_ROUTER_RE = re.compile(r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]*:[0-9]*:(?:default-)?prompt-router/.+$")
_SCOPE_RE = re.compile(r"^(?P<prefix>us-gov|us|eu|apac|global|jp|au|ca)\.(?=[a-z0-9-]+\.[a-z0-9])")


def is_prompt_router(model_id: str) -> bool:
    """Whether ``model_id`` is a (default) prompt router ARN: priced as the model it routed to."""
    return bool(_ROUTER_RE.match(model_id.strip()))


def scope_of(model_id: str) -> Scope:
    """The scope a call to ``model_id`` is billed at: ``global.`` profiles, geo profiles, or in-region.

    An inference-profile ARN carries its profile id; a foundation-model ARN or a plain id is an
    in-region call. Pure string work, no AWS call.
    """
    mid = model_id.strip()
    match = _ARN_RE.match(mid)
    if match:
        if ":foundation-model/" in mid:
            return "in_region"
        mid = match.group("id")
    prefix = _SCOPE_RE.match(mid)
    if prefix is None:
        return "in_region"
    return "global" if prefix.group("prefix") == "global" else "geo"


def _split_version(model_id: str) -> tuple[str, int | None]:
    stem, sep, version = model_id.rpartition(":")
    if sep and version.isdigit():
        return stem, int(version)
    return model_id, None


# -- catalog --------------------------------------------------------------------------------------


def default_override_path() -> Path:
    """``$COSTGUARD_PRICING`` if set, else ``pricing.json`` in the user data directory."""
    configured = os.environ.get("COSTGUARD_PRICING", "").strip()
    if configured:
        return Path(configured).expanduser()
    return user_data_dir() / "pricing.json"


class PriceCatalog:
    """Model rates plus the lookup rules that map what Bedrock reports onto them.

    ``rate_card`` is what the meter prices with (memoised per model id, region, tier and latency
    mode; never raises); ``quote`` is the older single-rate view (the catalog region's standard
    rates for the id's scope), kept for callers that price with :class:`ModelPrice`.
    """

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        *,
        source: str,
        retrieved: str,
        region: str = "us-east-1",
        fallback: ModelPrice | None = None,
        entries: Mapping[str, ModelEntry] | None = None,
        guardrails: GuardrailPrices | None = None,
        sources: Mapping[str, str] | None = None,
        notes: tuple[str, ...] = (),
        format_version: int = 1,
    ) -> None:
        if entries is None:
            entries = {key: ModelEntry.from_price(price) for key, price in models.items()}
        else:
            models = {key: entry.model_price() for key, entry in entries.items()}
        if not models:
            raise PricingError("price catalog has no models")
        self._entries: dict[str, ModelEntry] = dict(entries)
        self.entries: Mapping[str, ModelEntry] = MappingProxyType(self._entries)
        self._models: dict[str, ModelPrice] = dict(models)
        self.models: Mapping[str, ModelPrice] = MappingProxyType(self._models)
        self.source = source
        self.retrieved = retrieved
        self.region = region
        self.guardrails = guardrails
        self.sources: Mapping[str, str] = MappingProxyType(dict(sources or {}))
        self.notes = tuple(notes)
        self.format_version = format_version
        self._explicit_fallback = fallback is not None
        self.fallback: ModelPrice = fallback if fallback is not None else _most_expensive(self._models)
        self._by_stem: dict[str, str] = {}
        self._by_family: dict[str, str] = {}
        # Sorting makes ties deterministic: the highest version wins, as the newest release.
        for key in sorted(self._models, key=_version_order):
            stem, _ = _split_version(key)
            self._by_stem[stem] = key
            family = _DATED_VERSION_RE.match(stem)
            if family:
                self._by_family[family.group("family")] = key
        self._quotes: dict[str, PriceQuote] = {}
        self._cards: dict[tuple[str, str, str, bool], RateCard] = {}
        self._guardrail_cards: dict[str, GuardrailRateCard] = {}

    def __repr__(self) -> str:
        return f"PriceCatalog({len(self._models)} models, source={self.source!r}, retrieved={self.retrieved!r})"

    # -- constructors ------------------------------------------------------------------------------

    @classmethod
    def shipped(cls) -> PriceCatalog:
        """The catalog packaged with costguard."""
        resource = resources.files("costguard.pricing").joinpath("data/bedrock_prices.json")
        origin = "costguard/pricing/data/bedrock_prices.json"
        try:
            text = resource.read_text(encoding="utf-8")
        except OSError as exc:
            raise PricingError(f"{origin}: cannot read the shipped price catalog: {exc}") from exc
        return cls.from_dict(_parse_json(text, origin), origin=origin)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceCatalog:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PricingError(f"{origin}: cannot read price catalog: {exc}") from exc
        return cls.from_dict(_parse_json(text, origin), origin=origin)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "<price catalog>") -> PriceCatalog:
        """Validate ``data`` (format 1 or 2, see above); errors name ``origin`` and the model key."""
        if not isinstance(data, Mapping):
            raise PricingError(f"{origin}: a price catalog must be a JSON object, got {type(data).__name__}")
        version = data.get("format", 1)
        if version not in (1, 2) or isinstance(version, bool):
            raise PricingError(f"{origin}: format: expected 1 or 2, got {version!r}")
        source = _required_str(data, "source", origin)
        retrieved = _required_str(data, "retrieved", origin)
        region = data.get("region", "us-east-1")
        if not isinstance(region, str) or not region:
            raise PricingError(f"{origin}: region: expected a region name, got {region!r}")
        currency = data.get("currency", "USD")
        if currency != "USD":
            raise PricingError(f"{origin}: currency: only USD prices are supported, got {currency!r}")
        unit = data.get("unit", "per 1M tokens")
        if unit != "per 1M tokens":
            raise PricingError(f"{origin}: unit: expected 'per 1M tokens', got {unit!r}")
        raw_models = data.get("models")
        if not isinstance(raw_models, Mapping) or not raw_models:
            raise PricingError(f"{origin}: models: expected a non-empty object of model id -> prices")
        fallback = None
        if data.get("fallback") is not None:
            fallback = _model_price(FALLBACK_MODEL_ID, data["fallback"], f"{origin}: fallback")
        if version == 1:
            models = {
                str(key): _model_price(str(key), entry, f"{origin}: models[{str(key)!r}]")
                for key, entry in raw_models.items()
            }
            return cls(models, source=source, retrieved=retrieved, region=region, fallback=fallback)
        entries = {
            str(key): _model_entry(str(key), entry, f"{origin}: models[{str(key)!r}]")
            for key, entry in raw_models.items()
        }
        guardrails = None
        if data.get("guardrails") is not None:
            guardrails = _guardrail_prices(data["guardrails"], f"{origin}: guardrails")
        sources = data.get("sources", {})
        if not isinstance(sources, Mapping) or not all(isinstance(v, str) for v in sources.values()):
            raise PricingError(f"{origin}: sources: expected an object of name -> description")
        notes = _str_list(data.get("notes", []), f"{origin}: notes")
        return cls(
            {},
            source=source,
            retrieved=retrieved,
            region=region,
            fallback=fallback,
            entries=entries,
            guardrails=guardrails,
            sources={str(k): v for k, v in sources.items()},
            notes=notes,
            format_version=2,
        )

    @classmethod
    def load(cls, override_path: str | os.PathLike[str] | None = None) -> PriceCatalog:
        """The shipped catalog, with the local override catalog layered on top when it exists.

        ``override_path`` defaults to :func:`default_override_path`. Models in the override replace
        or add to the shipped ones; the result carries the override's source and date, since those
        describe the newer prices. A missing override is normal (nothing refreshed yet), so it only
        leaves a debug log line; a malformed one raises.
        """
        shipped = cls.shipped()
        path = Path(override_path).expanduser() if override_path is not None else default_override_path()
        if not path.is_file():
            logger.debug("no price override at %s; using the shipped catalog", path)
            return shipped
        override = cls.from_file(path)
        return shipped.layered(override)

    def layered(self, override: PriceCatalog) -> PriceCatalog:
        """A new catalog: this one's models with ``override``'s models replacing or adding to them.

        An override model's rate sets replace the same-named sets of its region (a format-1 model
        has only the standard in-region set) and every other dimension is kept; its lifecycle and
        names replace the shipped ones. A model new to this catalog is taken as the override
        gives it.
        """
        entries = dict(self._entries)
        for key, entry in override._entries.items():
            base = entries.get(key)
            if base is None:
                entries[key] = entry
            elif override.format_version == 1:
                entries[key] = base.with_standard(override._models[key], override.region, self.region)
            else:
                entries[key] = base.merged(entry, override.region, self.region)
        fallback: ModelPrice | None = None
        if override._explicit_fallback:
            fallback = override.fallback
        elif self._explicit_fallback:
            fallback = self.fallback
        version = max(self.format_version, override.format_version)
        # A format-1 catalog's region names its only prices; a format-2 one's is the home of its rates.
        region = self.region if self.format_version == 2 else override.region
        return type(self)(
            {},
            source=override.source,
            retrieved=override.retrieved,
            region=region,
            fallback=fallback,
            entries=entries,
            guardrails=override.guardrails or self.guardrails,
            sources={**self.sources, **override.sources},
            notes=self.notes + tuple(n for n in override.notes if n not in self.notes),
            format_version=version,
        )

    # -- lookups -----------------------------------------------------------------------------------

    def rate_card(
        self, model_id: str, *, region: str, tier: str = "standard", latency_optimized: bool = False
    ) -> RateCard:
        """The rates a call to ``model_id`` in ``region`` is billed at; memoised; never raises.

        The scope comes from the id itself (``global.``, a geo prefix, an inference-profile ARN's
        profile id, else in-region). An unknown id, an unparseable ARN or a prompt router gets the
        fallback card (the catalog's fallback rates, never $0) flagged ``unpriced``.
        """
        memo = (model_id, region, tier, latency_optimized)
        card = self._cards.get(memo)
        if card is not None:
            return card
        try:
            card = self._build_card(model_id, region, tier, bool(latency_optimized))
        except Exception:  # a price lookup must never fail a caller's model call
            logger.exception("pricing %r failed; using the fallback rates", model_id)
            card = self._fallback_card(str(model_id), self.region, "in_region", "standard", False, {"region_assumed"})
        if len(self._cards) >= _MAX_CARDS:
            self._cards.clear()
        self._cards[memo] = card
        return card

    def _build_card(self, model_id: str, region: str, tier: str, latency: bool) -> RateCard:
        flags: set[str] = set()
        if tier not in TIERS:
            tier = "standard"
            flags.add("tier_assumed")
        if not isinstance(region, str) or not region.strip():
            region = self.region
            flags.add("region_assumed")
        region = region.strip()
        scope = scope_of(model_id)
        key = None if is_prompt_router(model_id) else self._match(base_model_id(model_id))
        if key is None:
            return self._fallback_card(base_model_id(model_id), region, scope, tier, latency, flags)
        entry = self._entries[key]
        sets, assumed = entry.sets_for(region, self.region)
        if assumed:
            flags.add("region_assumed")
        threshold = entry.long_context_threshold
        resolved = resolve_rate_sets(sets, scope=scope, tier=tier, latency=latency, has_threshold=threshold is not None)
        return RateCard.build(
            base_model_id=key,
            name=entry.name,
            provider=entry.provider,
            priced=True,
            long_context_threshold=threshold,
            region=region,
            scope=scope,
            tier=tier,
            latency_optimized=latency,
            resolved=resolved,
            extra_flags=frozenset(flags),
        )

    def _fallback_card(
        self, base: str, region: str, scope: Scope, tier: str, latency: bool, flags: set[str]
    ) -> RateCard:
        rates = _rate_set_of(self.fallback)
        resolved = resolve_rate_sets({"standard": rates}, scope="in_region", tier="standard", latency=False,
                                     has_threshold=False)
        return RateCard.build(
            base_model_id=base,
            name=None,
            provider=None,
            priced=False,
            long_context_threshold=None,
            region=region,
            scope=scope,
            tier=tier,
            latency_optimized=latency,
            resolved=resolved,
            extra_flags=frozenset(flags | {"unpriced"}),
        )

    def guardrail_card(self, region: str) -> GuardrailRateCard:
        """Guardrail prices in ``region``; regions without a published figure are flagged ``region_assumed``."""
        card = self._guardrail_cards.get(region)
        if card is not None:
            return card
        prices = self.guardrails
        flags: set[str] = set()
        if prices is None:
            # No guardrail table at all (an old override catalog without one): charge every unit at
            # the highest model input rate per 1,000 tokens rather than nothing.
            top = self.fallback.input
            rates: Mapping[str, Decimal] = {name: top for name in GUARDRAIL_UNIT_FIELDS}
            flags.add("unpriced")
        elif region == self.region or (region in prices.regions and prices.regions[region] is None):
            rates = prices.rates
        elif region in prices.regions:
            rates = {**prices.rates, **(prices.regions[region] or {})}
        else:
            rates = prices.rates
            flags.add("region_assumed")
        card = GuardrailRateCard.build(region, rates, frozenset(flags))
        self._guardrail_cards[region] = card
        return card

    def quote(self, model_id: str) -> PriceQuote:
        """How ``model_id`` is priced: exact id, then any ``:N`` of it, then another ``-vN``, then fallback.

        The price is the catalog region's standard rate for the scope of ``model_id``.
        """
        cached = self._quotes.get(model_id)
        if cached is not None:
            return cached
        base = base_model_id(model_id)
        key = None if is_prompt_router(model_id) else self._match(base)
        if key is not None:
            price = self._models[key]
            scope = scope_of(model_id)
            entry = self._entries[key]
            if scope != "in_region" and rate_set_name(scope) in entry.rates:
                price = entry.model_price(rate_set_name(scope))
            quote = PriceQuote(model_id, key, price, True)
        else:
            quote = PriceQuote(model_id, base, self.fallback, False)
        self._quotes[model_id] = quote
        return quote

    def _match(self, base: str) -> str | None:
        if base in self._models:
            return base
        stem, _ = _split_version(base)
        key = self._by_stem.get(stem)
        if key is not None:
            return key
        # Only dated ids (Anthropic's `-YYYYMMDD-vN`) are the same model across `-vN`; elsewhere
        # `-v1` and `-v2` are different models at different prices (Titan embeddings v1 vs v2).
        family = _DATED_VERSION_RE.match(stem)
        if family:
            return self._by_family.get(family.group("family"))
        # Newer ids are listed both with and without Bedrock's first-version suffix
        # (`qwen.qwen3-vl-235b-a22b` and `qwen.qwen3-vl-235b-a22b-v1:0`): a `-v1` names the only
        # version there is. `-v2` and later never fall back, for the reason above.
        unversioned = stem.removesuffix("-v1")
        if unversioned != stem and unversioned in self._models:
            return unversioned
        return None

    def cost(
        self,
        model_id: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> tuple[Decimal, PriceQuote]:
        quote = self.quote(model_id)
        return quote.price.cost(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens), quote

    def to_dict(self) -> dict[str, Any]:
        """The JSON catalog format (prices as strings); ``from_dict`` reads it back unchanged."""
        out: dict[str, Any] = {}
        if self.format_version == 2:
            out["format"] = 2
        out.update(
            {
                "source": self.source,
                "retrieved": self.retrieved,
                "region": self.region,
                "currency": "USD",
                "unit": "per 1M tokens",
            }
        )
        if self.format_version == 2:
            if self.sources:
                out["sources"] = dict(self.sources)
            if self.notes:
                out["notes"] = list(self.notes)
            out["models"] = {key: entry.to_dict() for key, entry in self._entries.items()}
            if self.guardrails is not None:
                out["guardrails"] = self.guardrails.to_dict()
        else:
            out["models"] = {key: price.to_dict() for key, price in self._models.items()}
        if self._explicit_fallback:
            fallback = self.fallback.to_dict()
            fallback.pop("name", None)
            fallback.pop("provider", None)
            out["fallback"] = fallback
        return out


def _version_order(key: str) -> tuple[str, int, int]:
    """Sort key grouping a dated model's ``-vN`` releases and ``:N`` versions, oldest first."""
    stem, version = _split_version(key)
    family = _DATED_VERSION_RE.match(stem)
    if family:
        return (family.group("family"), int(family.group("n")), version if version is not None else -1)
    return (stem, 0, version if version is not None else -1)


def _most_expensive(models: Mapping[str, ModelPrice]) -> ModelPrice:
    """A price no catalog model exceeds, so an unknown model is over- rather than under-counted."""
    top_input = max(p.input for p in models.values())
    top_output = max(p.output for p in models.values())
    writes = [p.cache_write for p in models.values() if p.cache_write is not None]
    top_write = max(writes) if writes and max(writes) > top_input else None
    return ModelPrice(
        model_id=FALLBACK_MODEL_ID,
        input=top_input,
        output=top_output,
        cache_read=None,
        cache_write=top_write,
        name="fallback: highest catalog prices",
    )


# -- parsing helpers --------------------------------------------------------------------------------


def _parse_json(text: str, origin: str) -> Any:
    try:
        # parse_float keeps `0.035` exact; a float would already have lost it.
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise PricingError(f"{origin}: not valid JSON: {exc}") from exc


def _required_str(data: Mapping[str, Any], key: str, origin: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PricingError(f"{origin}: {key}: required, a non-empty string")
    return value


def _prices_object(raw: Any, allowed: frozenset[str], where: str) -> Mapping[str, Any]:
    """``raw`` as an object with input and output prices and no field outside ``allowed``."""
    if not isinstance(raw, Mapping):
        raise PricingError(f"{where}: expected an object with input/output prices, got {raw!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PricingError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    for required in ("input", "output"):
        if required not in raw:
            raise PricingError(f"{where}: {required}: missing")
    return raw


def _model_price(model_id: str, entry: Any, where: str) -> ModelPrice:
    entry = _prices_object(entry, _MODEL_FIELDS, where)
    name = entry.get("name")
    provider = entry.get("provider")
    for label, value in (("name", name), ("provider", provider)):
        if value is not None and not isinstance(value, str):
            raise PricingError(f"{where}: {label}: expected a string, got {value!r}")
    return ModelPrice(
        model_id=model_id,
        input=_price(entry["input"], f"{where}.input"),
        output=_price(entry["output"], f"{where}.output"),
        cache_read=_optional_price(entry, "cache_read", where),
        cache_write=_optional_price(entry, "cache_write", where),
        name=name,
        provider=provider,
    )


def _model_entry(model_id: str, entry: Any, where: str) -> ModelEntry:
    if not isinstance(entry, Mapping):
        raise PricingError(f"{where}: expected an object with rates, got {entry!r}")
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise PricingError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    rates = _rate_sets(entry.get("rates"), f"{where}.rates")
    if "standard" not in rates:
        raise PricingError(f"{where}.rates: a 'standard' rate set is required")
    raw_regions = entry.get("regions", {})
    if not isinstance(raw_regions, Mapping):
        raise PricingError(f"{where}.regions: expected an object of region -> 'same' or rate sets")
    regions: dict[str, Mapping[str, RateSet] | None] = {}
    for region, value in raw_regions.items():
        if not _REGION_RE.match(str(region)):
            raise PricingError(f"{where}.regions: {region!r} is not a region name")
        regions[str(region)] = None if value == "same" else _rate_sets(value, f"{where}.regions[{region!r}]")
    status = entry.get("status", "active")
    if status not in _STATUSES:
        raise PricingError(f"{where}.status: expected one of {', '.join(sorted(_STATUSES))}, got {status!r}")
    end_of_life = entry.get("end_of_life")
    if end_of_life is not None and (not isinstance(end_of_life, str) or not _DATE_RE.match(end_of_life)):
        raise PricingError(f"{where}.end_of_life: expected a YYYY-MM-DD date, got {end_of_life!r}")
    threshold = entry.get("long_context_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0):
        raise PricingError(f"{where}.long_context_threshold: expected a positive token count, got {threshold!r}")
    for label in ("name", "provider"):
        value = entry.get(label)
        if value is not None and not isinstance(value, str):
            raise PricingError(f"{where}.{label}: expected a string, got {value!r}")
    return ModelEntry(
        model_id,
        rates,
        regions,
        name=entry.get("name"),
        provider=entry.get("provider"),
        status=status,
        end_of_life=end_of_life,
        long_context_threshold=threshold,
        sources=_str_list(entry.get("sources", []), f"{where}.sources"),
        notes=_str_list(entry.get("notes", []), f"{where}.notes"),
    )


def _rate_sets(raw: Any, where: str) -> dict[str, RateSet]:
    if not isinstance(raw, Mapping) or not raw:
        raise PricingError(f"{where}: expected a non-empty object of rate set name -> prices")
    sets: dict[str, RateSet] = {}
    for name, value in raw.items():
        if not _valid_set_name(str(name)):
            raise PricingError(
                f"{where}: {name!r} is not a rate set name ([global|geo+][priority|flex+][latency+][long] or standard)"
            )
        sets[str(name)] = _rate_set(value, f"{where}[{name!r}]")
    return sets


def _valid_set_name(name: str) -> bool:
    if name == "standard":
        return True
    parts = name.split("+")
    position = 0
    for part in parts:
        while position < len(_SET_PARTS) and part not in _SET_PARTS[position]:
            position += 1
        if position == len(_SET_PARTS):
            return False
        position += 1
    return True


def _rate_set(raw: Any, where: str) -> RateSet:
    raw = _prices_object(raw, _RATE_FIELDS, where)
    rates = RateSet(
        _price(raw["input"], f"{where}.input"),
        _price(raw["output"], f"{where}.output"),
        _optional_price(raw, "cache_read", where),
        _optional_price(raw, "cache_write_5m", where),
        _optional_price(raw, "cache_write_1h", where),
    )
    try:
        rates.units()  # refuse here what could not be priced exactly later
    except PricingError as exc:
        raise PricingError(f"{where}: {exc}") from None
    return rates


def _guardrail_prices(raw: Any, where: str) -> GuardrailPrices:
    if not isinstance(raw, Mapping):
        raise PricingError(f"{where}: expected an object")
    unknown = sorted(set(raw) - {"unit", "rates", "regions", "sources", "notes"})
    if unknown:
        raise PricingError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")

    def table(value: Any, at: str) -> dict[str, Decimal]:
        if not isinstance(value, Mapping) or not value:
            raise PricingError(f"{at}: expected an object of usage field -> USD per 1,000 units")
        return {str(name): _price(price, f"{at}.{name}") for name, price in value.items()}

    raw_regions = raw.get("regions", {})
    if not isinstance(raw_regions, Mapping):
        raise PricingError(f"{where}.regions: expected an object of region -> 'same' or rates")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise PricingError(f"{where}.unit: expected a string")
    return GuardrailPrices(
        rates=table(raw.get("rates"), f"{where}.rates"),
        regions={
            str(region): None if value == "same" else table(value, f"{where}.regions[{region!r}]")
            for region, value in raw_regions.items()
        },
        unit=unit,
        sources=_str_list(raw.get("sources", []), f"{where}.sources"),
        notes=_str_list(raw.get("notes", []), f"{where}.notes"),
    )


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PricingError(f"{where}: expected a list of strings")
    return tuple(value)


def _optional_price(entry: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    value = entry.get(key)
    return None if value is None else _price(value, f"{where}.{key}")


def _price(value: Any, where: str) -> Decimal:
    # A Python float here means the value already went through binary floating point: refuse it
    # rather than carry a 0.035000000000000003 into money.
    if isinstance(value, bool) or isinstance(value, float):
        raise PricingError(f"{where}: {value!r} is not a price: give it as a string such as \"3.00\"")
    if isinstance(value, Decimal | int):
        price = Decimal(value)
    elif isinstance(value, str):
        try:
            price = Decimal(value.strip())
        except InvalidOperation:
            raise PricingError(f"{where}: {value!r} is not a number") from None
    else:
        raise PricingError(f"{where}: {value!r} is not a price: give it as a string such as \"3.00\"")
    if not price.is_finite():
        raise PricingError(f"{where}: {value!r} is not a finite number")
    if price < 0:
        raise PricingError(f"{where}: {value!r} is negative")
    return price


def _money_str(value: Decimal) -> str:
    return format(value, "f")


# -- application inference profiles ------------------------------------------------------------------

_APP_PROFILE_RE = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]+):[0-9]+:application-inference-profile/.+$"
)


class InferenceProfileResolver:
    """Maps application inference profile ARNs to the base model they route to, for pricing.

    Application profiles carry cost-allocation tags but hide the model, so the bedrock control
    plane is asked once per ARN. Anything else is resolved offline by :func:`base_model_id`.
    """

    def __init__(self, client: Any = None, session: boto3.Session | None = None) -> None:
        self._client = client
        self._session = session
        # A profile lives in one region; a default client is built per region so a Guard in
        # us-east-1 can still resolve an eu-west-1 profile.
        self._regional_clients: dict[str | None, Any] = {}
        self._resolved: dict[str, str] = {}

    def resolve(self, model_id: str) -> str:
        """The base model id behind ``model_id``; raises :class:`PricingError` if AWS cannot say."""
        cached = self._resolved.get(model_id)
        if cached is not None:
            return cached
        match = _APP_PROFILE_RE.match(model_id.strip())
        if match is None:
            return base_model_id(model_id)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client_for(match.group("region")).get_inference_profile(
                inferenceProfileIdentifier=model_id
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise PricingError(f"cannot resolve inference profile {model_id}: {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise PricingError(
                f"cannot resolve inference profile {model_id}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            model_arn = response["models"][0]["modelArn"]
        except (KeyError, IndexError, TypeError):
            raise PricingError(f"inference profile {model_id} names no model") from None
        resolved = base_model_id(model_arn)
        self._resolved[model_id] = resolved
        return resolved

    def _client_for(self, region: str | None) -> Any:
        if self._client is not None:
            return self._client
        client = self._regional_clients.get(region)
        if client is None:
            if self._session is None:
                import boto3

                self._session = boto3.Session()
            client = self._session.client("bedrock", region_name=region)
            self._regional_clients[region] = client
        return client
