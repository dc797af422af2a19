"""Refresh model prices from the AWS Price List API into a local override catalog (format 2).

Bedrock prices are spread over three Price List service codes: ``AmazonBedrock`` (Amazon's own
and older third-party models), ``AmazonBedrockFoundationModels`` and ``AmazonBedrockService``
(Marketplace-billed third-party models, current Anthropic models among them). Products name a
model in words (``model``/``servicename``/``titanModel`` attributes, e.g. ``Claude Sonnet 4.5``)
or, for newer models, by the model id itself; none carries a Bedrock model id reliably. So the
products are joined with ``bedrock:ListFoundationModels`` (model id <-> name, provider,
lifecycle and end-of-life date) and ``bedrock:ListInferenceProfiles`` (profile names such as
``US Anthropic Claude Sonnet 4.6`` <-> the model they route to): a model launched after this
release is found and priced, not only the ones the shipped catalog knows.

Each price dimension is classified from the product's ``inferenceType``, ``usagetype``,
``serviceTier`` and description: scope (in-region, geo cross-region, ``global``), service tier
(standard, priority, flex), long context, latency-optimized, and the token kind (input, output,
cache read, cache write with its 5-minute or 1-hour TTL; cache rows carry a null
``inferenceType`` and are named by their ``usagetype`` only). Batch, provisioned, reserved,
customization, training and storage prices are skipped: the meter prices on-demand calls.

The Price List API has endpoints only in us-east-1, eu-central-1 and ap-south-1; the *region
being priced* is a filter (``regionCode``), independent of the endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from costguard.errors import PricingError
from costguard.pricing.catalog import ModelEntry, ModelPrice, PriceCatalog, base_model_id, default_override_path
from costguard.pricing.rates import RateSet, rate_set_name

logger = logging.getLogger("costguard.pricing")

SERVICE_CODES = ("AmazonBedrock", "AmazonBedrockFoundationModels", "AmazonBedrockService")
#: Service codes an account's Price List may not offer: their absence is reported, not fatal.
OPTIONAL_SERVICE_CODES = frozenset({"AmazonBedrockService"})
PRICE_LIST_ENDPOINT_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
SOURCE = "AWS Price List API (pricing:GetProducts: " + ", ".join(SERVICE_CODES) + ")"

# Price dimensions that are not what an on-demand model call is billed at.
_SKIP_MARKERS = (
    "batch",
    "provisioned",
    "reserved",
    "custom model",
    "customization",
    "training",
    "storage",
    "tpm hour",
    "model unit",
)
_EDITION_RE = re.compile(r"\(amazon bedrock edition\)", re.IGNORECASE)
_PROVIDER_WORDS = (
    "anthropic", "amazon", "meta", "mistral ai", "mistral", "cohere", "ai21 labs", "ai21", "deepseek",
    "writer", "openai", "qwen", "google", "minimax", "moonshot ai", "moonshotai", "moonshot", "z.ai", "zai",
    "nvidia", "xai", "twelvelabs",
)
# Inference profile names start with their geography: "US Anthropic Claude Sonnet 4.6".
_PROFILE_GEO_RE = re.compile(r"^(?:us-gov|us|eu|apac|jp|au|ca|global|gov)\s+", re.IGNORECASE)
_GLOBAL_RE = re.compile(r"\bglobal\b")
_GEO_RE = re.compile(r"cross[- ]?region|\bgeo\b|\bcris\b")
_LONG_RE = re.compile(r"long[- ]?context")
_LATENCY_RE = re.compile(r"latency[- ]?optimi[sz]ed")
_ONE_HOUR_RE = re.compile(r"\b1[- ]?h(?:ou)?r?\b|one[- ]hour|60[- ]?min|ttl[- ]?1h")


@dataclass(frozen=True, slots=True)
class PriceListEntry:
    """One token price read from the Price List (USD per 1M tokens), with its price dimensions."""

    name: str
    direction: str  # input | output | cache_read | cache_write_5m | cache_write_1h
    usd_per_million: Decimal
    sku: str
    scope: str = "in_region"
    tier: str = "standard"
    long: bool = False
    latency: bool = False
    provider: str | None = None

    @property
    def set_name(self) -> str:
        return rate_set_name(self.scope, self.tier, self.latency, self.long)


@dataclass(frozen=True, slots=True)
class ListedModel:
    """A model as ``bedrock:ListFoundationModels`` describes it."""

    model_id: str
    name: str | None
    provider: str | None
    status: str = "active"
    end_of_life: str | None = None


@dataclass(slots=True)
class ModelDirectory:
    """Names -> model ids, from the Bedrock control plane and the known catalog."""

    by_name: dict[str, set[str]] = field(default_factory=dict)
    listed: dict[str, ListedModel] = field(default_factory=dict)

    def add(self, name: str | None, model_id: str) -> None:
        if name:
            self.by_name.setdefault(normalise_name(name), set()).add(model_id)

    def find(self, name: str) -> set[str]:
        """Model ids a Price List model name stands for (the name may itself be a model id)."""
        if name in self.listed:
            return {name}
        return self.by_name.get(normalise_name(name), set())


@dataclass(slots=True)
class RefreshResult:
    """What a refresh found: the override catalog and everything it could not use, with reasons."""

    region: str
    catalog: PriceCatalog | None
    updated: dict[str, ModelPrice] = field(default_factory=dict)
    changed: dict[str, tuple[ModelPrice, ModelPrice]] = field(default_factory=dict)
    new_models: list[str] = field(default_factory=list)  # priced here, not in the known catalog
    unmatched_names: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    incomplete: list[str] = field(default_factory=list)  # models missing an input or output price
    warnings: list[str] = field(default_factory=list)
    products_seen: int = 0
    requests: int = 0
    written_to: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "products_seen": self.products_seen,
            "requests": self.requests,
            "updated": sorted(self.updated),
            "new_models": self.new_models,
            "changed": {
                model_id: {"before": before.to_dict(), "after": after.to_dict()}
                for model_id, (before, after) in sorted(self.changed.items())
            },
            "unmatched_names": self.unmatched_names,
            "incomplete": self.incomplete,
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": self.warnings,
            "written_to": str(self.written_to) if self.written_to else None,
        }


def normalise_name(name: str) -> str:
    """``Claude 3.5 Sonnet (Amazon Bedrock Edition)`` and ``Anthropic Claude 3.5 Sonnet`` -> ``claude35sonnet``."""
    text = _EDITION_RE.sub("", name).lower().strip()
    for word in _PROVIDER_WORDS:
        if text.startswith(word + " "):
            text = text[len(word) + 1 :]
            break
    return re.sub(r"[^a-z0-9]", "", text.replace("+", "plus"))


def parse_product(document: str | Mapping[str, Any]) -> tuple[list[PriceListEntry], list[str]]:
    """Token prices in one Price List product; the second list holds skip reasons (one per dimension)."""
    try:
        product = json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError as exc:
        raise PricingError(f"Price List returned a product that is not JSON: {exc}") from exc
    if not isinstance(product, Mapping):
        raise PricingError("Price List returned a product that is not a JSON object")
    attributes = product.get("product", {}).get("attributes", {})
    if not isinstance(attributes, Mapping):
        return [], ["no attributes"]
    name = str(attributes.get("model") or attributes.get("servicename") or attributes.get("titanModel") or "").strip()
    if not name:
        return [], ["no model name"]
    feature = str(attributes.get("feature") or "").lower()
    if feature and "on-demand" not in feature and "on demand" not in feature:
        return [], ["not on-demand"]
    labels = " ".join(
        str(attributes.get(key) or "")
        for key in ("inferenceType", "usagetype", "operation", "serviceTier", "service_tier")
    ).lower()
    provider = attributes.get("provider")
    entries: list[PriceListEntry] = []
    reasons: list[str] = []
    on_demand = product.get("terms", {}).get("OnDemand", {})
    if not isinstance(on_demand, Mapping):
        return [], ["no on-demand terms"]
    for term in on_demand.values():
        for dimension in (term.get("priceDimensions") or {}).values():
            description = str(dimension.get("description", "")).lower()
            text = f"{labels} {description}"
            if any(marker in text for marker in _SKIP_MARKERS):
                reasons.append("other purchase option (batch, provisioned, customization, ...)")
                continue
            direction = _direction(text)
            if direction is None:
                reasons.append("not a token price")
                continue
            per_million = _per_million(str(dimension.get("unit", "")), description)
            if per_million is None:
                reasons.append("unknown unit")
                continue
            try:
                usd = Decimal(str(dimension.get("pricePerUnit", {}).get("USD")))
            except (InvalidOperation, TypeError):
                reasons.append("no USD price")
                continue
            if not usd.is_finite() or usd <= 0:
                reasons.append("zero or invalid price")
                continue
            entries.append(
                PriceListEntry(
                    name,
                    direction,
                    (usd * per_million).normalize(),
                    str(dimension.get("rateCode", "")),
                    scope=_scope(labels),
                    tier="priority" if "priority" in labels else "flex" if "flex" in labels else "standard",
                    long=bool(_LONG_RE.search(text)),
                    latency=bool(_LATENCY_RE.search(text)),
                    provider=str(provider) if provider else None,
                )
            )
    return entries, reasons


def _scope(labels: str) -> str:
    # Only the product's own labels: a description names the region ("US East"), never the scope.
    if _GLOBAL_RE.search(labels):
        return "global"
    if _GEO_RE.search(labels):
        return "geo"
    return "in_region"


def _direction(text: str) -> str | None:
    if "cache" in text and "read" in text:
        return "cache_read"
    if "cache" in text and ("write" in text or "creation" in text):
        return "cache_write_1h" if _ONE_HOUR_RE.search(text) else "cache_write_5m"
    if "output" in text:
        return "output"
    if "input" in text:
        return "input"
    return None


def _per_million(unit: str, description: str) -> Decimal | None:
    """How many price units make one million tokens."""
    for text in (description, unit.lower()):
        if re.search(r"(per|/)\s*(1\s*k|1,000|1000|thousand)\b", text) or re.fullmatch(r"\s*1\s*k\s*tokens?\s*", text):
            return Decimal(1000)
        if re.search(r"(per|/)\s*(1\s*m|1,000,000|million)\b", text) or re.fullmatch(r"\s*1\s*m\s*tokens?\s*", text):
            return Decimal(1)
    if unit.strip().lower() in ("token", "tokens"):
        return Decimal(1_000_000)
    return None


# -- joining names to model ids ---------------------------------------------------------------------


def model_directory(
    known: PriceCatalog,
    foundation_models: Iterable[Mapping[str, Any]] = (),
    inference_profiles: Iterable[Mapping[str, Any]] = (),
) -> ModelDirectory:
    """Every name a Price List product may use for a model, mapped to the model's id.

    ``foundation_models``: ``ListFoundationModels`` ``modelSummaries``; ``inference_profiles``:
    ``ListInferenceProfiles`` ``inferenceProfileSummaries`` (system-defined).
    """
    directory = ModelDirectory()
    for model_id, entry in known.entries.items():
        directory.add(entry.name, model_id)
    for summary in foundation_models:
        raw_id = summary.get("modelId")
        if not isinstance(raw_id, str) or not raw_id:
            continue
        model_id = base_model_id(raw_id)  # `...:0:200k` context variants are the same priced model
        lifecycle = summary.get("modelLifecycle") or {}
        status = str(lifecycle.get("status", "ACTIVE")).lower()
        end = lifecycle.get("endOfLifeTime")
        end_of_life = end.date().isoformat() if isinstance(end, datetime) else None
        if end_of_life and end_of_life <= datetime.now(UTC).date().isoformat():
            status = "retired"
        listed = ListedModel(
            model_id,
            summary.get("modelName"),
            summary.get("providerName"),
            status if status in ("active", "legacy", "retired") else "active",
            end_of_life,
        )
        directory.listed.setdefault(model_id, listed)
        directory.add(listed.name, model_id)
        if listed.name and listed.provider:
            directory.add(f"{listed.provider} {listed.name}", model_id)
    for profile in inference_profiles:
        models = profile.get("models") or []
        name = profile.get("inferenceProfileName")
        if not isinstance(name, str) or len(models) != 1:
            continue
        model_id = base_model_id(str(models[0].get("modelArn", "")))
        if model_id.startswith("arn:"):
            continue
        directory.add(_PROFILE_GEO_RE.sub("", name), model_id)
    return directory


def build_override(
    entries: Iterable[PriceListEntry],
    known: PriceCatalog,
    region: str,
    retrieved: str,
    result: RefreshResult,
    directory: ModelDirectory | None = None,
) -> PriceCatalog | None:
    """Price List entries joined to model ids as a format-2 catalog; None when nothing priced.

    A rate set needs its input and output price; several distinct prices for one direction of one
    set mean a dimension this parser did not recognise, and the set is refused rather than guessed.
    """
    directory = directory if directory is not None else model_directory(known)
    found: dict[str, dict[str, dict[str, set[Decimal]]]] = {}
    providers: dict[str, str] = {}
    unmatched: set[str] = set()
    for entry in entries:
        model_ids = directory.find(entry.name)
        if not model_ids:
            unmatched.add(entry.name)
            continue
        for model_id in model_ids:
            found.setdefault(model_id, {}).setdefault(entry.set_name, {}).setdefault(entry.direction, set()).add(
                entry.usd_per_million
            )
            if entry.provider:
                providers.setdefault(model_id, entry.provider)
    result.unmatched_names = sorted(unmatched)
    models: dict[str, ModelEntry] = {}
    for model_id, sets in sorted(found.items()):
        rates: dict[str, RateSet] = {}
        for set_name, directions in sets.items():
            ambiguous = any(len(values) > 1 for values in directions.values())
            if ambiguous or "input" not in directions or "output" not in directions:
                continue
            price = {direction: next(iter(values)) for direction, values in directions.items()}
            rates[set_name] = RateSet(
                price["input"], price["output"], price.get("cache_read"), price.get("cache_write_5m"),
                price.get("cache_write_1h"),
            )
        if "standard" not in rates:
            result.incomplete.append(model_id)
            continue
        models[model_id] = _entry(model_id, rates, known, directory, providers.get(model_id), region, retrieved)
    for model_id, entry in models.items():
        after = entry.model_price()
        result.updated[model_id] = after
        shipped = known.entries.get(model_id)
        if shipped is None:
            result.new_models.append(model_id)
            continue
        before_sets, _ = shipped.sets_for(region, known.region)
        before = ModelEntry(model_id, {"standard": before_sets["standard"]}, {}, name=shipped.name,
                            provider=shipped.provider).model_price()
        if before != after:
            result.changed[model_id] = (before, after)
    if not models:
        return None
    return PriceCatalog(
        {},
        source=SOURCE,
        retrieved=retrieved,
        region=region,
        entries=models,
        sources={"aws-price-list": f"{SOURCE}, regionCode {region}, read {retrieved}; model ids from "
                 "bedrock:ListFoundationModels and bedrock:ListInferenceProfiles"},
        format_version=2,
    )


def _entry(
    model_id: str,
    rates: dict[str, RateSet],
    known: PriceCatalog,
    directory: ModelDirectory,
    provider: str | None,
    region: str,
    retrieved: str,
) -> ModelEntry:
    shipped = known.entries.get(model_id)
    listed = directory.listed.get(model_id)
    threshold = shipped.long_context_threshold if shipped is not None else None
    notes: list[str] = []
    if threshold is None and any("long" in name.split("+") for name in rates):
        # The Price List names a long-context tier but not where it starts: without a threshold
        # the standard rates apply to every call, and the gap is said, not guessed.
        notes.append("the Price List has long-context rates but no threshold; they are not applied")
        rates = {name: value for name, value in rates.items() if "long" not in name.split("+")}
    return ModelEntry(
        model_id,
        rates,
        {},
        name=(listed.name if listed and listed.name else shipped.name if shipped else None),
        provider=(listed.provider if listed and listed.provider else shipped.provider if shipped else provider),
        status=listed.status if listed else (shipped.status if shipped else "active"),
        end_of_life=listed.end_of_life if listed and listed.end_of_life else (shipped.end_of_life if shipped else None),
        long_context_threshold=threshold,
        sources=(f"aws-price-list {region} {retrieved}",),
        notes=tuple(notes),
    )


# -- AWS calls -------------------------------------------------------------------------------------


def fetch_products(
    region: str,
    *,
    client: Any = None,
    session: boto3.Session | None = None,
    endpoint_region: str = "us-east-1",
    on_page: Callable[[str, int], None] | None = None,
    warnings: list[str] | None = None,
) -> tuple[list[str], int]:
    """Every Bedrock product document for ``region`` (all service codes) and the request count."""
    if client is None:
        if endpoint_region not in PRICE_LIST_ENDPOINT_REGIONS:
            raise PricingError(
                f"the Price List API has no endpoint in {endpoint_region}; use one of "
                + ", ".join(PRICE_LIST_ENDPOINT_REGIONS)
            )
        client = (session or boto3.session.Session()).client("pricing", region_name=endpoint_region)
    documents: list[str] = []
    requests = 0
    paginator = client.get_paginator("get_products")
    for service_code in SERVICE_CODES:
        pages = paginator.paginate(
            ServiceCode=service_code,
            Filters=[{"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}],
            FormatVersion="aws_v1",
        )
        try:
            for page in pages:
                requests += 1
                documents.extend(page.get("PriceList", []))
                if on_page is not None:
                    on_page(service_code, len(documents))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if service_code in OPTIONAL_SERVICE_CODES and code in ("NotFoundException", "InvalidParameterException"):
                if warnings is not None:
                    warnings.append(f"Price List service code {service_code} not offered ({code}); skipped")
                continue
            raise PricingError(f"Price List API ({service_code}, {region}) failed: {exc}") from exc
        except BotoCoreError as exc:
            raise PricingError(f"Price List API ({service_code}, {region}) failed: {exc}") from exc
    return documents, requests


def list_models(
    region: str, *, client: Any = None, session: boto3.Session | None = None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], int]:
    """``ListFoundationModels`` summaries and system ``ListInferenceProfiles`` in ``region``, and the request count."""
    if client is None:
        client = (session or boto3.session.Session()).client("bedrock", region_name=region)
    models = client.list_foundation_models().get("modelSummaries", [])
    requests = 1
    profiles: list[Mapping[str, Any]] = []
    for page in client.get_paginator("list_inference_profiles").paginate(typeEquals="SYSTEM_DEFINED"):
        requests += 1
        profiles.extend(page.get("inferenceProfileSummaries", []))
    return models, profiles, requests


def refresh_catalog(
    region: str = "us-east-1",
    *,
    client: Any = None,
    bedrock_client: Any = None,
    session: boto3.Session | None = None,
    known: PriceCatalog | None = None,
    output: str | os.PathLike[str] | None = None,
    write: bool = True,
    on_page: Callable[[str, int], None] | None = None,
    today: str | None = None,
) -> RefreshResult:
    """Read current prices and (unless ``write`` is False) write them as the local override catalog.

    ``client`` is a ``pricing`` client, ``bedrock_client`` a ``bedrock`` one in ``region``. If the
    model listing is refused (no ``bedrock:ListFoundationModels``), prices are still matched to the
    models the known catalog names, with a warning. Raises :class:`PricingError` on any Price List
    failure, having written nothing: the catalog in use stays whatever it was.
    """
    known = known if known is not None else PriceCatalog.shipped()
    warnings: list[str] = []
    documents, requests = fetch_products(region, client=client, session=session, on_page=on_page, warnings=warnings)
    result = RefreshResult(region=region, catalog=None, products_seen=len(documents), requests=requests)
    result.warnings.extend(warnings)
    try:
        models, profiles, listed_requests = list_models(region, client=bedrock_client, session=session)
        result.requests += listed_requests
    except (ClientError, BotoCoreError) as exc:
        models, profiles = [], []
        result.warnings.append(
            f"could not list Bedrock models in {region} ({exc}); only models the catalog already knows were matched"
        )
    directory = model_directory(known, models, profiles)
    entries: list[PriceListEntry] = []
    for document in documents:
        parsed, reasons = parse_product(document)
        entries.extend(parsed)
        for reason in reasons:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
    retrieved = today or datetime.now(UTC).strftime("%Y-%m-%d")
    result.catalog = build_override(entries, known, region, retrieved, result, directory)
    if result.catalog is None:
        raise PricingError(
            f"the Price List returned {len(documents)} Bedrock products for {region} but none matched "
            f"a Bedrock model with both input and output prices; nothing was written"
        )
    if write:
        path = Path(output).expanduser() if output is not None else default_override_path()
        write_catalog(result.catalog, path)
        result.written_to = path
    return result


def write_catalog(catalog: PriceCatalog, path: Path) -> None:
    """Write atomically (temp file + rename): a reader never sees half a catalog."""
    document = json.dumps(catalog.to_dict(), indent=2, sort_keys=False) + "\n"
    # Validate what is about to be written with the same reader that will load it.
    PriceCatalog.from_dict(json.loads(document), origin=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pricing-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(document)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise PricingError(f"cannot write the price catalog {path}: {exc}") from exc
    logger.info("wrote %d model prices to %s", len(catalog.models), path)
