"""The background writer: usage goes to the ledger in batches, off the caller's path.

A model call used to cost the caller two or three sequential ledger round trips. Now a request
hands its segment to this writer and returns; a daemon thread writes what has accumulated as one
batch (``Ledger.record_many``: one SQLite transaction, one DynamoDB TransactWriteItems per ~90
items) when the oldest pending entry is ``interval_s`` old, when ``max_rows`` model calls are
pending, on :meth:`flush` (Lambda handlers call ``guard.flush()`` before returning: a frozen
Lambda sandbox runs no threads), on :meth:`close`, and at interpreter exit.

What a crash loses is bounded: at most what was pending, i.e. one interval or ``max_rows`` calls.
A batch the ledger refuses is kept and retried with backoff, in order; beyond ``max_pending``
segments the oldest are dropped, counted and logged (memory stays bounded while the ledger is
down). Entries are written strictly in submission order, so the segments of one request (its
checkpoints, then its end) and a slice's release after its settlements keep their order.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from costguard.errors import BatchPartlyWritten, LedgerError
from costguard.ledger.base import Ledger
from costguard.usage import RequestSegment

logger = logging.getLogger("costguard")

#: Longest pause between retries of a batch the ledger refused.
MAX_BACKOFF_S = 30.0
#: Rows (model and tool calls) that make a batch due before its interval is up. A transaction
#: rewrites the same counter, rollup and index pages however many rows it holds (docs/ledgers.md).
DEFAULT_BATCH_ROWS = 5000


@dataclass(slots=True)
class _Entry:
    seq: int
    segment: RequestSegment | None
    action: Callable[[], None] | None
    what: str
    deny: bool  # written for a workflow whose policy says on_ledger_error: deny
    rows: int


class UsageWriter:
    """Writes segments (and ordered ledger actions) to ``ledger`` in batches from a thread."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        interval_s: float = 1.0,
        max_rows: int = DEFAULT_BATCH_ROWS,
        max_pending: int = 20_000,
        on_tick: Callable[[], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_failure: Callable[[LedgerError, set[str]], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.max_pending = max_pending
        self._on_tick = on_tick
        self._on_dropped = on_dropped
        self._on_failure = on_failure
        self._cond = threading.Condition()
        self._pending: deque[_Entry] = deque()
        self._pending_rows = 0
        self._oldest_at = 0.0
        self._submitted = 0
        self._done = 0  # every entry with seq <= _done was written or dropped
        self._flush_to = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        # Write attempts are numbered so that a flush is answered only by an attempt that began
        # after it: one already under way when the ledger came back may still fail, and must
        # neither fail the flush nor put off its retry.
        self._attempts = 0
        self._failed_attempt = 0  # the number of the last attempt that failed
        self._retry_asked_at = -1  # attempts begun when a flush last asked for a retry now
        #: The last error the ledger gave the writer, while it keeps failing (None once it writes).
        self.last_error: LedgerError | None = None
        #: Whether the failing batch holds entries of a ``deny`` workflow.
        self.failing_deny = False
        #: Batches written, and segments and actions written / dropped, since the start.
        self.batches = 0
        self.written = 0
        self.dropped = 0
        _WRITERS.add(self)

    # -- caller side ----------------------------------------------------------------------------

    def submit(self, segment: RequestSegment, *, deny: bool = False) -> None:
        rows = max(1, len(segment.model_calls) + len(segment.tool_calls))
        self._enqueue(segment, None, "recording usage", deny, rows)

    def submit_action(self, action: Callable[[], None], what: str, *, deny: bool = False) -> None:
        """Run ``action`` (a ledger write) on the writer, after everything submitted before it."""
        self._enqueue(None, action, what, deny, 1)

    def _enqueue(self, segment: RequestSegment | None, action: Callable[[], None] | None, what: str, deny: bool, rows: int) -> None:
        with self._cond:
            self._ensure_thread()
            self._submitted += 1
            if not self._pending:
                self._oldest_at = time.monotonic()
            self._pending.append(_Entry(self._submitted, segment, action, what, deny, rows))
            self._pending_rows += rows
            dropped = 0
            while len(self._pending) > self.max_pending:
                gone = self._pending.popleft()
                self._pending_rows -= gone.rows
                self._done = max(self._done, gone.seq)
                dropped += 1
            if dropped:
                self.dropped += dropped
            if self._pending_rows >= self.max_rows:
                self._cond.notify_all()
        if dropped:
            logger.error("ledger writer: %d pending segment(s) dropped (the ledger has refused writes for a while)", dropped)
            if self._on_dropped is not None:
                self._on_dropped(dropped)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def failing(self) -> bool:
        return self.last_error is not None

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Write everything submitted so far; True when it all reached the ledger in time."""
        with self._cond:
            target = self._submitted
            if self._done >= target and not self._pending:
                return self.last_error is None
            self._ensure_thread()
            asked_at = self._retry_asked_at = self._attempts
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._done < target:
                if self.last_error is not None and self._failed_attempt > asked_at:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is None else min(left, 0.05))
            return True

    def close(self, timeout: float | None = 10.0) -> bool:
        written = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        _WRITERS.discard(self)
        return written

    def abandon(self) -> int:
        """Drop everything pending and stop the thread, writing nothing; how many were dropped.

        For a process that must stop now, and for test isolation; :meth:`close` is the normal end.
        """
        with self._cond:
            lost = len(self._pending)
            self._pending.clear()
            self._pending_rows = 0
            self._done = self._submitted
            self.dropped += lost
            self._closing = True
            self._cond.notify_all()
        _WRITERS.discard(self)
        return lost

    # -- the thread -------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="costguard-ledger-writer", daemon=True)
            self._thread.start()

    def _due(self, now: float) -> bool:
        if not self._pending:
            return False
        # A failing batch waits out its backoff, unless a flush asked for a retry after the
        # last failed attempt began (once that retry fails too, the backoff holds again: a
        # flush that timed out must not leave the thread hammering a ledger that is down).
        if now < self._retry_at and self._failed_attempt > self._retry_asked_at:
            return False
        return (
            self._flush_to >= self._pending[0].seq
            or self._closing
            or self._pending_rows >= self.max_rows
            or now - self._oldest_at >= self.interval_s
        )

    def _run(self) -> None:
        next_tick = time.monotonic() + self.interval_s
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._due(now) or now >= next_tick:
                        break
                    if self._closing and not self._pending:
                        return
                    waits = [next_tick - now]
                    if self._pending:
                        waits.append(max(self._oldest_at + self.interval_s, self._retry_at) - now)
                    self._cond.wait(max(0.001, min(waits)))
                batch = list(self._pending) if self._due(now) else []
                if batch:
                    self._attempts += 1
                attempt = self._attempts
            if now >= next_tick:
                next_tick = now + self.interval_s
                self._tick()
            if batch:
                self._write(batch, attempt)

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception:  # noqa: BLE001 - a periodic chore (lease renewal) failing must not
            # stop the thread that writes everyone's usage.
            logger.exception("ledger writer: periodic task failed")

    def _write(self, batch: list[_Entry], attempt: int) -> None:
        done: set[int] = set()  # seqs written
        error: LedgerError | None = None
        try:
            start = 0
            while start < len(batch):
                entry = batch[start]
                if entry.action is not None:
                    entry.action()
                    done.add(entry.seq)
                    start += 1
                    continue
                end = start
                while end < len(batch) and batch[end].segment is not None:
                    end += 1
                run = batch[start:end]
                try:
                    self.ledger.record_many([e.segment for e in run if e.segment is not None])
                except BatchPartlyWritten as partly:
                    done.update(e.seq for e in run if id(e.segment) in partly.written)
                    raise
                done.update(e.seq for e in run)
                start = end
        except LedgerError as exc:
            error = exc
            if self.ledger.closed:
                # Closed under the writer (ledger.close() without guard.close()): nothing can
                # be written any more; count what is lost instead of retrying for ever.
                lost = [e.seq for e in batch if e.seq not in done]
                self.dropped += len(lost)
                logger.error("ledger writer: the ledger was closed with %d entries unwritten", len(lost))
                if self._on_dropped is not None:
                    self._on_dropped(len(lost))
                done.update(lost)
                error = None
        except Exception as exc:  # noqa: BLE001 - a bug in a backend must not kill the writer
            logger.exception("ledger writer: unexpected error")
            error = LedgerError(f"writing usage failed: {exc!r}")
        with self._cond:
            if done:
                kept: deque[_Entry] = deque()
                for entry in self._pending:
                    if entry.seq in done:
                        self._pending_rows -= entry.rows
                    else:
                        kept.append(entry)
                self._pending = kept
                self.written += len(done)
                self.batches += 1
            # Everything up to the first entry still pending is settled one way or the other.
            self._done = (self._pending[0].seq - 1) if self._pending else self._submitted
            if error is None:
                self.last_error = None
                self.failing_deny = False
                self._backoff = 0.0
                self._retry_at = 0.0
            else:
                self.last_error = error
                self.failing_deny = any(e.deny for e in self._pending)
                self._failed_attempt = attempt
                self._backoff = min(MAX_BACKOFF_S, max(self.interval_s, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
            if self._pending and error is None:
                self._oldest_at = time.monotonic()
            self._cond.notify_all()
        if error is not None:
            logger.error("ledger writer: %s (%d entries pending, retrying in %.1f s)", error, len(self._pending), self._backoff)
            if self._on_failure is not None:
                workflows = {e.segment.workflow for e in batch if e.segment is not None and e.seq not in done}
                try:
                    self._on_failure(error, workflows)
                except Exception:  # noqa: BLE001 - telemetry about a failure must not fail the writer
                    logger.exception("ledger writer: failure callback failed")



_WRITERS: weakref.WeakSet[UsageWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's writer thread may have held a writer's lock at the fork: the child gets fresh
    # locks, no thread, and none of the parent's pending entries (those are the parent's to write).
    for writer in list(_WRITERS):
        writer._cond = threading.Condition()
        writer._thread = None
        writer._pending.clear()
        writer._pending_rows = 0
        writer._done = writer._submitted


os.register_at_fork(after_in_child=_after_fork_in_child)

#: How long interpreter exit waits, in all, for writers to flush.
EXIT_FLUSH_S = 5.0


@atexit.register
def _flush_at_exit() -> None:
    deadline = time.monotonic() + EXIT_FLUSH_S
    for writer in list(_WRITERS):
        try:
            writer.close(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - exiting: log, never raise from an atexit hook
            logger.exception("ledger writer: flush at exit failed")
