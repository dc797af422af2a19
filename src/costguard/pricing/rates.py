"""Rate sets and rate cards: a model's prices for one region, scope, tier and latency mode.

A :class:`RateSet` is what the data file holds: USD per 1M tokens as exact decimals. A
:class:`RateCard` is what the meter holds on its hot path: the rate sets that apply to one
(model, region, scope, tier, latency) resolved once, turned into integer nano-dollars per 1M
tokens, with the :class:`~costguard.pricing.key.PriceKey` of every context band and cache TTL
built in advance. Pricing a call is then a handful of integer multiplications and one rounding
(half-even, to the nano-dollar), and never allocates more than the :class:`PricedCall`.

Resolution rules (a dimension a model does not price on falls back to its base rate, flagged):

* scope: ``global`` uses the model's ``global`` sets, else its in-region sets (``scope_assumed``);
  ``geo`` uses ``geo`` sets, else the in-region ones: AWS bills a geo profile at the source
  region's price, so that fallback is the published rule, not an assumption.
* tier: ``priority``/``flex`` sets, else standard (``tier_assumed``).
* latency-optimized: ``latency`` sets, else standard (``latency_assumed``).
* long context: when input + cache read + cache write tokens exceed the model's threshold, the
  ``+long`` set prices the whole call; a model with a threshold but no such set for the chosen
  scope/tier keeps its standard rates (``long_context_assumed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from costguard.errors import PricingError
from costguard.pricing.key import SCOPES, TIERS, CallUsage, PricedCall, PriceKey
from costguard.usage import NANOS_PER_USD

__all__ = ["GuardrailRateCard", "RateCard", "RateSet", "rate_set_name", "resolve_rate_sets"]

_PER_MILLION = 1_000_000
_HALF_MILLION = _PER_MILLION // 2
_PER_THOUSAND = 1_000
_TTL_ORDER = ("none", "5m", "1h")


@dataclass(frozen=True, slots=True)
class RateSet:
    """Prices in USD per 1M tokens. Missing cache rates fall back to input (read, 5m write) and
    to the 5-minute write rate (1h write): never a discount the data does not state."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None

    def units(self) -> tuple[int, int, int, int, int]:
        """Nano-dollars per 1M tokens: input, output, cache read, 5m write, 1h write."""
        cache_read = self.input if self.cache_read is None else self.cache_read
        write_5m = self.input if self.cache_write_5m is None else self.cache_write_5m
        write_1h = write_5m if self.cache_write_1h is None else self.cache_write_1h
        return tuple(  # type: ignore[return-value]
            _nano_units(value) for value in (self.input, self.output, cache_read, write_5m, write_1h)
        )

    def to_dict(self) -> dict[str, str]:
        out = {"input": _money(self.input), "output": _money(self.output)}
        for name in ("cache_read", "cache_write_5m", "cache_write_1h"):
            value = getattr(self, name)
            if value is not None:
                out[name] = _money(value)
        return out


def _nano_units(usd_per_million: Decimal) -> int:
    scaled = usd_per_million * NANOS_PER_USD
    if scaled != scaled.to_integral_value():
        raise PricingError(f"price {usd_per_million} has more than 9 decimals: not representable exactly")
    return int(scaled)


def _money(value: Decimal) -> str:
    return format(value, "f")


def _round_div(total: int, divisor: int) -> int:
    """``total / divisor`` rounded half-even: the one rounding a priced call gets."""
    quotient, remainder = divmod(total, divisor)
    twice = remainder * 2
    if twice > divisor or (twice == divisor and quotient & 1):
        quotient += 1
    return quotient


def rate_set_name(scope: str, tier: str = "standard", latency: bool = False, long: bool = False) -> str:
    """The data file's name of a rate set: ``standard``, ``long``, ``global+priority+long``, ..."""
    parts = [
        part
        for part in (
            "" if scope == "in_region" else scope,
            "" if tier == "standard" else tier,
            "latency" if latency else "",
            "long" if long else "",
        )
        if part
    ]
    return "+".join(parts) or "standard"


@dataclass(frozen=True, slots=True)
class ResolvedRates:
    standard: RateSet
    long: RateSet | None
    flags: frozenset[str]
    long_flags: frozenset[str]


