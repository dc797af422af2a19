"""``pip install costguard`` (no extras) in a fresh virtualenv: the meter and the action guard run,
pandas and pyarrow are not installed, and the report commands say which extra to install.

The virtualenv is built once per session (a wheel of the working tree, its core dependencies from
the package index or pip's cache); it takes a few tens of seconds, hence ``slow``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.venvs import build_wheel, make_venv, summary

pytestmark = pytest.mark.slow

PROBE = Path(__file__).resolve().parents[1] / "support" / "core_install_probe.py"
#: Claude 3 Haiku on-demand, us-east-1, USD per million tokens (https://aws.amazon.com/bedrock/pricing/,
#: as in costguard/pricing/data/bedrock_prices.json, retrieved 2026-11-01).
HAIKU_INPUT, HAIKU_OUTPUT = Decimal("0.25"), Decimal("1.25")
#: The issue's target for the core install beyond boto3 and what boto3 requires.
CORE_BEYOND_BOTO3_MAX_BYTES = 40_000_000


@pytest.fixture(scope="session")
def core_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("core-install")
    try:
        wheel = build_wheel(root / "wheel")
        yield make_venv(root / "venv", wheel)
    except RuntimeError as exc:
        pytest.fail(f"could not build the core virtualenv: {exc}")


def _run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(python.parents[1]),
                               "COSTGUARD_HOME": str(python.parents[1] / "home")})


def test_the_core_install_has_no_pandas_and_stays_small(core_python: Path) -> None:
    sizes = summary(core_python)
    assert "pandas_bytes" not in sizes and "pyarrow_bytes" not in sizes and "numpy_bytes" not in sizes
    assert sizes["beyond_boto3_bytes"] <= CORE_BEYOND_BOTO3_MAX_BYTES


def test_the_meter_and_the_action_guard_run_on_the_core_install(core_python: Path) -> None:
    run = _run(core_python, str(PROBE))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["installed"] == {"pandas": False, "pyarrow": False, "numpy": False}
    # 1000 input and 200 output tokens of Claude 3 Haiku, priced exactly
    expected = Decimal(1000) * HAIKU_INPUT / 10**6 + Decimal(200) * HAIKU_OUTPUT / 10**6
    assert Decimal(result["session_cost_usd"]) == expected == Decimal("0.0005")
    assert result["session_model_calls"] == 1
    assert result["action_body"] == {"items": [{"id": 0}, {"id": 1}], "_costguard": {"items_dropped": 8, "strings_truncated": 0}}
    assert result["loaded"] == []


@pytest.mark.parametrize("command", [["report"], ["reconcile", "--dry-run"]])
def test_report_commands_name_the_extra_to_install(core_python: Path, command: list[str]) -> None:
    costguard = core_python.parent / "costguard"
    run = subprocess.run([str(costguard), "--quiet", *command], capture_output=True, text=True, timeout=120,
                         check=False, env={"PATH": "/usr/bin:/bin", "COSTGUARD_HOME": str(core_python.parents[1] / "home"),
                                           "AWS_DEFAULT_REGION": "us-east-1"})
    assert run.returncode == 1
    assert "pip install 'costguard[reports]'" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_the_cli_without_the_extra_still_checks_policies(core_python: Path) -> None:
    policies = Path(__file__).resolve().parents[2] / "policies"
    run = subprocess.run([str(core_python.parent / "costguard"), "policy", "check", str(policies)],
                         capture_output=True, text=True, timeout=120, check=False, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ok: ")
