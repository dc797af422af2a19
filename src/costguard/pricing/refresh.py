"""Refresh model prices from the AWS Price List API into a local override catalog.

Bedrock's own models are listed under the service code ``AmazonBedrock`` and the Marketplace-billed
third-party models (most Anthropic models) under ``AmazonBedrockFoundationModels``. Neither product
carries a Bedrock *model id*: products name the model in words (``model`` or ``servicename``
attributes, e.g. ``Claude 3.5 Sonnet (Amazon Bedrock Edition)``). So a refresh can only update
models the shipped catalog already knows by name; anything else is reported as unmatched rather
than guessed. Only plain on-demand, in-region token prices are taken: batch, provisioned,
cross-region (geo/global), long-context, latency-optimised and flex/priority tiers are skipped,
because the meter prices on-demand calls.

The Price List API has endpoints only in us-east-1, eu-central-1 and ap-south-1; the *region being
priced* is a filter (``regionCode``), independent of the endpoint.
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
from costguard.pricing.catalog import ModelPrice, PriceCatalog, default_override_path

logger = logging.getLogger("costguard.pricing")

SERVICE_CODES = ("AmazonBedrock", "AmazonBedrockFoundationModels")
PRICE_LIST_ENDPOINT_REGIONS = ("us-east-1", "eu-central-1", "ap-south-1")
SOURCE = "AWS Price List API (pricing:GetProducts, AmazonBedrock + AmazonBedrockFoundationModels)"

# Tiers that are not what an on-demand model call is billed at.
_SKIP_MARKERS = (
    "batch",
    "provisioned",
    "longcontext",
    "long context",
    "latency optimized",
    "latencyoptimized",
    "latency-optimized",
    "global",
    "geo",
    "cross-region",
    "crossregion",
    "flex",
    "priority",
    "reserved",
    "custom model",
    "customization",
    "training",
    "storage",
)
_EDITION_RE = re.compile(r"\(amazon bedrock edition\)", re.IGNORECASE)
_PROVIDER_WORDS = ("anthropic", "amazon", "meta", "mistral ai", "mistral", "cohere", "ai21 labs", "ai21", "deepseek", "writer", "openai", "qwen")


@dataclass(frozen=True, slots=True)
class PriceListEntry:
    """One token price read from the Price List (USD per 1M tokens)."""

    name: str
    direction: str  # input | output | cache_read | cache_write
    usd_per_million: Decimal
    sku: str


@dataclass(slots=True)
class RefreshResult:
    """What a refresh found: the override catalog and everything it could not use, with reasons."""

    region: str
    catalog: PriceCatalog | None
    updated: dict[str, ModelPrice] = field(default_factory=dict)
    changed: dict[str, tuple[ModelPrice, ModelPrice]] = field(default_factory=dict)
    unmatched_names: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    incomplete: list[str] = field(default_factory=list)  # models missing an input or output price
    products_seen: int = 0
    requests: int = 0
    written_to: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "products_seen": self.products_seen,
            "requests": self.requests,
            "updated": sorted(self.updated),
            "changed": {
                model_id: {"before": before.to_dict(), "after": after.to_dict()}
                for model_id, (before, after) in sorted(self.changed.items())
            },
            "unmatched_names": self.unmatched_names,
            "incomplete": self.incomplete,
            "skipped": dict(sorted(self.skipped.items())),
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
    feature = str(attributes.get("feature", "")).lower()
    if feature and "on-demand" not in feature and "on demand" not in feature:
        return [], ["not on-demand"]
    labels = " ".join(
        str(attributes.get(key, "")) for key in ("inferenceType", "usagetype", "operation")
    ).lower()
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
                reasons.append("other tier (batch, provisioned, cross-region, ...)")
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
                PriceListEntry(name, direction, (usd * per_million).normalize(), str(dimension.get("rateCode", "")))
            )
    return entries, reasons


def _direction(text: str) -> str | None:
    if "cache" in text and "read" in text:
        return "cache_read"
    if "cache" in text and "write" in text:
        return "cache_write"
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


def build_override(
    entries: Iterable[PriceListEntry], known: PriceCatalog, region: str, retrieved: str, result: RefreshResult
) -> PriceCatalog | None:
    """Match Price List entries to the known catalog's models by name; None when nothing matched."""
    by_name: dict[str, list[str]] = {}
    for model_id, price in known.models.items():
        if price.name:
            by_name.setdefault(normalise_name(price.name), []).append(model_id)
    found: dict[str, dict[str, set[Decimal]]] = {}
    unmatched: set[str] = set()
    for entry in entries:
        model_ids = by_name.get(normalise_name(entry.name))
        if not model_ids:
            unmatched.add(entry.name)
            continue
        for model_id in model_ids:
            found.setdefault(model_id, {}).setdefault(entry.direction, set()).add(entry.usd_per_million)
    result.unmatched_names = sorted(unmatched)
    models: dict[str, ModelPrice] = {}
    for model_id, directions in sorted(found.items()):
        # Several distinct prices for one direction means tiers this parser did not recognise:
        # refusing the model is better than picking one of them at random.
        ambiguous = [d for d, values in directions.items() if len(values) > 1]
        if ambiguous or "input" not in directions or "output" not in directions:
            result.incomplete.append(model_id)
            continue
        shipped = known.models[model_id]
        # Each direction found has exactly one price here (ambiguous ones were refused above).
        found_price = {direction: next(iter(values)) for direction, values in directions.items()}
        price = ModelPrice(
            model_id,
            input=found_price["input"],
            output=found_price["output"],
            cache_read=found_price.get("cache_read", shipped.cache_read),
            cache_write=found_price.get("cache_write", shipped.cache_write),
            name=shipped.name,
            provider=shipped.provider,
        )
        models[model_id] = price
        if price != shipped:
            result.changed[model_id] = (shipped, price)
    result.updated = models
    if not models:
        return None
    return PriceCatalog(models, source=SOURCE, retrieved=retrieved, region=region)


