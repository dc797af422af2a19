"""What ``costguard pricing show`` prints: the catalog as rows (all models) or one model's rates.

Plain data (JSON-ready dicts of strings, numbers and lists) so the CLI only renders it.
"""

from __future__ import annotations

from typing import Any

from costguard.pricing.catalog import PriceCatalog, base_model_id, scope_of
from costguard.pricing.rates import RateSet

__all__ = ["describe_set", "model_detail", "model_rows"]


def model_rows(catalog: PriceCatalog, region: str | None = None) -> list[dict[str, Any]]:
    """One row per catalog model: name, provider, lifecycle, dimensions and priced regions.

    With ``region``, each row also carries that region's standard in-region rates and whether
    they are assumed (no published figure for the region: the catalog region's figure).
    """
    rows: list[dict[str, Any]] = []
    for model_id, entry in sorted(catalog.entries.items()):
        row: dict[str, Any] = {
            "model_id": model_id,
            "name": entry.name,
            "provider": entry.provider,
            "status": entry.status,
            "end_of_life": entry.end_of_life,
            "dimensions": entry.dimensions(),
            "regions": [catalog.region, *sorted(entry.regions)],
        }
        if region is not None:
            sets, assumed = entry.sets_for(region, catalog.region)
            row.update(sets["standard"].to_dict())
            row["region"] = region
            row["region_assumed"] = assumed
        rows.append(row)
    return rows


def model_detail(catalog: PriceCatalog, model_id: str, region: str | None = None) -> dict[str, Any]:
    """Every rate of the model ``model_id`` names, as priced in ``region`` (default: the catalog's).

    ``input``/``output``/``cache_*`` at the top are the standard rates for the id's own scope.
    An id the catalog does not know shows the fallback rates with ``priced`` false.
    """
    where = region or catalog.region
    card = catalog.rate_card(model_id, region=where)
    scope = scope_of(model_id)
    detail: dict[str, Any] = {
        "model_id": card.base_model_id if card.priced else model_id,
        "requested_id": model_id,
        "priced": card.priced,
        "scope": scope,
        "region": where,
        "flags": sorted(card.flags),
    }
    detail.update(_flat(card.standard))
    entry = catalog.entries.get(card.base_model_id) if card.priced else None
    if entry is None:
        detail["base_model_id"] = base_model_id(model_id)
        detail["rates"] = {"standard": card.standard.to_dict()}
        return detail
    sets, assumed = entry.sets_for(where, catalog.region)
    detail.update(
        {
            "name": entry.name,
            "provider": entry.provider,
            "status": entry.status,
            "end_of_life": entry.end_of_life,
            "long_context_threshold": entry.long_context_threshold,
            "dimensions": entry.dimensions(),
            "region_assumed": assumed,
            "rates": {name: rates.to_dict() for name, rates in sets.items()},
            "regions": [catalog.region, *sorted(entry.regions)],
            "sources": list(entry.sources),
            "notes": list(entry.notes),
        }
    )
    return detail


def _flat(rates: RateSet) -> dict[str, str]:
    out = rates.to_dict()
    # The single-rate view older callers read: `cache_write` is the 5-minute write.
    if "cache_write_5m" in out:
        out["cache_write"] = out["cache_write_5m"]
    return out


def describe_set(name: str) -> str:
    """``global+priority+long`` -> ``global, priority, long context``: a rate set for people."""
    if name == "standard":
        return "in-region / geo"
    words = {"long": "long context", "latency": "latency-optimized"}
    return ", ".join(words.get(part, part) for part in name.split("+"))

