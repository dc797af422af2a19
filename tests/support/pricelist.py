"""Price List API product documents shaped like pricing:GetProducts returns them (FormatVersion aws_v1)."""

from __future__ import annotations

import json
from typing import Any


def product(
    name: str,
    inference_type: str,
    usd: str,
    *,
    unit: str = "1K tokens",
    feature: str = "On-demand Inference",
    usagetype: str | None = None,
    description: str | None = None,
    region: str = "us-east-1",
    name_key: str = "model",
    sku: str = "SKU",
) -> str:
    attributes: dict[str, Any] = {
        "regionCode": region,
        "servicecode": "AmazonBedrock",
        name_key: name,
        "inferenceType": inference_type,
        "feature": feature,
        "usagetype": usagetype or f"USE1-{name.replace(' ', '')}-{inference_type.replace(' ', '-').lower()}",
    }
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
                                "description": description or f"${usd} per {unit} for {name} {inference_type}",
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
