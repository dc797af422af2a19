"""What every integration shares: importing its framework lazily, and finding the violation a
framework wrapped in its own exception."""

from __future__ import annotations

import importlib
from types import ModuleType

from costguard.errors import IntegrationError, PolicyViolation


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or say which costguard extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise IntegrationError(
            f"this integration needs the {module!r} package: pip install 'costguard[{extra}]'"
        ) from exc


def violation_in(exc: BaseException | None) -> PolicyViolation | None:
    """The costguard violation behind ``exc`` (frameworks re-raise it as their own error)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PolicyViolation):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
