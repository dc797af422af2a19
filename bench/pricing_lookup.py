"""Rate-card lookup and pricing cost on the meter's hot path, against the shipped catalog.

Times, per call and best of ROUNDS: a cached ``PriceCatalog.rate_card`` lookup with every
dimension given (model id, region, tier, latency), ``RateCard.price`` of a call with input,
output, cache read and 1-hour cache write tokens, and the two together. Exits non-zero when a
cached lookup takes more than the 2 microsecond budget.

    python bench/pricing_lookup.py [--calls 200000] [--rounds 7] [--budget-us 2.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from costguard.pricing import PriceCatalog  # noqa: E402
from costguard.pricing.key import CallUsage  # noqa: E402

# A mix the meter sees: profiles of every scope, tiers, a long-context call, an unknown id.
LOOKUPS = [
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "us-east-1", "standard", False),
    ("eu.anthropic.claude-sonnet-4-6", "eu-central-1", "standard", False),
    ("us.amazon.nova-2-lite-v1:0", "us-west-2", "priority", False),
    ("amazon.nova-pro-v1:0", "eu-west-1", "flex", False),
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "us-east-2", "standard", True),
    ("openai.gpt-oss-120b-1:0", "ap-northeast-1", "standard", False),
    ("acme.unknown-model-v1:0", "us-east-1", "standard", False),
]
USAGE = CallUsage(input_tokens=210_000, output_tokens=1_500, cache_read_tokens=40_000, cache_write_1h_tokens=2_000)


def per_call_us(run: Callable[[int], None], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(calls)
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget-us", type=float, default=2.0)
    args = parser.parse_args()

    catalog = PriceCatalog.shipped()
    lookups = LOOKUPS * (args.calls // len(LOOKUPS) + 1)
    cards = [catalog.rate_card(m, region=r, tier=t, latency_optimized=lat) for m, r, t, lat in LOOKUPS]

    def lookup(n: int) -> None:
        rate_card = catalog.rate_card
        for model_id, region, tier, latency in lookups[:n]:
            rate_card(model_id, region=region, tier=tier, latency_optimized=latency)

    def price(n: int) -> None:
        for card in (cards * (n // len(cards) + 1))[:n]:
            card.price(USAGE)

    def both(n: int) -> None:
        rate_card = catalog.rate_card
        for model_id, region, tier, latency in lookups[:n]:
            rate_card(model_id, region=region, tier=tier, latency_optimized=latency).price(USAGE)

    start = time.perf_counter()
    cold = PriceCatalog.shipped()
    load_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    for model_id, region, tier, latency in LOOKUPS:
        cold.rate_card(model_id, region=region, tier=tier, latency_optimized=latency)
    first_us = (time.perf_counter() - start) / len(LOOKUPS) * 1e6

    lookup_us = per_call_us(lookup, args.calls, args.rounds)
    price_us = per_call_us(price, args.calls, args.rounds)
    both_us = per_call_us(both, args.calls, args.rounds)
    print(f"catalog load (shipped, {len(catalog.models)} models):  {load_ms:8.2f} ms")
    print(f"first rate_card per (model, region, tier, latency):      {first_us:8.2f} us")
    print(f"cached rate_card lookup, all dimensions:                 {lookup_us:8.3f} us  (budget {args.budget_us} us)")
    print(f"RateCard.price (input, output, cache read, 1h write):    {price_us:8.3f} us")
    print(f"lookup + price:                                          {both_us:8.3f} us")
    if lookup_us > args.budget_us:
        print(f"FAIL: a cached lookup took {lookup_us:.3f} us, over the {args.budget_us} us budget")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
