"""Optional dependencies: one place that imports them and says which extra to install.

The core install (``pip install costguard``) meters, enforces policies and guards actions without
pandas or pyarrow; only the report and reconcile paths need them (``costguard[reports]``). Those
paths get their modules here, so a missing extra is a :class:`MissingExtraError` naming the
install command instead of a bare ``ModuleNotFoundError`` deep inside a report.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from costguard.errors import MissingExtraError

#: The modules each extra provides (numpy comes with pandas and pyarrow).
_EXTRA_MODULES: dict[str, frozenset[str]] = {"reports": frozenset({"pandas", "pyarrow", "numpy"})}


def require_reports(module: str = "pandas") -> ModuleType:
    """``module`` (``pandas``, ``pyarrow``, ``pyarrow.parquet``...) or a MissingExtraError naming the extra."""
    return _require("reports", module)


def _require(extra: str, module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _EXTRA_MODULES[extra]:
            raise  # something else is broken: not ours to rename
        raise MissingExtraError(
            f"this needs {missing}, which comes with the '{extra}' extra: pip install 'costguard[{extra}]'",
            extra=extra,
        ) from exc