def resolve_rate_sets(
    sets: Mapping[str, RateSet], *, scope: str, tier: str, latency: bool, has_threshold: bool
) -> ResolvedRates:
    """Pick the sets one (scope, tier, latency) call is priced with; see the module docstring."""
    flags: set[str] = set()
    priced_scope = scope
    if scope != "in_region" and rate_set_name(scope) not in sets:
        priced_scope = "in_region"
        if scope == "global":
            flags.add("scope_assumed")
    priced_tier = tier
    if tier != "standard" and rate_set_name(priced_scope, tier) not in sets:
        priced_tier = "standard"
        flags.add("tier_assumed")
    priced_latency = latency
    if latency and rate_set_name(priced_scope, priced_tier, True) not in sets:
        priced_latency = False
        flags.add("latency_assumed")
    standard = sets[rate_set_name(priced_scope, priced_tier, priced_latency)]
    long = sets.get(rate_set_name(priced_scope, priced_tier, priced_latency, long=True)) if has_threshold else None
    long_flags = set(flags)
    if has_threshold and long is None:
        long_flags.add("long_context_assumed")
    return ResolvedRates(standard, long, frozenset(flags), frozenset(long_flags))


@dataclass(frozen=True, slots=True, eq=False)
class RateCard:
    """Everything needed to price one model's calls in one region, scope, tier and latency mode.

    Built (and memoised) by :meth:`costguard.pricing.PriceCatalog.rate_card`; immutable. ``flags``
    are the card's own (``unpriced``, ``region_assumed``...): every priced call carries them.
    """

    base_model_id: str
    name: str | None
    provider: str | None
    priced: bool
    long_context_threshold: int | None
    region: str
    scope: str
    tier: str
    latency_optimized: bool
    standard: RateSet
    long: RateSet | None
    flags: frozenset[str]
    long_flags: frozenset[str]
    _units: tuple[int, int, int, int, int]
    _long_units: tuple[int, int, int, int, int]
    _keys: tuple[PriceKey, PriceKey, PriceKey]
    _long_keys: tuple[PriceKey, PriceKey, PriceKey]
    _labels: tuple[str, str, str]
    _long_labels: tuple[str, str, str]

    @classmethod
    def build(
        cls,
        *,
        base_model_id: str,
        name: str | None,
        provider: str | None,
        priced: bool,
        long_context_threshold: int | None,
        region: str,
        scope: str,
        tier: str,
        latency_optimized: bool,
        resolved: ResolvedRates,
        extra_flags: frozenset[str] = frozenset(),
    ) -> RateCard:
        if scope not in SCOPES or tier not in TIERS:
            raise PricingError(f"rate card: unknown scope {scope!r} or tier {tier!r}")
        long = resolved.long
        units = resolved.standard.units()

        def keys(context: str) -> tuple[PriceKey, PriceKey, PriceKey]:
            return tuple(  # type: ignore[return-value]
                PriceKey(base_model_id, region, scope, context, ttl, tier, latency_optimized)  # type: ignore[arg-type]
                for ttl in _TTL_ORDER
            )

        standard_keys, long_keys = keys("standard"), keys("long")
        return cls(
            base_model_id=base_model_id,
            name=name,
            provider=provider,
            priced=priced,
            long_context_threshold=long_context_threshold,
            region=region,
            scope=scope,
            tier=tier,
            latency_optimized=latency_optimized,
            standard=resolved.standard,
            long=long,
            flags=resolved.flags | extra_flags,
            long_flags=resolved.long_flags | extra_flags,
            _units=units,
            _long_units=long.units() if long is not None else units,
            _keys=standard_keys,
            _long_keys=long_keys,
            _labels=tuple(key.label() for key in standard_keys),  # type: ignore[arg-type]
            _long_labels=tuple(key.label() for key in long_keys),  # type: ignore[arg-type]
        )

    def price(self, usage: CallUsage, flags: frozenset[str] = frozenset()) -> PricedCall:
        """What ``usage`` costs, in integer nano-dollars, with the key and flags it was priced on."""
        cost, ttl, long = self._cost(
            usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
        )
        key = (self._long_keys if long else self._keys)[ttl]
        card_flags = self.long_flags if long else self.flags
        return PricedCall(cost, key, card_flags | flags if flags else card_flags)

    def cost_of(
        self, input_tokens: int, output_tokens: int, cache_read: int, cache_write_5m: int, cache_write_1h: int
    ) -> tuple[int, str, frozenset[str]]:
        """:meth:`price` for the meter's hot path: the cost, the price key's label and the card's
        flags, with no object built per call."""
        cost, ttl, long = self._cost(input_tokens, output_tokens, cache_read, cache_write_5m, cache_write_1h)
        if long:
            return cost, self._long_labels[ttl], self.long_flags
        return cost, self._labels[ttl], self.flags

    def _cost(self, i: int, output: int, read: int, write_5m: int, write_1h: int) -> tuple[int, int, bool]:
        """The cost in nano-dollars, the cache TTL's index in the keys, and whether the call is
        past the long-context threshold (input + cache read + cache write tokens, as AWS counts)."""
        threshold = self.long_context_threshold
        long = threshold is not None and i + read + write_5m + write_1h > threshold
        rates = self._long_units if long else self._units
        total = i * rates[0] + output * rates[1] + read * rates[2] + write_5m * rates[3] + write_1h * rates[4]
        return _round_div(total, _PER_MILLION), 2 if write_1h else 1 if write_5m else 0, long

    def estimate_nanos(self, input_tokens: int, output_tokens: int) -> int:
        """What a call of that size would cost (no cache): for pre-call holds and estimates."""
        threshold = self.long_context_threshold
        rates = self._long_units if threshold is not None and input_tokens > threshold else self._units
        return _round_div(input_tokens * rates[0] + output_tokens * rates[1], _PER_MILLION)

    def __repr__(self) -> str:
        flags = ",".join(sorted(self.flags)) or "-"
        return (
            f"RateCard({self.base_model_id!r}, {self.region}, {self.scope}, {self.tier}"
            f"{', latency' if self.latency_optimized else ''}, flags={flags})"
        )


