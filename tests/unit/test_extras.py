"""Optional dependencies: the core never imports them, and a missing one names the extra."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable

import pytest

from costguard import _extras
from costguard.errors import CostguardError, MissingExtraError


def _missing(name: str) -> Callable[[str], None]:
    def import_module(module: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    return import_module


@pytest.mark.parametrize("missing", ["pandas", "pyarrow", "numpy", "pyarrow.parquet"])
def test_a_missing_reports_module_names_the_extra(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setattr(importlib, "import_module", _missing(missing))
    with pytest.raises(MissingExtraError) as caught:
        _extras.require_reports(missing)
    top = missing.split(".")[0]
    assert str(caught.value) == f"this needs {top}, which comes with the 'reports' extra: pip install 'costguard[reports]'"
    assert caught.value.extra == "reports" and isinstance(caught.value, CostguardError)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_another_missing_module_is_not_blamed_on_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # pandas installed but broken (one of its own dependencies gone): that error stays as it is
    monkeypatch.setattr(importlib, "import_module", _missing("dateutil"))
    with pytest.raises(ModuleNotFoundError, match="dateutil"):
        _extras.require_reports("pandas")


def test_present_modules_are_returned() -> None:
    assert _extras.require_reports("pyarrow.parquet").__name__ == "pyarrow.parquet"


def test_the_core_imports_no_optional_dependency() -> None:
    code = (
        "import sys, costguard, costguard.meter, costguard.action_guard, costguard.cli, costguard.budgets, "
        "costguard.enforce, costguard.ledger.dynamodb, costguard.replay, costguard.s3reports;"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert run.stdout.strip() == "[]"
