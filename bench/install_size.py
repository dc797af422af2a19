"""Installed size of costguard in fresh virtualenvs: the core install and the ``reports`` extra.

Builds costguard's wheel from the working tree, installs ``costguard`` and ``costguard[reports]``
into two new virtualenvs (no pip, no ``__pycache__`` counted) and prints, per install, the bytes of
every installed file, how much of it is boto3 and what boto3 requires, and the rest ("beyond
boto3"; the core target is at most 40 MB).

    python bench/install_size.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.venvs import build_wheel, make_venv, summary  # noqa: E402

MB = 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="costguard-size-") as tmp:
        wheel = build_wheel(Path(tmp) / "wheel")
        for label, extras in (("core", ""), ("reports", "reports")):
            results[label] = summary(make_venv(Path(tmp) / label, wheel, extras))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for label, sizes in results.items():
        print(f"{label:8} total {sizes['total_bytes'] / MB:6.1f} MB, boto3 and its requirements "
              f"{sizes['boto3_bytes'] / MB:5.1f} MB, beyond boto3 {sizes['beyond_boto3_bytes'] / MB:6.1f} MB")


if __name__ == "__main__":
    main()