#: GuardrailUsage fields priced per 1,000 units (botocore bedrock-runtime service-2.json). Other
#: integer fields of that shape (``automatedReasoningPolicies``) count policies, not billed units.
GUARDRAIL_UNIT_FIELDS: tuple[str, ...] = (
    "topicPolicyUnits",
    "contentPolicyUnits",
    "wordPolicyUnits",
    "sensitiveInformationPolicyUnits",
    "sensitiveInformationPolicyFreeUnits",
    "contextualGroundingPolicyUnits",
    "contentPolicyImageUnits",
    "automatedReasoningPolicyUnits",
)


@dataclass(frozen=True, slots=True, eq=False)
class GuardrailRateCard:
    """Guardrail prices for one region: USD per 1,000 units of each policy type, as nano-dollars."""

    region: str
    rates: Mapping[str, Decimal]
    flags: frozenset[str]
    _units: tuple[tuple[str, int], ...]
    _top: int
    _key: PriceKey

    @classmethod
    def build(cls, region: str, rates: Mapping[str, Decimal], flags: frozenset[str] = frozenset()) -> GuardrailRateCard:
        units = tuple((name, _nano_units(value)) for name, value in rates.items())
        top = max((unit for _, unit in units), default=0)
        return cls(region, dict(rates), flags, units, top, PriceKey("guardrail", region))

    def price(self, usage: Mapping[str, object]) -> PricedCall:
        """What a guardrail evaluation cost, from its ``usage`` (ApplyGuardrail or Converse trace).

        A units field this card has no price for is charged at the card's highest rate and the
        call flagged ``unpriced``; a count that is not a non-negative integer is ignored and the
        call flagged ``usage_suspect``. Free policy types (word filters, regex entities) add $0,
        as AWS bills them.
        """
        flags = set(self.flags)
        total = 0
        known = {name for name, _ in self._units}
        for name, unit in self._units:
            count = usage.get(name, 0)
            if count is None or count == 0:
                continue
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                flags.add("usage_suspect")
                continue
            total += count * unit
        for name, count in usage.items():
            if name in known or not name.endswith("Units"):
                continue
            if isinstance(count, int) and not isinstance(count, bool) and count > 0:
                total += count * self._top
                flags.add("unpriced")
        return PricedCall(_round_div(total, _PER_THOUSAND), self._key, frozenset(flags))