def fetch_products(
    region: str,
    *,
    client: Any = None,
    session: boto3.Session | None = None,
    endpoint_region: str = "us-east-1",
    on_page: Callable[[str, int], None] | None = None,
) -> tuple[list[str], int]:
    """Every Bedrock product document for ``region`` (both service codes) and the request count."""
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
        except (ClientError, BotoCoreError) as exc:
            raise PricingError(f"Price List API ({service_code}, {region}) failed: {exc}") from exc
    return documents, requests


def refresh_catalog(
    region: str = "us-east-1",
    *,
    client: Any = None,
    session: boto3.Session | None = None,
    known: PriceCatalog | None = None,
    output: str | os.PathLike[str] | None = None,
    write: bool = True,
    on_page: Callable[[str, int], None] | None = None,
    today: str | None = None,
) -> RefreshResult:
    """Read current prices and (unless ``write`` is False) write them as the local override catalog.

    Raises :class:`PricingError` on any failure, having written nothing: the catalog in use stays
    whatever it was (shipped, or a previous override).
    """
    known = known if known is not None else PriceCatalog.shipped()
    documents, requests = fetch_products(region, client=client, session=session, on_page=on_page)
    result = RefreshResult(region=region, catalog=None, products_seen=len(documents), requests=requests)
    entries: list[PriceListEntry] = []
    for document in documents:
        parsed, reasons = parse_product(document)
        entries.extend(parsed)
        for reason in reasons:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
    retrieved = today or datetime.now(UTC).strftime("%Y-%m-%d")
    result.catalog = build_override(entries, known, region, retrieved, result)
    if result.catalog is None:
        raise PricingError(
            f"the Price List returned {len(documents)} Bedrock products for {region} but none matched "
            f"a known model with both input and output prices; nothing was written"
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
