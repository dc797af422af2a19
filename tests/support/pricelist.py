"""Price List API product documents shaped like pricing:GetProducts returns them (FormatVersion aws_v1).

The envelope (``PriceList`` of JSON strings) is botocore's ``pricing`` service model; the Bedrock
attributes follow public examples of real products: ``inferenceType`` "Input tokens", "Output
tokens", "Input tokens priority"/"... flex" with a ``serviceTier``; ``usagetype`` such as
``USE1-Claude4Sonnet-input-tokens-cross-region-global``; cache rows with a null
``inferenceType`` named only by ``usagetype`` (``...-cache-read-input-token-count-...``); and
descriptions such as "$0.0005 per 1K input tokens for Qwen3 Coder Next in US East (N. Virginia)".
"""

from __future__ import annotations

import json
from typing import Any


def product(
    name: str,
    inference_type: str | None,
    usd: str,
    *,
    unit: str = "1K tokens",
    feature: str = "On-demand Inference",
    usagetype: str | None = None,
    description: str | None = None,
    region: str = "us-east-1",
    name_key: str = "model",
    sku: str = "SKU",
    provider: str | None = None,
    service_tier: str | None = None,
) -> str:
    attributes: dict[str, Any] = {
        "regionCode": region,
        "servicecode": "AmazonBedrock",
        name_key: name,
        "inferenceType": inference_type,
        "feature": feature,
        "usagetype": usagetype or f"USE1-{name.replace(' ', '')}-{(inference_type or '').replace(' ', '-').lower()}",
    }
    if provider is not None:
        attributes["provider"] = provider
    if service_tier is not None:
        attributes["serviceTier"] = service_tier
    rate = f"{sku}.JRTCKXETXF.6YS6EN2CT7"
    return json.dumps(
        {
            "product": {"productFamily": "Amazon Bedrock", "attributes": attributes, "sku": sku},
            "serviceCode": "AmazonBedrock",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            rate: {
                                "unit": unit,
                                "endRange": "Inf",
                                "description": description or f"${usd} per {unit} for {name} in US East (N. Virginia)",
                                "rateCode": rate,
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )
