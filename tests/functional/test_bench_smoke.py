"""Each benchmark runs end to end in its --quick form and prints its figures and its verdict.

Whether a target is met is the benchmark's business (run it full size, see bench/); here only
that it runs, prints the ratio line, and exits 0 exactly when it says the target was met.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(name: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def verdict(out: str, line: str) -> bool:
    (found,) = re.findall(rf"^{line}.*: (MET|NOT MET)$", out, flags=re.MULTILINE)
    return found == "MET"


@pytest.mark.slow
def test_meter_overhead_prints_both_cpu_ratios() -> None:
    code, out = run_bench("meter_overhead.py")
    for api in ("InvokeAgent", "Converse"):
        assert re.search(rf"^{api} ratio wrapped/unwrapped CPU: \d+\.\d{{3}} \(target <= 1\.\d\d: (MET|NOT MET)\)$", out, re.MULTILINE), out
        assert re.search(rf"^{api} floor/unwrapped CPU: \d+\.\d{{3}} ", out, re.MULTILINE), out
    assert code == (0 if verdict(out, "targets") else 1)


@pytest.mark.slow
def test_meter_cache_effect_prints_hot_and_cold_for_meter_and_floor() -> None:
    code, out = run_bench("meter_cache_effect.py")
    for call in ("Converse", "InvokeAgent"):
        for side in ("floor", "metered"):
            # hot us, cold us, cold/hot
            assert re.search(rf"^{call} .* {side} +\d+\.\d +\d+\.\d +\d+\.\d\dx$", out, re.MULTILINE), out
    assert code == 0


@pytest.mark.slow
def test_ledger_throughput_prints_requests_and_write_units_per_model_call() -> None:
    code, out = run_bench("ledger_throughput.py")
    for api in ("Converse", "InvokeAgent"):
        # API, requests, model calls, calls/s, writes/call, WCU/call, reads/call
        assert re.search(rf"^{api} +8 +\d+ +[\d.]+ +\d+\.\d{{3}} +\d+\.\d\d +\d+\.\d{{3}}  .*TransactWriteItems=\d+", out, re.MULTILINE), out
    assert code == (0 if verdict(out, r"target \(") else 1)


@pytest.mark.slow
def test_report_scale_prints_every_grouping_and_checks_both_sides_agree() -> None:
    code, out = run_bench("report_scale.py")
    for group_by in ("workflow", "day", "model", "user", "agent", "action", "price-key"):
        # rollups s, peak MiB, rows s, peak MiB, speedup, same output
        assert re.search(rf"^{group_by} +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+x  yes ", out, re.MULTILINE), out
    assert re.search(r"^drill-down over the rows: top sessions [\d.]+ s, one session's usage [\d.]+ s$", out, re.MULTILINE), out
    # two targets: the SQLite rollup reports and drill-down, and the DynamoDB Query pages
    sqlite_met = verdict(out, r"target \(each rollup report[^\n]*")
    dynamodb_met = verdict(out, r"target \(<= 1 Query page[^\n]*")
    assert code == (0 if sqlite_met and dynamodb_met else 1)
