"""Per-session state read from the ledger once per process, then kept and updated in memory.

The meter needs a session's totals (for per-session caps) and its tool-repeat counts before
every request. Reading them from the ledger each time was a read on the caller's path per
request; with batched writes it would also miss this process's own unwritten usage. So each is
read once, kept, and updated with what this process records; an entry idle for ``idle_s`` is
read again, and at most ``max_entries`` sessions are kept (the least recently used go first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

#: Sessions a cache keeps at most.
SESSION_CACHE_ENTRIES = 10_000

V = TypeVar("V")


class SessionCache(Generic[V]):
    """One kind of per-session value (totals, repeat counts), keyed by session id."""

    def __init__(self, idle_s: float, copy: Callable[[V], V], max_entries: int = SESSION_CACHE_ENTRIES) -> None:
        self.idle_s = idle_s
        self._copy = copy
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str, load: Callable[[], V | None]) -> V | None:
        """A copy of the kept value, or of what ``load()`` reads (None: not read, not kept)."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None and now - entry[0] < self.idle_s:
                self._entries.move_to_end(session_id)
                return self._copy(entry[1])
        value = load()
        if value is None:
            return None
        with self._lock:
            self._entries[session_id] = (now, value)
            self._entries.move_to_end(session_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return self._copy(value)

    def update(self, session_id: str, apply: Callable[[V], None]) -> None:
        """Apply this process's own new usage to a kept value (nothing when none is kept)."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None:
                apply(entry[1])
                self._entries[session_id] = (time.monotonic(), entry[1])
