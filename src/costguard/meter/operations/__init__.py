"""The registry of metered operations: one small adapter class per boto3 method.

An adapter says what is checked before the request is sent, where the usage comes from in the
response, and how it is priced. Adapters register themselves with :func:`register`; every module
of this package is imported on first use, so adding an operation is adding one file here.

Cost-bearing methods that no adapter meters are listed in :mod:`.unmetered` and follow the
policy setting ``unmetered: allow | warn | block``; every other method passes straight through.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costguard.meter.operations.base import Operation

#: The services whose clients ``Guard.wrap`` accepts.
METERED_SERVICES: frozenset[str] = frozenset({"bedrock-runtime", "bedrock-agent-runtime"})

_REGISTRY: dict[tuple[str, str], Operation] = {}
_loaded = False
_load_lock = threading.Lock()


def register(cls: type[Operation]) -> type[Operation]:
    """Class decorator: ``cls`` meters ``cls.method`` of ``cls.service`` clients."""
    key = (cls.service, cls.method)
    if key in _REGISTRY:
        raise RuntimeError(f"two adapters for {cls.service}.{cls.method}")
    _REGISTRY[key] = cls()
    return cls


def _load_all() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base":
                importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True


def operations_for(service: str) -> dict[str, Operation]:
    """``method name -> adapter`` for one service's clients."""
    if not _loaded:
        _load_all()
    return {method: op for (svc, method), op in _REGISTRY.items() if svc == service}


def unmetered_for(service: str) -> dict[str, str]:
    """``method name -> why it costs money`` for the cost-bearing methods nothing meters."""
    from costguard.meter.operations.unmetered import COST_BEARING_UNMETERED

    return dict(COST_BEARING_UNMETERED.get(service, {}))
