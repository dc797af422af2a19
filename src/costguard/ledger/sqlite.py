"""The embedded ledger: one SQLite file in WAL mode, shared safely by threads and processes.

Operations lease a connection from a small pool (at most ``max_connections`` open, whatever the
number of threads; a forked child opens its own), so threads that come and go leave no file
descriptors behind. Every storage failure is a :class:`~costguard.errors.LedgerError`. Writes
that read before they write (reservations, request segments) run under ``BEGIN IMMEDIATE`` so two
processes cannot both see room in a budget and both take it. Money is stored as integer
nano-dollars.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costguard.errors import LedgerError, LedgerNotFound
from costguard.ledger.base import ALERT_CLAIM_LEASE_MS, USER_ID_KEY_BYTES, Ledger, new_lease_id
from costguard.ledger.base import now_or as _now
from costguard.ledger.sqlite_rollups import SCHEMA as _ROLLUP_SCHEMA
from costguard.ledger.sqlite_rollups import (
    Progress,
    build_rollups,
    daily_rows,
    record_rollups,
    record_violation_rollups,
    rollups_ready,
)
from costguard.usage import (
    ActionRecord,
    AlertKey,
    BudgetCounter,
    DailyUsage,
    IdempotencyRecord,
    KillSwitch,
    Lease,
    LeaseSettle,
    RequestSegment,
    Reservation,
    ReserveResult,
    SessionUsage,
    Totals,
    ViolationRecord,
    merge_by_request,
    nanos_to_usd,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from costguard.reports import Report, ReportQuery

#: 2: report rollups (``sqlite_rollups``). An older costguard refuses the file rather than write
#: rows without their rollups.
SCHEMA_VERSION = 2
#: Connections a ledger keeps open at most (threads beyond it wait for one, up to the busy
#: timeout). SQLite runs one writer at a time anyway; a few let WAL readers run beside it.
DEFAULT_MAX_CONNECTIONS = 8
# Everything the sqlite3 module raises for a failed read or write: its own errors, the OS
# (EMFILE, ENOSPC), and values it cannot bind (an int beyond 64 bits, a lone surrogate).
_STORAGE_ERRORS = (sqlite3.Error, OSError, OverflowError, ValueError)

#: Columns added after a table was first shipped: (table, column, definition). Ledgers written by
#: an older costguard gain them on open (SQLite's ADD COLUMN is O(1): no rewrite of the rows).
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model_calls", "price_key", "TEXT"),
    ("model_calls", "flags", "TEXT NOT NULL DEFAULT ''"),
    # alert claims have a state and a lease; every older row was sent
    ("alert_keys", "state", "TEXT NOT NULL DEFAULT 'sent'"),
    ("alert_keys", "lease_until_ms", "INTEGER"),
    ("requests", "ttft_ms", "INTEGER"),
    ("actions", "cost_nanos", "INTEGER NOT NULL DEFAULT 0"),
    ("actions", "billed_ms", "INTEGER"),
    ("actions", "memory_mb", "INTEGER"),
    ("actions", "architecture", "TEXT"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT,
    operation TEXT NOT NULL,
    agent_id TEXT,
    agent_alias_id TEXT,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    segments INTEGER NOT NULL DEFAULT 1,
    model_calls INTEGER NOT NULL,
    tool_calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    tool_response_bytes INTEGER NOT NULL,
    max_tool_response_bytes INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    model_latency_ms INTEGER NOT NULL,
    tool_latency_ms INTEGER NOT NULL,
    unknown_events INTEGER NOT NULL,
    unpriced_calls INTEGER NOT NULL,
    return_control_id TEXT,
    ttft_ms INTEGER
);
CREATE INDEX IF NOT EXISTS requests_by_workflow ON requests (workflow, started_ms);
CREATE INDEX IF NOT EXISTS requests_by_session ON requests (session_id, return_control_id);
CREATE TABLE IF NOT EXISTS model_calls (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT,
    ts_ms INTEGER NOT NULL,
    model_id TEXT NOT NULL,
    base_model_id TEXT NOT NULL,
    step_type TEXT NOT NULL,
    agent TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    priced INTEGER NOT NULL,
    latency_ms INTEGER,
    price_key TEXT,
    flags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS model_calls_by_time ON model_calls (ts_ms);
CREATE INDEX IF NOT EXISTS model_calls_by_request ON model_calls (request_id);
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    session_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    agent TEXT,
    response_bytes INTEGER,
    latency_ms INTEGER
);
CREATE INDEX IF NOT EXISTS tool_calls_by_time ON tool_calls (ts_ms);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    user_id TEXT,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    model_calls INTEGER NOT NULL,
    tool_calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    tool_response_bytes INTEGER NOT NULL,
    max_tool_response_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS violations (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    session_id TEXT,
    request_id TEXT,
    kind TEXT NOT NULL,
    rule TEXT NOT NULL,
    limit_value TEXT NOT NULL,
    observed TEXT NOT NULL,
    enforced INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS violations_by_session ON violations (session_id);
CREATE INDEX IF NOT EXISTS violations_by_workflow ON violations (workflow, ts_ms);
CREATE TABLE IF NOT EXISTS budget_counters (
    workflow TEXT NOT NULL,
    period TEXT NOT NULL,
    spent_nanos INTEGER NOT NULL DEFAULT 0,
    reserved_nanos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow, period)
);
CREATE TABLE IF NOT EXISTS budget_leases (
    lease_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    periods TEXT NOT NULL,
    amount_nanos INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_leases_by_expiry ON budget_leases (workflow, expires_at_ms);
CREATE TABLE IF NOT EXISTS kill_switches (
    workflow TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS kill_switch_log (
    id INTEGER PRIMARY KEY,
    workflow TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    actor TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_keys (
    key TEXT PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'sent',
    lease_until_ms INTEGER
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    workflow TEXT NOT NULL,
    action TEXT NOT NULL,
    session_id TEXT,
    request_id TEXT,
    bytes_before INTEGER NOT NULL,
    bytes_after INTEGER NOT NULL,
    fields_dropped INTEGER NOT NULL,
    items_dropped INTEGER NOT NULL,
    strings_truncated INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    latency_ms INTEGER,
    agent_id TEXT,
    cost_nanos INTEGER NOT NULL DEFAULT 0,
    billed_ms INTEGER,
    memory_mb INTEGER,
    architecture TEXT
);
CREATE INDEX IF NOT EXISTS actions_by_time ON actions (ts_ms);
CREATE TABLE IF NOT EXISTS session_models (
    session_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    pinned_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tool_repeats (
    session_id TEXT NOT NULL,
    call_hash TEXT NOT NULL,
    calls INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    PRIMARY KEY (session_id, call_hash)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    claimed_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    response_sha256 TEXT,
    response_bytes INTEGER,
    completed_at_ms INTEGER
);
"""

