"""Bedrock on-demand token prices and the model-id normalisation used to look them up.

A catalog is a JSON document (shipped as ``pricing/data/bedrock_prices.json``; a refreshed copy
written by ``costguard pricing refresh`` is layered on top)::

    {"source": "...", "retrieved": "2026-11-01", "region": "us-east-1", "currency": "USD",
     "unit": "per 1M tokens",
     "models": {"anthropic.claude-3-5-haiku-20241022-v1:0":
                    {"input": "0.80", "output": "4.00", "cache_read": "0.08", "cache_write": "1.00",
                     "name": "Claude 3.5 Haiku", "provider": "Anthropic"}},
     "fallback": {"input": "15.00", "output": "75.00"}}          # optional

Prices are strings (JSON numbers are read as :class:`~decimal.Decimal`, never float) in USD per
one million tokens. ``cache_read``/``cache_write``, ``name``, ``provider`` and ``fallback`` are
optional.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from costguard.errors import PricingError
from costguard.paths import user_data_dir

if TYPE_CHECKING:
    import boto3

__all__ = [
    "FALLBACK_MODEL_ID",
    "InferenceProfileResolver",
    "ModelPrice",
    "PriceCatalog",
    "PriceQuote",
    "base_model_id",
    "default_override_path",
]

logger = logging.getLogger(__name__)

_PER_TOKENS = Decimal(1_000_000)
FALLBACK_MODEL_ID = "costguard.fallback"
_MODEL_FIELDS = frozenset({"input", "output", "cache_read", "cache_write", "name", "provider"})


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
    """Model prices plus the lookup rules that map what Bedrock reports onto them.

    ``quote`` is called once per model call, so its results are memoised per instance.
    """

    def __init__(
        self,
        models: Mapping[str, ModelPrice],
        *,
        source: str,
        retrieved: str,
        region: str = "us-east-1",
        fallback: ModelPrice | None = None,
    ) -> None:
        if not models:
            raise PricingError("price catalog has no models")
        self._models: dict[str, ModelPrice] = dict(models)
        self.models: Mapping[str, ModelPrice] = MappingProxyType(self._models)
        self.source = source
        self.retrieved = retrieved
        self.region = region
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
        """Validate ``data`` (the JSON format above); errors name ``origin`` and the model key."""
        if not isinstance(data, Mapping):
            raise PricingError(f"{origin}: a price catalog must be a JSON object, got {type(data).__name__}")
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
        models = {
            str(key): _model_price(str(key), entry, f"{origin}: models[{str(key)!r}]")
            for key, entry in raw_models.items()
        }
        fallback = None
        if data.get("fallback") is not None:
            fallback = _model_price(FALLBACK_MODEL_ID, data["fallback"], f"{origin}: fallback")
        return cls(models, source=source, retrieved=retrieved, region=region, fallback=fallback)

    @classmethod
    def load(cls, override_path: str | os.PathLike[str] | None = None) -> PriceCatalog:
        """The shipped catalog, with the local override catalog layered on top when it exists.

        ``override_path`` defaults to :func:`default_override_path`. Models in the override replace
        or add to the shipped ones; the result carries the override's source, date and region,
        since those describe the newer prices. A missing override is normal (nothing refreshed
        yet), so it only leaves a debug log line; a malformed one raises.
        """
        shipped = cls.shipped()
        path = Path(override_path).expanduser() if override_path is not None else default_override_path()
        if not path.is_file():
            logger.debug("no price override at %s; using the shipped catalog", path)
            return shipped
        override = cls.from_file(path)
        return shipped.layered(override)

    def layered(self, override: PriceCatalog) -> PriceCatalog:
        """A new catalog: this one's models with ``override``'s models replacing or adding to them."""
        models = {**self._models, **override._models}
        fallback: ModelPrice | None = None
        if override._explicit_fallback:
            fallback = override.fallback
        elif self._explicit_fallback:
            fallback = self.fallback
        return type(self)(
            models,
            source=override.source,
            retrieved=override.retrieved,
            region=override.region,
            fallback=fallback,
        )

    # -- lookups -----------------------------------------------------------------------------------

    def quote(self, model_id: str) -> PriceQuote:
        """How ``model_id`` is priced: exact id, then any ``:N`` of it, then another ``-vN``, then fallback."""
        cached = self._quotes.get(model_id)
        if cached is not None:
            return cached
        base = base_model_id(model_id)
        key = self._match(base)
        if key is not None:
            quote = PriceQuote(model_id, key, self._models[key], True)
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
        out: dict[str, Any] = {
            "source": self.source,
            "retrieved": self.retrieved,
            "region": self.region,
            "currency": "USD",
            "unit": "per 1M tokens",
            "models": {key: price.to_dict() for key, price in self._models.items()},
        }
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


def _model_price(model_id: str, entry: Any, where: str) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise PricingError(f"{where}: expected an object with input/output prices, got {entry!r}")
    unknown = sorted(set(entry) - _MODEL_FIELDS)
    if unknown:
        raise PricingError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    for required in ("input", "output"):
        if required not in entry:
            raise PricingError(f"{where}: {required}: missing")
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