_TOTAL_COLUMNS = (
    "model_calls",
    "tool_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "tool_response_bytes",
    "max_tool_response_bytes",
)


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a AND b`` of the conditions whose value is given (None means "any")."""
    kept = [(clause, value) for clause, value in conditions if value is not None]
    if not kept:
        return "", []
    return " WHERE " + " AND ".join(clause for clause, _ in kept), [value for _, value in kept]


def _read_or_create_key(path: Path) -> bytes:
    """The hex key in ``path``, created first if absent (0600, random, written whole).

    Creation is atomic across processes: the key is written to a private temporary file that is
    then hard-linked to ``path``; the link fails if another process got there first, and its key
    is used instead, so every process ends up with the same key and none sees a partial file.
    """
    try:
        if not path.exists():
            fd, temporary = tempfile.mkstemp(prefix=".user-id-key-", dir=path.parent)  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="ascii") as handle:
                    handle.write(secrets.token_hex(USER_ID_KEY_BYTES) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                try:
                    os.link(temporary, path)
                except FileExistsError:
                    pass  # another process created it first: use theirs
            finally:
                os.unlink(temporary)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"user id key {path}: {exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < USER_ID_KEY_BYTES:
        # Never replaced silently: a new key would give every user a new reference.
        raise LedgerError(f"user id key {path} is damaged (expected {USER_ID_KEY_BYTES * 2} hex digits); restore it")
    return key


def _log_rollup_progress(step: str, done: int, steps: int) -> None:
    logger.info("building the report rollups from the ledger's rows: %s (%d/%d)", step, done, steps)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass  # closing a broken connection has nothing left to lose


def _day_start_ms(day: str) -> int:
    try:
        return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError as exc:
        raise LedgerError(f"not a YYYY-MM-DD day: {day!r}") from exc


class SQLiteLedger(Ledger):
    """A ledger in one SQLite file. ``path`` is a filesystem path (created with its folder).

    ``read_only``: open an existing ledger through a ``mode=ro`` URI and create nothing (no
    folder, no file, no schema); a missing file raises ``LedgerNotFound`` and any write raises
    ``LedgerError``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = 30.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        read_only: bool = False,
        rollup_progress: Progress | None = None,
    ) -> None:
        """``rollup_progress(step, done, steps)``: told about the one-time build of the rollups
        when a writable open finds a ledger written before them (else the build is logged)."""
        self.path = Path(path).expanduser()
        self._rollup_progress = rollup_progress
        self.url = f"sqlite:///{self.path}"
        self.read_only = read_only
        self._busy_timeout_s = busy_timeout_s
        self._max_connections = max(1, max_connections)
        # The pool: idle connections, how many are open (idle or leased), the process they
        # belong to, and a condition to wait on when every connection is leased.
        self._idle: list[sqlite3.Connection] = []
        self._open = 0
        self._pid = os.getpid()
        self._pool = threading.Lock()
        self._available = threading.Condition(self._pool)
        self._waiting = 0  # threads waiting for a connection: only then is a return notified
        # Connections inherited across a fork: never used nor closed by the child (closing them
        # there could disturb the parent's locks), only kept from garbage collection.
        self._forked: list[sqlite3.Connection] = []
        self._report_conn: sqlite3.Connection | None = None
        self._user_id_key: bytes | None = None
        self._closed = False
        self.read_only = read_only
        # ":memory:" (tests, throwaway what-ifs): one named in-memory database shared by every
        # connection of this ledger, kept alive by a connection held until close().
        self._memory_uri: str | None = None
        self._keeper: sqlite3.Connection | None = None
        if read_only:
            if not self.path.is_file():
                raise LedgerNotFound(f"no ledger at {self.url}")
            with self._reading("reading the schema") as conn:
                self._check_schema(conn)
            return
        if str(path) == ":memory:":
            self._memory_uri = f"file:costguard-{secrets.token_hex(8)}?mode=memory&cache=shared"
            self._keeper = self._connect()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger folder {self.path.parent}: {exc}") from exc
        self._init_schema()

    # -- connections ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                conn = sqlite3.connect(
                    f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=self._busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
                conn.execute("PRAGMA query_only=ON")
                return conn
            conn = sqlite3.connect(
                self._memory_uri or self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                uri=self._memory_uri is not None,
            )
        except (sqlite3.Error, OSError) as exc:  # EMFILE arrives as "unable to open database file"
            raise LedgerError(f"ledger {self.path}: cannot open a connection: {exc}") from exc
        try:
            # WAL lets readers run beside one writer; NORMAL sync is durable across process
            # crashes (only an OS crash can lose the last transactions), which is the trade
            # every WAL deployment makes for speed.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"{self.path} is not a usable costguard ledger: {exc}") from exc
        return conn

    def _after_fork(self) -> None:
        """In a forked child (pool lock held): forget the parent's connections, open our own."""
        self._forked.extend(self._idle)
        self._idle.clear()
        self._open = 0
        self._pid = os.getpid()
        if self._report_conn is not None:
            self._forked.append(self._report_conn)
            self._report_conn = None

    def _acquire(self) -> sqlite3.Connection:
        deadline: float | None = None
        with self._pool:
            while True:
                if self._closed:
                    raise LedgerError(f"ledger {self.path} is closed")
                if self._pid != os.getpid():
                    self._after_fork()
                if self._idle:
                    return self._idle.pop()
                if self._open < self._max_connections:
                    self._open += 1
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._busy_timeout_s
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LedgerError(
                        f"ledger {self.path}: all {self._max_connections} connections stayed busy "
                        f"for {self._busy_timeout_s:g} s"
                    )
                self._waiting += 1
                try:
                    self._available.wait(left)
                finally:
                    self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            with self._pool:
                self._open -= 1
                self._notify()
            raise

    def _notify(self) -> None:
        """Wake one waiting thread (pool lock held): a connection came back or a slot freed."""
        if self._waiting:
            self._available.notify()

    def _give_back(self, conn: sqlite3.Connection) -> None:
        healthy = True
        if conn.in_transaction:  # a failed ROLLBACK left it mid-transaction: never reuse it
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                healthy = False
        with self._pool:
            if self._pid != os.getpid():
                self._forked.append(conn)  # the parent's: leave it alone (see _forked)
                return
            if healthy and not self._closed:
                self._idle.append(conn)
            else:
                self._open -= 1
                _close_quietly(conn)
            self._notify()

    @contextmanager
    def _lease(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection for the duration of one operation: any thread, at most
        ``max_connections`` open at once, so short-lived threads leave nothing behind."""
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._give_back(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A read-then-write transaction that holds the write lock from its first statement."""
        with self._lease() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: cannot start a transaction: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK")
                    raise LedgerError(f"ledger {self.path}: commit failed: {exc}") from exc

    @contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """A pooled connection for one read; its failures are LedgerErrors naming ``what``."""
        conn = self._acquire()
        try:
            yield conn
        except _STORAGE_ERRORS as exc:
            raise LedgerError(f"ledger {self.path}: {what}: {exc}") from exc
        finally:
            self._give_back(conn)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except _STORAGE_ERRORS as exc:
            raise LedgerError(f"ledger {self.path}: {what}: {exc}") from exc

    def _check_schema(self, conn: sqlite3.Connection, *, required: bool = True) -> None:
        """Refuse a file a newer costguard wrote; a read-only open also refuses a non-ledger."""
        with self._errors("reading the schema"):
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            if not has_meta:
                if required:
                    raise LedgerError(f"{self.path} is not a costguard ledger (no meta table)")
                return
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row and int(row[0]) > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path} was written by a newer costguard (schema {row[0]}, "
                f"this one reads {SCHEMA_VERSION}); upgrade costguard"
            )

    def _init_schema(self) -> None:
        with self._errors("creating the schema"), self._write() as conn:
            self._check_schema(conn, required=False)
            for statement in (_SCHEMA + ";" + _ROLLUP_SCHEMA).split(";"):
                if statement.strip():
                    conn.execute(statement)
            _add_missing_columns(conn)
            if not rollups_ready(conn):
                # A ledger from before rollups (or a new one): built once from its rows, in
                # this transaction, so no writer ever sees rows without their rollups.
                has_rows = conn.execute("SELECT 1 FROM requests UNION ALL SELECT 1 FROM violations LIMIT 1").fetchone()
                build_rollups(conn, (self._rollup_progress or _log_rollup_progress) if has_rows else None)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._pool:
            if self._pid == os.getpid():
                for conn in self._idle:
                    _close_quietly(conn)
                if self._report_conn is not None:
                    _close_quietly(self._report_conn)
                if self._keeper is not None:
                    _close_quietly(self._keeper)
            self._keeper = None
            self._open -= len(self._idle)
            self._idle.clear()
            self._report_conn = None
            self._closed = True  # leased connections are closed as they come back
            self._available.notify_all()

    # -- hot path -------------------------------------------------------------------------------

    def kill_switch(self, workflow: str, now_ms: int) -> KillSwitch | None:
        with self._reading("reading the kill switch") as conn:
            row = conn.execute(
                "SELECT workflow, reason, set_by, set_at_ms, expires_at_ms FROM kill_switches "
                "WHERE workflow = ? AND (expires_at_ms IS NULL OR expires_at_ms > ?)",
                (workflow, now_ms),
            ).fetchone()
        return KillSwitch(*row) if row else None

    def session_totals(self, session_id: str) -> Totals:
        with self._reading("reading session counters") as conn:
            row = conn.execute(
                f"SELECT {', '.join(_TOTAL_COLUMNS)} FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return Totals(*row) if row else Totals()

    def _hold(self, reservation: Reservation, amount_nanos: int, now_ms: int) -> ReserveResult:
        with self._errors("reserving budget"), self._write() as conn:
            self._reclaim(conn, now_ms, reservation.workflow)
            if reservation.lease_id is not None and not self._lease_amount(conn, reservation.lease_id):
                # Reclaimed under us (expired): what it held is already back in the budget.
                reservation.amount_nanos = 0
                reservation.lease_id = None
            for period in reservation.periods:
                if period.limit_nanos is None:
                    continue
                row = conn.execute(
                    "SELECT spent_nanos + reserved_nanos FROM budget_counters "
                    "WHERE workflow = ? AND period = ?",
                    (reservation.workflow, period.period),
                ).fetchone()
                committed = row[0] if row else 0
                if committed + amount_nanos > period.limit_nanos:
                    return ReserveResult(False, None, period.period, period.limit_nanos, committed)
            conn.executemany(
                "INSERT INTO budget_counters (workflow, period, reserved_nanos) VALUES (?, ?, ?) "
                "ON CONFLICT (workflow, period) DO UPDATE SET reserved_nanos = reserved_nanos + ?",
                [
                    (reservation.workflow, p.period, amount_nanos, amount_nanos)
                    for p in reservation.periods
                ],
            )
            expires = now_ms + reservation.ttl_ms
            if reservation.lease_id is None:
                reservation.lease_id = new_lease_id()
                conn.execute(
                    "INSERT INTO budget_leases (lease_id, workflow, periods, amount_nanos, owner, expires_at_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        reservation.lease_id,
                        reservation.workflow,
                        " ".join(p.period for p in reservation.periods),
                        amount_nanos,
                        reservation.owner,
                        expires,
                    ),
                )
            else:
                conn.execute(
                    "UPDATE budget_leases SET amount_nanos = amount_nanos + ?, expires_at_ms = ? WHERE lease_id = ?",
                    (amount_nanos, expires, reservation.lease_id),
                )
        reservation.amount_nanos += amount_nanos
        reservation.expires_at_ms = expires
        return ReserveResult(True, reservation)

    def renew_lease(self, reservation: Reservation, now_ms: int) -> bool:
        if reservation.lease_id is None:
            return False
        expires = now_ms + reservation.ttl_ms
        with self._errors("renewing a budget lease"), self._write() as conn:
            renewed = conn.execute(
                "UPDATE budget_leases SET expires_at_ms = ? WHERE lease_id = ?", (expires, reservation.lease_id)
            ).rowcount
        if not renewed:
            reservation.amount_nanos = 0
            reservation.lease_id = None
            return False
        reservation.expires_at_ms = expires
        return True

    def reclaim_expired_leases(self, now_ms: int, workflow: str | None = None) -> int:
        with self._errors("reclaiming expired leases"), self._write() as conn:
            return self._reclaim(conn, now_ms, workflow)

    def leases(self, workflow: str | None = None) -> list[Lease]:
        query = "SELECT lease_id, workflow, periods, amount_nanos, owner, expires_at_ms FROM budget_leases"
        params: tuple[Any, ...] = ()
        if workflow is not None:
            query += " WHERE workflow = ?"
            params = (workflow,)
        with self._reading("reading budget leases") as conn:
            rows = conn.execute(query + " ORDER BY expires_at_ms", params).fetchall()
        return [Lease(r[0], r[1], tuple(r[2].split()), r[3], r[4], r[5]) for r in rows]

    @staticmethod
    def _reclaim(conn: sqlite3.Connection, now_ms: int, workflow: str | None) -> int:
        if workflow is None:
            expired = conn.execute(
                "SELECT lease_id, workflow, periods, amount_nanos FROM budget_leases WHERE expires_at_ms <= ?",
                (now_ms,),
            ).fetchall()
        else:
            expired = conn.execute(
                "SELECT lease_id, workflow, periods, amount_nanos FROM budget_leases "
                "WHERE workflow = ? AND expires_at_ms <= ?",
                (workflow, now_ms),
            ).fetchall()
        for lease_id, lease_workflow, periods, amount in expired:
            conn.executemany(
                "UPDATE budget_counters SET reserved_nanos = MAX(0, reserved_nanos - ?) WHERE workflow = ? AND period = ?",
                [(amount, lease_workflow, period) for period in periods.split()],
            )
            conn.execute("DELETE FROM budget_leases WHERE lease_id = ?", (lease_id,))
        if expired:
            logger.warning("reclaimed %d expired budget lease(s) (a process died or hung mid-call)", len(expired))
        return len(expired)

    @staticmethod
    def _lease_amount(conn: sqlite3.Connection, lease_id: str) -> int | None:
        row = conn.execute("SELECT amount_nanos FROM budget_leases WHERE lease_id = ?", (lease_id,)).fetchone()
        return row[0] if row else None

    def release(self, reservation: Reservation) -> None:
        if not reservation.amount_nanos and reservation.lease_id is None:
            return
        with self._errors("releasing a reservation"), self._write() as conn:
            self._settle(conn, reservation, 0, keep=False, now_ms=_now(None))
        reservation.amount_nanos = 0
        reservation.lease_id = None

    @classmethod
    def _settle(cls, conn: sqlite3.Connection, reservation: Reservation, spent_nanos: int, *, keep: bool = False, now_ms: int = 0) -> None:
        """Count ``spent_nanos`` and give back the lease's hold (all of it, or with ``keep`` only
        what was spent, renewing the rest). A lease already reclaimed holds nothing to give back."""
        held = 0
        if reservation.lease_id is not None:
            held = cls._lease_amount(conn, reservation.lease_id) or 0
        elif reservation.amount_nanos:
            held = reservation.amount_nanos  # a hold from before leases existed
        released = min(held, spent_nanos) if keep else held
        conn.executemany(
            "INSERT INTO budget_counters (workflow, period, spent_nanos, reserved_nanos) "
            "VALUES (?, ?, ?, 0) ON CONFLICT (workflow, period) DO UPDATE SET "
            "spent_nanos = spent_nanos + ?, reserved_nanos = MAX(0, reserved_nanos - ?)",
            [
                (reservation.workflow, p.period, spent_nanos, spent_nanos, released)
                for p in reservation.periods
            ],
        )
        if reservation.lease_id is not None:
            if keep and held:
                conn.execute(
                    "UPDATE budget_leases SET amount_nanos = ?, expires_at_ms = ? WHERE lease_id = ?",
                    (held - released, now_ms + reservation.ttl_ms, reservation.lease_id),
                )
            else:
                conn.execute("DELETE FROM budget_leases WHERE lease_id = ?", (reservation.lease_id,))
        reservation.amount_nanos = held - released if keep else 0
        if not keep or not held:
            reservation.lease_id = None
        else:
            reservation.expires_at_ms = now_ms + reservation.ttl_ms

    def record(self, segment: RequestSegment) -> None:
        self.record_many((segment,))

    def record_many(self, segments: Sequence[RequestSegment]) -> None:
        """Every segment, in ONE transaction: a batch is written whole or not at all.

        The segments of one request (its checkpoints, its continuation) are merged first, so a
        request costs one row update however many segments the batch holds, and the call rows of
        the whole batch go in with one statement per table.
        """
        if not segments:
            return
        groups = merge_by_request(segments)
        requests = [merged for merged, _ in groups]
        with self._errors("recording usage"), self._write() as conn:
            record_rollups(conn, requests)  # before the rows: it reads what came before them
            for merged, originals in groups:
                self._record_request(conn, merged)
                for original in originals:
                    if original.reservation is not None:
                        self._settle(
                            conn, original.reservation, original.delta.cost_nanos,
                            keep=original.keep_reservation, now_ms=original.ended_ms,
                        )
            for settle in _summed_settles(s.lease_settle for s in segments if s.lease_settle is not None):
                self._settle_lease(conn, settle)
            model_rows = [row for merged in requests for row in merged.model_calls]
            if model_rows:
                conn.executemany(_MODEL_CALL_INSERT, map(_model_call_values, model_rows))
            tool_rows = [row for merged in requests for row in merged.tool_calls]
            if tool_rows:
                conn.executemany(_TOOL_CALL_INSERT, map(_tool_call_values, tool_rows))
            self._insert_violations(conn, [v for merged in requests for v in merged.violations])

    @classmethod
    def _settle_lease(cls, conn: sqlite3.Connection, settle: LeaseSettle) -> None:
        held = cls._lease_amount(conn, settle.lease_id) if settle.lease_id is not None else None
        released = min(held or 0, settle.release_nanos)
        conn.executemany(
            "INSERT INTO budget_counters (workflow, period, spent_nanos, reserved_nanos) "
            "VALUES (?, ?, ?, 0) ON CONFLICT (workflow, period) DO UPDATE SET "
            "spent_nanos = spent_nanos + ?, reserved_nanos = MAX(0, reserved_nanos - ?)",
            [(settle.workflow, period, settle.spent_nanos, settle.spent_nanos, released) for period in settle.periods],
        )
        if released:
            conn.execute(
                "UPDATE budget_leases SET amount_nanos = amount_nanos - ? WHERE lease_id = ?",
                (released, settle.lease_id),
            )

    @staticmethod
    def _record_request(conn: sqlite3.Connection, segment: RequestSegment) -> None:
        """The request's row and its session's: totals from the request, the session adds the delta."""
        t, d = segment.totals, segment.delta
        is_new = conn.execute("SELECT 1 FROM requests WHERE request_id = ?", (segment.request_id,)).fetchone() is None
        conn.execute(
            "INSERT INTO requests (request_id, workflow, session_id, user_id, operation, "
            "agent_id, agent_alias_id, started_ms, ended_ms, status, segments, model_calls, "
            "tool_calls, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "cost_nanos, tool_response_bytes, max_tool_response_bytes, latency_ms, "
            "model_latency_ms, tool_latency_ms, unknown_events, unpriced_calls, "
            "return_control_id, ttft_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (request_id) DO UPDATE SET ended_ms = excluded.ended_ms, "
            "status = excluded.status, segments = segments + excluded.segments, "
            "model_calls = excluded.model_calls, tool_calls = excluded.tool_calls, "
            "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
            "cache_read_tokens = excluded.cache_read_tokens, "
            "cache_write_tokens = excluded.cache_write_tokens, "
            "cost_nanos = excluded.cost_nanos, "
            "tool_response_bytes = excluded.tool_response_bytes, "
            "max_tool_response_bytes = excluded.max_tool_response_bytes, "
            "latency_ms = latency_ms + excluded.latency_ms, "
            "model_latency_ms = model_latency_ms + excluded.model_latency_ms, "
            "tool_latency_ms = tool_latency_ms + excluded.tool_latency_ms, "
            "unknown_events = unknown_events + excluded.unknown_events, "
            "unpriced_calls = unpriced_calls + excluded.unpriced_calls, "
            "return_control_id = excluded.return_control_id, "
            # The request's first output came in its first segment that had any.
            "ttft_ms = COALESCE(ttft_ms, excluded.ttft_ms)",
            (
                segment.request_id,
                segment.workflow,
                segment.session_id,
                segment.user_id,
                segment.operation,
                segment.agent_id,
                segment.agent_alias_id,
                segment.started_ms,
                segment.ended_ms,
                segment.status,
                segment.parts,
                t.model_calls,
                t.tool_calls,
                t.input_tokens,
                t.output_tokens,
                t.cache_read_tokens,
                t.cache_write_tokens,
                t.cost_nanos,
                t.tool_response_bytes,
                t.max_tool_response_bytes,
                segment.latency_ms,
                segment.model_latency_ms,
                segment.tool_latency_ms,
                segment.unknown_events,
                segment.unpriced_calls,
                segment.return_control_id,
                segment.ttft_ms,
            ),
        )
        conn.execute(
            "INSERT INTO sessions (session_id, workflow, user_id, first_ms, last_ms, requests, "
            "model_calls, tool_calls, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, cost_nanos, tool_response_bytes, max_tool_response_bytes) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (session_id) DO UPDATE SET "
            "last_ms = MAX(last_ms, excluded.last_ms), requests = requests + excluded.requests, "
            "model_calls = model_calls + excluded.model_calls, "
            "tool_calls = tool_calls + excluded.tool_calls, "
            "input_tokens = input_tokens + excluded.input_tokens, "
            "output_tokens = output_tokens + excluded.output_tokens, "
            "cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, "
            "cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, "
            "cost_nanos = cost_nanos + excluded.cost_nanos, "
            "tool_response_bytes = tool_response_bytes + excluded.tool_response_bytes, "
            "max_tool_response_bytes = "
            "MAX(max_tool_response_bytes, excluded.max_tool_response_bytes)",
            (
                segment.session_id,
                segment.workflow,
                segment.user_id,
                segment.started_ms,
                segment.ended_ms,
                1 if is_new else 0,
                d.model_calls,
                d.tool_calls,
                d.input_tokens,
                d.output_tokens,
                d.cache_read_tokens,
                d.cache_write_tokens,
                d.cost_nanos,
                d.tool_response_bytes,
                d.max_tool_response_bytes,
            ),
        )

    @staticmethod
    def _insert_violations(conn: sqlite3.Connection, violations: Sequence[ViolationRecord]) -> None:
        if violations:
            conn.executemany(
                "INSERT INTO violations (ts_ms, workflow, session_id, request_id, kind, rule, "
                "limit_value, observed, enforced, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        v.ts_ms,
                        v.workflow,
                        v.session_id,
                        v.request_id,
                        v.kind,
                        v.rule,
                        v.limit,
                        v.observed,
                        1 if v.enforced else 0,
                        json.dumps(v.detail, sort_keys=True, default=str),
                    )
                    for v in violations
                ],
            )

    def record_violation(self, violation: ViolationRecord) -> None:
        with self._errors("recording a violation"), self._write() as conn:
            self._insert_violations(conn, [violation])
            record_violation_rollups(conn, [violation])

    def request_totals(self, request_id: str) -> Totals | None:
        with self._reading("reading a request") as conn:
            row = conn.execute(
                f"SELECT {', '.join(_TOTAL_COLUMNS)} FROM requests WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return Totals(*row) if row else None

    def find_return_control(self, session_id: str, invocation_id: str) -> str | None:
        with self._reading("looking up a return-control invocation") as conn:
            row = conn.execute(
                "SELECT request_id FROM requests WHERE session_id = ? AND return_control_id = ? "
                "ORDER BY ended_ms DESC LIMIT 1",
                (session_id, invocation_id),
            ).fetchone()
        return row[0] if row else None

    def pin_session_model(self, session_id: str, model: str, now_ms: int) -> str:
        with self._errors("pinning a session's model"), self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO session_models (session_id, model, pinned_ms) VALUES (?, ?, ?)",
                (session_id, model, now_ms),
            )
            row = conn.execute("SELECT model FROM session_models WHERE session_id = ?", (session_id,)).fetchone()
        return str(row[0])

    def tool_repeats(self, session_id: str) -> dict[str, int]:
        with self._reading("reading tool repeat counters") as conn:
            rows = conn.execute(
                "SELECT call_hash, calls FROM tool_repeats WHERE session_id = ?", (session_id,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def add_tool_repeats(self, session_id: str, counts: dict[str, int], now_ms: int) -> None:
        if not counts:
            return
        with self._errors("counting tool repeats"), self._write() as conn:
            conn.executemany(
                "INSERT INTO tool_repeats (session_id, call_hash, calls, last_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (session_id, call_hash) DO UPDATE SET calls = calls + excluded.calls, "
                "last_ms = MAX(last_ms, excluded.last_ms)",
                [(session_id, key, n, now_ms) for key, n in counts.items()],
            )

    # -- administration and reads ---------------------------------------------------------------

    def session_usage(self, session_id: str) -> SessionUsage | None:
        with self._reading("reading a session") as conn:
            row = conn.execute(
                "SELECT workflow, user_id, requests, model_calls, tool_calls, input_tokens, "
                "output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, "
                "max_tool_response_bytes, tool_response_bytes FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            latency = conn.execute(
                "SELECT COALESCE(SUM(latency_ms), 0), COALESCE(SUM(model_latency_ms), 0), "
                "COALESCE(SUM(tool_latency_ms), 0) FROM requests WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        violations = self.violations(session_id=session_id)
        if row is None:
            if not violations:
                return None
            usage = SessionUsage.empty(session_id)
            usage.workflow = violations[0].workflow
            usage.violations = violations
            return usage
        return SessionUsage(
            session_id=session_id,
            workflow=row[0],
            user_id=row[1],
            requests=row[2],
            model_calls=row[3],
            tool_calls=row[4],
            input_tokens=row[5],
            output_tokens=row[6],
            cache_read_tokens=row[7],
            cache_write_tokens=row[8],
            cost_usd=nanos_to_usd(row[9]),
            max_tool_response_bytes=row[10],
            tool_response_bytes=row[11],
            violations=violations,
            latency_ms=latency[0],
            model_latency_ms=latency[1],
            tool_latency_ms=latency[2],
        )

    def set_kill_switch(
        self, workflow: str, reason: str, set_by: str, now_ms: int, expires_at_ms: int | None = None
    ) -> KillSwitch:
        with self._errors("setting a kill switch"), self._write() as conn:
            conn.execute(
                "INSERT INTO kill_switches (workflow, reason, set_by, set_at_ms, expires_at_ms) "
                "VALUES (?,?,?,?,?) ON CONFLICT (workflow) DO UPDATE SET reason = excluded.reason, "
                "set_by = excluded.set_by, set_at_ms = excluded.set_at_ms, "
                "expires_at_ms = excluded.expires_at_ms",
                (workflow, reason, set_by, now_ms, expires_at_ms),
            )
            conn.execute(
                "INSERT INTO kill_switch_log (workflow, action, reason, actor, ts_ms) "
                "VALUES (?, 'block', ?, ?, ?)",
                (workflow, reason, set_by, now_ms),
            )
        return KillSwitch(workflow, reason, set_by, now_ms, expires_at_ms)

    def clear_kill_switch(self, workflow: str, cleared_by: str, now_ms: int) -> bool:
        with self._errors("clearing a kill switch"), self._write() as conn:
            cleared = conn.execute(
                "DELETE FROM kill_switches WHERE workflow = ?", (workflow,)
            ).rowcount
            if cleared:
                conn.execute(
                    "INSERT INTO kill_switch_log (workflow, action, reason, actor, ts_ms) "
                    "VALUES (?, 'unblock', NULL, ?, ?)",
                    (workflow, cleared_by, now_ms),
                )
        return bool(cleared)

    def kill_switches(self, now_ms: int) -> list[KillSwitch]:
        with self._reading("reading kill switches") as conn:
            rows = conn.execute(
                "SELECT workflow, reason, set_by, set_at_ms, expires_at_ms FROM kill_switches "
                "WHERE expires_at_ms IS NULL OR expires_at_ms > ? ORDER BY workflow",
                (now_ms,),
            ).fetchall()
        return [KillSwitch(*row) for row in rows]

    def budget_counters(self, workflow: str | None = None) -> list[BudgetCounter]:
        where, params = _where(("workflow = ?", workflow))
        query = f"SELECT workflow, period, spent_nanos, reserved_nanos FROM budget_counters{where}"
        with self._reading("reading budget counters") as conn:
            rows = conn.execute(query + " ORDER BY workflow, period", params).fetchall()
        return [BudgetCounter(*row) for row in rows]

    def violations(
        self, *, workflow: str | None = None, session_id: str | None = None, limit: int | None = None
    ) -> list[ViolationRecord]:
        where, params = _where(("workflow = ?", workflow), ("session_id = ?", session_id))
        query = (
            "SELECT ts_ms, workflow, session_id, request_id, kind, rule, limit_value, observed, "
            f"enforced, detail FROM violations{where} ORDER BY ts_ms DESC, id DESC"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._reading("reading violations") as conn:
            rows = conn.execute(query, params).fetchall()
        return [
            ViolationRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), json.loads(r[9]))
            for r in rows
        ]

    def daily_usage(self, since_day: str, until_day: str) -> list[DailyUsage]:
        since_ms = _day_start_ms(since_day)
        until_ms = _day_start_ms(until_day)
        with self._reading("reading daily usage") as conn:
            if rollups_ready(conn):
                return [DailyUsage(*row[:-1]) for row in daily_rows(conn, "model", since_ms, until_ms)]
            rows = conn.execute(
                "SELECT strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch') AS day, workflow, "
                "base_model_id, COUNT(*), SUM(input_tokens), SUM(output_tokens), "
                "SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nanos), "
                "SUM(1 - priced) FROM model_calls WHERE ts_ms >= ? AND ts_ms < ? "
                "GROUP BY day, workflow, base_model_id ORDER BY day, workflow, base_model_id",
                (since_ms, until_ms),
            ).fetchall()
        return [DailyUsage(*row) for row in rows]

    def daily_usage_by_price_key(self, since_day: str, until_day: str) -> list[DailyUsage]:
        since_ms, until_ms = _day_start_ms(since_day), _day_start_ms(until_day)
        with self._reading("reading daily usage by price key") as conn:
            if rollups_ready(conn):
                rows = daily_rows(conn, "price", since_ms, until_ms)
            else:  # a read-only open of a ledger from before rollups
                rows = conn.execute(
                    "SELECT strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch') AS day, workflow, base_model_id, COUNT(*), "
                    "SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), "
                    "SUM(cost_nanos), SUM(1 - priced), COALESCE(price_key, '') AS variant FROM model_calls "
                    "WHERE ts_ms >= ? AND ts_ms < ? GROUP BY day, workflow, base_model_id, variant "
                    "ORDER BY day, workflow, base_model_id, variant",
                    (since_ms, until_ms),
                ).fetchall()
        return [DailyUsage(*row) for row in rows]

    # -- reconciler: alert dedupe ------------------------------------------------------------------

    def claim_alert_key(self, key: str, now_ms: int, detail: dict[str, Any]) -> bool:
        with self._errors("claiming an alert key"), self._write() as conn:
            taken = conn.execute(
                "INSERT INTO alert_keys (key, ts_ms, detail, state, lease_until_ms) VALUES (?, ?, ?, 'claimed', ?) "
                "ON CONFLICT (key) DO UPDATE SET ts_ms = excluded.ts_ms, detail = excluded.detail, "
                "lease_until_ms = excluded.lease_until_ms "
                "WHERE alert_keys.state = 'claimed' AND alert_keys.lease_until_ms <= excluded.ts_ms",
                (key, now_ms, json.dumps(detail, sort_keys=True, default=str), now_ms + ALERT_CLAIM_LEASE_MS),
            ).rowcount
        return bool(taken)

    def mark_alert_sent(self, key: str, now_ms: int) -> None:
        with self._errors("marking an alert sent"), self._write() as conn:
            conn.execute("UPDATE alert_keys SET state = 'sent', lease_until_ms = NULL WHERE key = ?", (key,))

    def release_alert_key(self, key: str) -> None:
        with self._errors("releasing an alert key"), self._write() as conn:
            conn.execute("DELETE FROM alert_keys WHERE key = ?", (key,))

    def alert_keys(self, prefix: str | None = None) -> list[AlertKey]:
        query, params = "SELECT key, ts_ms, detail, state, lease_until_ms FROM alert_keys", ()
        if prefix is not None:
            # substr, not LIKE: keys contain '%' and '_' freely.
            query += " WHERE substr(key, 1, ?) = ?"
            params = (len(prefix), prefix)
        with self._reading("reading alert keys") as conn:
            rows = conn.execute(query + " ORDER BY ts_ms, key", params).fetchall()
        return [AlertKey(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    # -- action guard -------------------------------------------------------------------------------

    def record_action(self, record: ActionRecord) -> None:
        with self._errors("recording an action"), self._write() as conn:
            conn.execute(
                "INSERT INTO actions (ts_ms, workflow, action, session_id, request_id, bytes_before, "
                "bytes_after, fields_dropped, items_dropped, strings_truncated, outcome, latency_ms, "
                "agent_id, cost_nanos, billed_ms, memory_mb, architecture) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.ts_ms,
                    record.workflow,
                    record.action,
                    record.session_id,
                    record.request_id,
                    record.bytes_before,
                    record.bytes_after,
                    record.fields_dropped,
                    record.items_dropped,
                    record.strings_truncated,
                    record.outcome,
                    record.latency_ms,
                    record.agent_id,
                    record.cost_nanos,
                    record.billed_ms,
                    record.memory_mb,
                    record.architecture,
                ),
            )
            if record.cost_nanos:
                self._add_action_cost(conn, record)

    @staticmethod
    def _add_action_cost(conn: sqlite3.Connection, record: ActionRecord) -> None:
        """The Lambda's cost counts in its session and its workflow's budget periods."""
        conn.executemany(
            "INSERT INTO budget_counters (workflow, period, spent_nanos, reserved_nanos) VALUES (?, ?, ?, 0) "
            "ON CONFLICT (workflow, period) DO UPDATE SET spent_nanos = spent_nanos + excluded.spent_nanos",
            [(record.workflow, period, record.cost_nanos) for period in record.budget_periods()],
        )
        if record.session_id is None:
            return
        conn.execute(
            "INSERT INTO sessions (session_id, workflow, user_id, first_ms, last_ms, requests, "
            "model_calls, tool_calls, input_tokens, output_tokens, cache_read_tokens, "
            "cache_write_tokens, cost_nanos, tool_response_bytes, max_tool_response_bytes) "
            "VALUES (?, ?, NULL, ?, ?, 0, 0, 0, 0, 0, 0, 0, ?, 0, 0) ON CONFLICT (session_id) DO UPDATE SET "
            "last_ms = MAX(last_ms, excluded.last_ms), cost_nanos = cost_nanos + excluded.cost_nanos",
            (record.session_id, record.workflow, record.ts_ms, record.ts_ms, record.cost_nanos),
        )

    def actions(self, *, workflow: str | None = None, since_ms: int | None = None) -> list[ActionRecord]:
        where, params = _where(("workflow = ?", workflow), ("ts_ms >= ?", since_ms))
        query = (
            "SELECT ts_ms, workflow, action, session_id, request_id, bytes_before, bytes_after, "
            "fields_dropped, items_dropped, strings_truncated, outcome, latency_ms, agent_id, cost_nanos, "
            f"billed_ms, memory_mb, architecture FROM actions{where}"
        )
        with self._reading("reading actions") as conn:
            rows = conn.execute(query + " ORDER BY ts_ms, id", params).fetchall()
        return [ActionRecord(*row) for row in rows]

    def claim_idempotency_key(self, key: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        with self._errors("claiming an idempotency key"), self._write() as conn:
            row = conn.execute(
                "SELECT key, status, claimed_at_ms, expires_at_ms, response_sha256, response_bytes, "
                "completed_at_ms FROM idempotency_keys WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None and row[3] > now_ms:
                return IdempotencyRecord(*row)
            conn.execute(
                "INSERT OR REPLACE INTO idempotency_keys (key, status, claimed_at_ms, expires_at_ms) "
                "VALUES (?, 'in_progress', ?, ?)",
                (key, now_ms, now_ms + ttl_ms),
            )
        return None

    def complete_idempotency_key(
        self, key: str, response_sha256: str, response_bytes: int, now_ms: int
    ) -> None:
        with self._errors("completing an idempotency key"), self._write() as conn:
            conn.execute(
                "UPDATE idempotency_keys SET status = 'completed', response_sha256 = ?, "
                "response_bytes = ?, completed_at_ms = ? WHERE key = ?",
                (response_sha256, response_bytes, now_ms, key),
            )

    def release_idempotency_key(self, key: str) -> None:
        with self._errors("releasing an idempotency key"), self._write() as conn:
            conn.execute("DELETE FROM idempotency_keys WHERE key = ? AND status = 'in_progress'", (key,))

    # -- identity -------------------------------------------------------------------------------

    @property
    def user_id_key_path(self) -> Path:
        """Where :meth:`user_id_key` keeps the key: beside the database, mode 0600."""
        return self.path.with_name(self.path.name + ".user-id-key")

    def user_id_key(self) -> bytes:
        if self._user_id_key is None:
            self._user_id_key = _read_or_create_key(self.user_id_key_path)
        return self._user_id_key

    def seed_budget_counters(self, counters: Sequence[BudgetCounter]) -> None:
        """Set period counters to another ledger's figures (spent + reserved, as spent): a what-if
        replay starts where a real ledger stands without writing to it."""
        with self._errors("seeding budget counters"), self._write() as conn:
            conn.executemany(
                "INSERT INTO budget_counters (workflow, period, spent_nanos, reserved_nanos) VALUES (?,?,?,0) "
                "ON CONFLICT (workflow, period) DO UPDATE SET spent_nanos = excluded.spent_nanos, reserved_nanos = 0",
                [(c.workflow, c.period, c.spent_nanos + c.reserved_nanos) for c in counters],
            )

    def usage_report(self, query: ReportQuery) -> Report:
        """The report by SQL over the usage rows (``costguard.reports.sqlite_report``)."""
        from costguard.reports import sqlite_report

        with self._reading("reading usage for a report") as conn:
            return sqlite_report(conn, query)

    def connection(self) -> sqlite3.Connection:
        """A connection for read-only reporting queries (pandas ``read_sql``), outside the pool,
        shared by every thread and closed with the ledger."""
        with self._pool:
            if self._closed:
                raise LedgerError(f"ledger {self.path} is closed")
            if self._pid != os.getpid():
                self._after_fork()
            if self._report_conn is None:
                self._report_conn = self._connect()
            return self._report_conn


_MODEL_CALL_INSERT = (
    "INSERT INTO model_calls (request_id, workflow, session_id, user_id, ts_ms, "
    "model_id, base_model_id, step_type, agent, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_nanos, priced, latency_ms, price_key, flags) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
#: A row's values in the column order above, read in C (``priced`` is a bool: SQLite stores 1/0).
_model_call_values = attrgetter(
    "request_id", "workflow", "session_id", "user_id", "ts_ms", "model_id", "base_model_id", "step_type",
    "agent", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_nanos",
    "priced", "latency_ms", "price_key", "flags",
)
_TOOL_CALL_INSERT = (
    "INSERT INTO tool_calls (request_id, workflow, session_id, ts_ms, kind, name, "
    "agent, response_bytes, latency_ms) VALUES (?,?,?,?,?,?,?,?,?)"
)
_tool_call_values = attrgetter(
    "request_id", "workflow", "session_id", "ts_ms", "kind", "name", "agent", "response_bytes", "latency_ms"
)


def _summed_settles(settles: Iterable[LeaseSettle]) -> list[LeaseSettle]:
    """A batch's settlements, one per lease: what each spent and gives back, summed.

    Equal to settling them one by one: what a lease releases is capped by what it holds, and
    min(held, a) then min(held - that, b) releases min(held, a + b).
    """
    summed: dict[tuple[str, tuple[str, ...], str | None], LeaseSettle] = {}
    for settle in settles:
        key = (settle.workflow, settle.periods, settle.lease_id)
        total = summed.get(key)
        if total is None:
            summed[key] = LeaseSettle(settle.workflow, settle.periods, settle.lease_id, settle.spent_nanos, settle.release_nanos)
        else:
            total.spent_nanos += settle.spent_nanos
            total.release_nanos += settle.release_nanos
    return list(summed.values())
