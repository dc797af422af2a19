"""The shared ledger: one DynamoDB table that many callers (ECS tasks, Lambdas, hosts) share.

Every budget check is an atomic conditional update inside DynamoDB, so no caller ever reads a
counter and writes it back (no read-modify-write races). Money is integer nano-dollars stored as
DynamoDB ``N`` (exact decimal, 38 digits). Nothing stored is prompt text, model output,
rationale or tool output: only counts, sizes, ids, hashes and the violation details the meter
already limits to those.

Table shape (fixed; the CloudFormation template creates exactly this, and so does
:func:`create_table`): key ``pk`` (S, HASH) + ``sk`` (S, RANGE), billing PAY_PER_REQUEST, TTL on
``expires_at`` (N, epoch seconds), one GSI ``gsi1`` (``gsi1pk`` S HASH, ``gsi1sk`` S RANGE,
projection ALL).

Single-table layout. ``{x}`` is a value percent-encoded (``urllib.parse.quote(x, safe="")``) so a
``#`` inside an id can never be mistaken for a separator; an encoded value longer than 500 bytes
is ``%H`` + its SHA-256 hex instead, so every key fits DynamoDB's limits (partition key 2,048
bytes, sort key 1,024) and the id itself stays in the item's attributes; ``{ts}`` is a zero-padded 15-digit
epoch-ms, ``{uniq}`` a zero-padded ``time_ns`` plus random hex (insertion order, no collisions).

======================  ===========================  ===============================  =====================  ===
item                    pk                           sk                               gsi1pk / gsi1sk        TTL
======================  ===========================  ===============================  =====================  ===
session counters        ``S#{session}``              ``#S``                           -                      yes
session response mark   ``S#{session}``              ``M#{request}``                  -                      yes
session violation       ``S#{session}``              ``V#{ts}#{uniq}``                ``V#{wf}`` / ts#uniq   yes
sessionless violation   ``VW#{wf}``                  ``V#{ts}#{uniq}``                ``V#{wf}`` / ts#uniq   yes
request totals          ``R#{request}``              ``#R``                           ``RC#{session}#{inv}``  yes
                                                                                      / ended#request (only
                                                                                      while paused by a
                                                                                      returnControl)
model/tool call chunk   ``R#{request}``              ``C#{ended}#{uniq}#{n}``         -                      yes
batched call rows      ``C#{YYYY-MM-DD}#{shard}``   ``{ts}#{uniq}#{n}``              -                      yes
daily usage aggregate   ``D#{YYYY-MM-DD}``           ``{wf}#{base model}``            -                      yes
daily agent aggregate   ``D#{YYYY-MM-DD}``           ``#A#{wf}#{agent}``              -                      yes
daily price aggregate   ``D#{YYYY-MM-DD}``           ``#P#{wf}#{model}#{price key}``  -                      yes
request of the day      ``RD#{YYYY-MM-DD}``          ``{wf}#{request}``               -                      yes
budget counter          ``B#{wf}``                   ``{period}``                     ``BUDGETS`` / wf#period yes
budget lease            ``B#{wf}``                   ``L#{lease id}``                 -                      no (reclaimed, never expired by DynamoDB)
kill switch             ``KILL``                     workflow                         -                      no
kill switch log         ``KLOG#{wf}``                ``{ts}#{uniq}``                  -                      no
alert key               ``ALERT``                    key                              -                      no
user id key             ``CONFIG``                   ``user-id-key``                  -                      no
action record           ``A#{wf}``                   ``{ts}#{uniq}``                  -                      yes
workflow registry       ``WF``                       ``V#{wf}`` / ``A#{wf}``          -                      no
idempotency key         ``I#{key}``                  ``#I``                           -                      yes (its own expiry)
pinned session model    ``S#{session}``              ``P``                            -                      yes
tool repeat counter     ``S#{session}``              ``T#{call hash}``                -                      yes
======================  ===========================  ===============================  =====================  ===

TTL (``usage_ttl_days``, default 400, ``None`` = keep forever) is refreshed on every write of a
usage item; budget counters carry it too (400 days outlives any day or month period). Kill
switches, their log and alert keys carry none: they are few and are the audit trail. DynamoDB
deletes expired items lazily (up to days late), so every read that cares about expiry (kill
switches, idempotency keys) compares timestamps itself.

Item size (400 KB limit): counter items and response marks are a fixed set of numbers. Model and tool calls are
written as compact JSON rows (no prompt/output text, ~150 bytes each) packed into chunk items of
at most ``_CHUNK_BYTES`` (300 KB), so a segment with thousands of calls still fits. A violation's
``detail`` is bounded by what the meter puts there (ids and numbers).

Requests per operation:

* ``kill_switch``: one consistent GetItem, cached in-process for ``kill_switch_cache_s``.
* ``reserve`` / ``extend_reservation`` / ``release``: ONE TransactWriteItems of ``UpdateItem``
  (``ADD reserved, committed``) per period. ``committed`` (= spent + reserved, kept in step by
  ADDing to both) exists because condition expressions cannot add: a limited period carries
  ``attribute_not_exists(committed) OR committed <= :limit_minus_amount``. A transaction even for
  one period, because its ``ClientRequestToken`` makes botocore's automatic retry of a request
  whose answer was lost idempotent; a plain UpdateItem retried that way would ADD twice and leak
  a reservation. On refusal, the item that failed its condition comes back in the cancellation
  reason (``ReturnValuesOnConditionCheckFailure=ALL_OLD``); one GetItem fills the figure if not.
* ``record``: ONE TransactWriteItems with request totals, session counters, budget settlement,
  daily aggregates, violations and the call chunks, all or nothing. Whether the request is new
  (the session counts one more request) is known without a read: the request item's update is
  conditional on ``attribute_not_exists(pk)`` for a first segment (totals == delta) or
  ``attribute_exists(pk)`` for a continuation, and the rare wrong guess is retried the other way.
  The session's ``max_tool_response_bytes`` needs a max, which an update expression cannot
  compute and a conditional update would turn into a cancelled transaction. Instead each request
  keeps its own mark (``M#{request}``, a plain SET of the request's running max, which only
  grows) in the session partition, inside the same transaction; the session's max is the largest
  mark, computed when the session is read. So a segment costs exactly one write request and no
  read; with ``reserve`` that is 2 write requests per request, at most 2 per model call.
  When a segment is too big for one transaction (100 items / 4 MB), its call chunks and
  violations are written first and the counters last, still in one transaction.
* ``record_many`` (the background writer's batches): the segments of each request merged, the
  counters of a session, day aggregate, budget period and lease summed over the batch, the call
  rows of the batch packed in shared chunk items (``C#{day}#{shard}``, a random one of 8 shards),
  whole requests per TransactWriteItems of at most 100 items; only requests paused by or resumed
  from a returnControl write ``R#``. A transaction that fails after earlier ones of the batch
  succeeded raises ``BatchPartlyWritten`` naming what was written, so nothing is written twice.
* ``session_totals``: one consistent Query of the session partition below ``N`` (the counters
  and one ~60-byte mark per request that saw a tool response; a session of a thousand requests
  is still a single page). ``request_totals``: one consistent GetItem. ``session_usage``: one
  Query of the whole session partition (counters, marks and violations together).
* ``find_return_control``: one Query of ``gsi1`` (eventually consistent, like every GSI read;
  the continuation arrives after the caller ran its tool, so in practice the index has caught up).
* ``usage_report``: one gsi1 Query for the budget counters (every request settles its day's
  counter, so they name the workflow-days with usage), then per day in the window one Query of
  ``RD#{day}`` (the day's requests: one row each with its running totals, models, agents and
  price keys;
  ``begins_with(sk, wf#)`` for one workflow) and, for model, agent, price-key and action reports, one of
  ``D#{day}`` (the aggregates). Violation counts: one gsi1 Query per workflow over the window.
  A request row is ~500 bytes, so a day's requests take one 1 MB Query page per ~2,000; a
  report never scans (``bench/report_scale.py`` counts the pages).
* ``budget_counters()`` without a workflow and ``violations(workflow=...)`` read ``gsi1``
  (eventually consistent); with a workflow, budget counters are a consistent Query.
  ``violations()`` and ``actions()`` without a workflow read the workflow registry first, then one
  Query per workflow. No operation scans the table.

Differences from SQLite that callers can observe: ``reserved`` is not clamped at zero on
settlement (it cannot go negative unless a reservation is settled twice, which ``Reservation``
prevents by zeroing itself); a session's ``last_ms`` is the last segment written rather than the
latest one; GSI reads named above may lag writes by a moment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from costguard.errors import BatchPartlyWritten, LedgerError, LedgerNotFound
from costguard.ledger.base import (
    ALERT_CLAIM_LEASE_MS,
    USER_ID_KEY_BYTES,
    Ledger,
    new_lease_id,
)
from costguard.ledger.dynamodb_rollups import SORT_PREFIX, aggregate_updates
from costguard.ledger.rollups import PRICE_KEY_SEPARATOR, agent_label, deltas_of
from costguard.usage import (
    ActionRecord,
    AlertKey,
    BudgetCounter,
    DailyUsage,
    IdempotencyRecord,
    KillSwitch,
    Lease,
    LeaseSettle,
    PeriodLimit,
    RequestSegment,
    Reservation,
    ReserveResult,
    SessionUsage,
    Totals,
    ViolationRecord,
    day_key,
    merge_by_request,
    nanos_to_usd,
)

if TYPE_CHECKING:
    from costguard.reports import Report, ReportQuery

__all__ = ["DynamoDBLedger", "create_table"]

logger = logging.getLogger(__name__)

GSI_NAME = "gsi1"
TTL_ATTRIBUTE = "expires_at"

_TOKEN_ATTRS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
# What a read-only ledger may send; anything else is a write and is refused.
_READ_OPERATIONS = frozenset({"describe_table", "get_item", "query", "batch_get_item"})
# A chunk item holds many call rows; 300 KB of JSON leaves room under the 400 KB item limit for
# keys and attribute names.
_CHUNK_BYTES = 300_000
# TransactWriteItems limits: 100 actions and 4 MB in all; stay clear of the byte limit.
_TXN_MAX_ITEMS = 100
#: Partitions a day's batched call rows are spread over (``C#{day}#{shard}``).
_CHUNK_SHARDS = 8
_TXN_MAX_BYTES = 3_500_000
# Retries of transactions cancelled by a conflict with another transaction on the same item
# (hot budget counters under load); botocore does not retry those by itself.
_CONFLICT_ATTEMPTS = 10

_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_RETRYABLE_CANCEL_CODES = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}

_TOTAL_ATTRS = (
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
_ADDITIVE_ATTRS = _TOTAL_ATTRS[:-1]

# Key sizes, from "Constraints in Amazon DynamoDB", Partition keys and sort keys
# (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html, read
# 2026-12-01): a partition key value is at most 2,048 bytes, a sort key value at most 1,024
# bytes (the same for GSI keys). No key here holds more than two id parts and a short prefix,
# so with parts capped at 500 bytes every key fits, sort keys included.
_SORT_KEY_MAX = 1024
_KEY_PART_MAX = 500
_HASHED_PART = "%H"

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]


# -- attribute helpers -------------------------------------------------------------------------


def _q(part: str) -> str:
    """A key component that cannot contain the ``#`` separator, and fits a key whatever its length.

    A part longer than :data:`_KEY_PART_MAX` once percent-encoded is replaced by
    ``%H`` + the SHA-256 hex of its UTF-8: quote() writes ``%`` only before two hex digits, so a
    hashed part never equals an encoded one. The original id stays in the item's attributes.
    """
    quoted = quote(part, safe="", errors="surrogatepass")
    if len(quoted) <= _KEY_PART_MAX:
        return quoted
    return _HASHED_PART + hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()


def _fit(value: str, max_bytes: int = _SORT_KEY_MAX) -> str:
    """``value`` as a whole key (kept raw, as earlier versions stored it) unless it is too long."""
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return value
    return _HASHED_PART + hashlib.sha256(encoded).hexdigest()


def _s(value: str) -> AttributeValue:
    return {"S": value}


def _n(value: int) -> AttributeValue:
    return {"N": str(int(value))}


def _int(item: Item, name: str, default: int = 0) -> int:
    value = item.get(name)
    if value is None or "N" not in value:
        return default
    return int(Decimal(value["N"]))


def _opt_int(item: Item, name: str) -> int | None:
    value = item.get(name)
    return int(Decimal(value["N"])) if value is not None and "N" in value else None


def _str(item: Item, name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value is not None and "S" in value else None


def _ts(ts_ms: int) -> str:
    return f"{max(0, int(ts_ms)):015d}"


def _uniq() -> str:
    return f"{time.time_ns():020d}{secrets.token_hex(4)}"


def _totals(item: Item | None) -> Totals:
    if not item:
        return Totals()
    return Totals(*(_int(item, name) for name in _TOTAL_ATTRS))


def _day_start(day: str) -> datetime:
    try:
        return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise LedgerError(f"not a YYYY-MM-DD day: {day!r}") from exc


class _Update:
    """Builds one UpdateItem (plain or inside a transaction) with only the placeholders it uses."""

    def __init__(self, table: str, key: Item) -> None:
        self.table = table
        self.key = key
        self._sets: list[str] = []
        self._adds: list[str] = []
        self._removes: list[str] = []
        self._names: dict[str, str] = {}
        self._values: dict[str, AttributeValue] = {}
        self.condition: str | None = None

    def name(self, attr: str) -> str:
        placeholder = f"#{attr}"
        self._names[placeholder] = attr
        return placeholder

    def value(self, value: AttributeValue) -> str:
        placeholder = f":v{len(self._values)}"
        self._values[placeholder] = value
        return placeholder

    def set(self, attr: str, value: AttributeValue) -> _Update:
        self._sets.append(f"{self.name(attr)} = {self.value(value)}")
        return self

    def set_if_absent(self, attr: str, value: AttributeValue) -> _Update:
        n = self.name(attr)
        self._sets.append(f"{n} = if_not_exists({n}, {self.value(value)})")
        return self

    def add(self, attr: str, amount: int) -> _Update:
        self._adds.append(f"{self.name(attr)} {self.value(_n(amount))}")
        return self

    def add_to_set(self, attr: str, values: Iterable[str]) -> _Update:
        """ADD to a string set (a union: applying it twice changes nothing)."""
        self._adds.append(f"{self.name(attr)} {self.value({'SS': sorted(set(values))})}")
        return self

    def remove(self, attr: str) -> _Update:
        self._removes.append(self.name(attr))
        return self

    def params(self) -> dict[str, Any]:
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        params: dict[str, Any] = {
            "TableName": self.table,
            "Key": self.key,
            "UpdateExpression": " ".join(clauses),
        }
        if self.condition:
            params["ConditionExpression"] = self.condition
        if self._names:
            params["ExpressionAttributeNames"] = dict(self._names)
        if self._values:
            params["ExpressionAttributeValues"] = dict(self._values)
        return params


def _approx_size(params: dict[str, Any]) -> int:
    return len(json.dumps(params, separators=(",", ":")))


def _ledger_error(table: str, what: str, operation: str, exc: Exception) -> LedgerError:
    """A LedgerError that says which table, which operation, and what to do about it."""
    prefix = f"DynamoDB ledger table {table!r}: {what} failed ({operation})"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _THROTTLING:
            hint = "DynamoDB is throttling requests; retry later or raise the table's capacity"
        elif code == "ResourceNotFoundException":
            hint = "the table does not exist in this region; create it (costguard.ledger.dynamodb.create_table)"
        elif code in {"AccessDeniedException", "UnrecognizedClientException"}:
            hint = "the credentials may not use this table"
        else:
            hint = message
        return LedgerError(f"{prefix}: {code}: {hint}")
    if isinstance(exc, EndpointConnectionError):
        return LedgerError(f"{prefix}: cannot reach DynamoDB: {exc}")
    return LedgerError(f"{prefix}: {exc}")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _cancel_codes(exc: ClientError) -> list[str]:
    return [str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", []) or []]


def _make_client(session: Any, region_name: str | None, endpoint_url: str | None, config: Config | None) -> Any:
    session = session if session is not None else boto3.session.Session()
    kwargs: dict[str, Any] = {}
    if region_name:
        kwargs["region_name"] = region_name
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    # Standard retry mode backs off on throttling and connection errors; transactions carry a
    # ClientRequestToken so those retries never apply a counter update twice.
    kwargs["config"] = config or Config(retries={"mode": "standard", "max_attempts": 5})
    try:
        return session.client("dynamodb", **kwargs)
    except BotoCoreError as exc:
        raise LedgerError(f"cannot build a DynamoDB client: {exc}") from exc


class DynamoDBLedger(Ledger):
    """A ledger in one DynamoDB table (see the module docstring for its layout)."""

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        session: Any = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        usage_ttl_days: int | None = 400,
        kill_switch_cache_s: float = 2.0,
        config: Config | None = None,
        read_only: bool = False,
    ) -> None:
        """``read_only``: one DescribeTable checks the table exists (``LedgerNotFound`` if not)
        and every later write is refused before it is sent."""
        if not table_name:
            raise LedgerError("a DynamoDB ledger needs a table name")
        self.table_name = table_name
        self.url = f"dynamodb://{table_name}"
        self._owns_client = client is None
        self._client = client if client is not None else _make_client(session, region_name, endpoint_url, config)
        self._usage_ttl_s = None if usage_ttl_days is None else int(usage_ttl_days) * 86_400
        self._kill_cache_s = kill_switch_cache_s
        self._kill_cache: dict[str, tuple[float, KillSwitch | None]] = {}
        self._lock = threading.Lock()
        self._user_id_key: bytes | None = None
        self._closed = False
        self.read_only = read_only
        if read_only:
            found = self._call("checking the table exists", "describe_table", tolerate=("ResourceNotFoundException",),
                               TableName=table_name)
            if isinstance(found, ClientError):
                self.close()
                raise LedgerNotFound(f"no ledger at {self.url}")

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, what: str, operation: str, tolerate: Iterable[str] = (), **params: Any) -> dict[str, Any] | ClientError:
        """One DynamoDB request; a ClientError whose code is in ``tolerate`` is returned, not raised."""
        if self._closed:
            raise LedgerError(f"DynamoDB ledger table {self.table_name!r} is closed")
        if self.read_only and operation not in _READ_OPERATIONS:
            raise LedgerError(f"{self.url} is open read-only: {what} ({operation}) refused")
        method: Callable[..., dict[str, Any]] = getattr(self._client, operation)
        try:
            return method(**params)
        except ClientError as exc:
            if _error_code(exc) in tolerate:
                return exc
            raise _ledger_error(self.table_name, what, operation, exc) from exc
        except BotoCoreError as exc:
            raise _ledger_error(self.table_name, what, operation, exc) from exc

    def _ok(self, result: dict[str, Any] | ClientError) -> dict[str, Any]:
        assert not isinstance(result, ClientError)
        return result

    def _transact(self, what: str, items: list[dict[str, Any]]) -> ClientError | None:
        """Run one TransactWriteItems; returns the cancellation when a condition failed.

        Conflicts with concurrent transactions on the same item are retried here with jittered
        backoff: each attempt is a new transaction, so it gets a fresh token.
        """
        for attempt in range(_CONFLICT_ATTEMPTS):
            result = self._call(
                what,
                "transact_write_items",
                tolerate=("TransactionCanceledException",),
                TransactItems=items,
                ClientRequestToken=secrets.token_hex(16),
            )
            if not isinstance(result, ClientError):
                return None
            codes = _cancel_codes(result)
            if "ConditionalCheckFailed" in codes:
                return result
            if attempt + 1 < _CONFLICT_ATTEMPTS and any(c in _RETRYABLE_CANCEL_CODES for c in codes):
                time.sleep(min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5))
                continue
            raise _ledger_error(self.table_name, what, "TransactWriteItems", result)
        raise AssertionError("unreachable")  # pragma: no cover

    def _query(self, what: str, **params: Any) -> Iterator[Item]:
        """Every item of a Query, following pagination; ``Limit`` caps the total if given."""
        remaining = params.pop("Limit", None)
        params["TableName"] = self.table_name
        while True:
            if remaining is not None:
                params["Limit"] = remaining
            page = self._ok(self._call(what, "query", **params))
            for item in page.get("Items", []):
                yield item
            if remaining is not None:
                remaining -= len(page.get("Items", []))
                if remaining <= 0:
                    return
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    def _get(self, what: str, pk: str, sk: str, *, consistent: bool = True) -> Item | None:
        result = self._ok(
            self._call(
                what,
                "get_item",
                TableName=self.table_name,
                Key={"pk": _s(pk), "sk": _s(sk)},
                ConsistentRead=consistent,
            )
        )
        item: Item | None = result.get("Item")
        return item

    def _ttl(self) -> AttributeValue | None:
        if self._usage_ttl_s is None:
            return None
        return _n(int(time.time()) + self._usage_ttl_s)

    def _with_ttl(self, update: _Update) -> _Update:
        ttl = self._ttl()
        if ttl is not None:
            update.set(TTL_ATTRIBUTE, ttl)
        return update

    def _put(self, item: Item, *, ttl: bool = True) -> dict[str, Any]:
        if ttl:
            expires = self._ttl()
            if expires is not None:
                item[TTL_ATTRIBUTE] = expires
        return {"Put": {"TableName": self.table_name, "Item": item}}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            # botocore clients grew close() in 1.28; older ones just drop their pool with the object.
            closer = getattr(self._client, "close", None)
            if callable(closer):
                closer()

    # -- hot path -------------------------------------------------------------------------------

    def kill_switch(self, workflow: str, now_ms: int) -> KillSwitch | None:
        switch: KillSwitch | None
        cached = self._kill_cache.get(workflow) if self._kill_cache_s > 0 else None
        if cached is not None and time.monotonic() - cached[0] < self._kill_cache_s:
            switch = cached[1]
        else:
            item = self._get("reading the kill switch", "KILL", _fit(workflow))
            switch = self._kill_switch_from(item) if item else None
            if self._kill_cache_s > 0:
                with self._lock:
                    self._kill_cache[workflow] = (time.monotonic(), switch)
        # The switch is cached, not the verdict: expiry is judged against the caller's clock.
        if switch is None or (switch.expires_at_ms is not None and switch.expires_at_ms <= now_ms):
            return None
        return switch

    @staticmethod
    def _kill_switch_from(item: Item) -> KillSwitch:
        return KillSwitch(
            _str(item, "workflow") or _str(item, "sk") or "",
            _str(item, "reason") or "",
            _str(item, "set_by") or "",
            _int(item, "set_at_ms"),
            _opt_int(item, "expires_at_ms"),
        )

    def session_totals(self, session_id: str) -> Totals:
        # "#S" (counters) and "M#..." (per-request response marks) sort before "N"; the
        # session's violations ("V#...") after it, so they are not read here.
        totals = Totals()
        for item in self._query(
            "reading session counters",
            KeyConditionExpression="pk = :pk AND sk < :n",
            ExpressionAttributeValues={":pk": _s(f"S#{_q(session_id)}"), ":n": _s("N")},
            ConsistentRead=True,
        ):
            if _str(item, "sk") == "#S":
                marks = totals.max_tool_response_bytes
                totals = _totals(item)
                totals.max_tool_response_bytes = marks
            else:
                totals.max_tool_response_bytes = max(totals.max_tool_response_bytes, _int(item, "max_tool_response_bytes"))
        return totals

    def _budget_key(self, workflow: str, period: str) -> Item:
        return {"pk": _s(f"B#{_q(workflow)}"), "sk": _s(period)}

    def _budget_update(self, workflow: str, period: str) -> _Update:
        update = _Update(self.table_name, self._budget_key(workflow, period))
        update.set("workflow", _s(workflow)).set("period", _s(period))
        update.set("gsi1pk", _s("BUDGETS")).set("gsi1sk", _s(f"{_q(workflow)}#{period}"))
        return self._with_ttl(update)

    def _committed(self, workflow: str, period: str) -> int:
        item = self._get("reading a budget counter", f"B#{_q(workflow)}", period)
        return _int(item, "committed") if item else 0

    def _lease_key(self, workflow: str, lease_id: str) -> Item:
        return {"pk": _s(f"B#{_q(workflow)}"), "sk": _s(f"L#{lease_id}")}

    def _lease_hold_item(self, reservation: Reservation, lease_id: str, amount_nanos: int, expires: int) -> dict[str, Any]:
        """The lease's side of a hold: created with a new lease, grown and renewed with an old one."""
        if reservation.lease_id is None:
            item: Item = {
                **self._lease_key(reservation.workflow, lease_id),
                "lease_id": _s(lease_id),
                "workflow": _s(reservation.workflow),
                "periods": _s(" ".join(p.period for p in reservation.periods)),
                "amount": _n(amount_nanos),
                "owner": _s(reservation.owner or "-"),
                "expires_at_ms": _n(expires),
            }
            # No TTL attribute: DynamoDB deleting a lease by itself would leak what it holds.
            put = self._put(item, ttl=False)
            put["Put"]["ConditionExpression"] = "attribute_not_exists(pk)"
            return put
        update = _Update(self.table_name, self._lease_key(reservation.workflow, lease_id))
        update.add("amount", amount_nanos).set("expires_at_ms", _n(expires))
        update.condition = f"attribute_exists({update.name('pk')})"
        return {"Update": update.params()}

    def _hold(self, reservation: Reservation, amount_nanos: int, now_ms: int, *, reclaimed: bool = False) -> ReserveResult:
        items: list[dict[str, Any]] = []
        limited: list[PeriodLimit | None] = []
        for period in reservation.periods:
            update = self._budget_update(reservation.workflow, period.period)
            update.add("reserved", amount_nanos).add("committed", amount_nanos)
            if period.limit_nanos is not None:
                room = period.limit_nanos - amount_nanos
                if room < 0:
                    # More than the whole limit: no counter state can make room for it.
                    committed = self._committed(reservation.workflow, period.period)
                    return ReserveResult(False, None, period.period, period.limit_nanos, committed)
                c = update.name("committed")
                update.condition = f"attribute_not_exists({c}) OR {c} <= {update.value(_n(room))}"
                params = update.params()
                params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
                items.append({"Update": params})
                limited.append(period)
            else:
                items.append({"Update": update.params()})
                limited.append(None)
        if not items:
            reservation.amount_nanos += amount_nanos
            return ReserveResult(True, reservation)
        lease_id = reservation.lease_id or new_lease_id()
        expires = now_ms + reservation.ttl_ms
        items.append(self._lease_hold_item(reservation, lease_id, amount_nanos, expires))
        cancelled = self._transact("reserving budget", items)
        if cancelled is not None:
            reasons = cancelled.response.get("CancellationReasons", [])
            lease_reason = reasons[len(limited)] if len(reasons) > len(limited) else {}
            if lease_reason.get("Code") == "ConditionalCheckFailed" and reservation.lease_id is not None:
                # The lease expired and was reclaimed: what it held is back in the budget.
                reservation.amount_nanos = 0
                reservation.lease_id = None
                return self._hold(reservation, amount_nanos, now_ms, reclaimed=reclaimed)
            for index, reason in enumerate(reasons):
                period_limit = limited[index] if index < len(limited) else None
                if reason.get("Code") == "ConditionalCheckFailed" and period_limit is not None:
                    if not reclaimed and self.reclaim_expired_leases(now_ms, reservation.workflow):
                        return self._hold(reservation, amount_nanos, now_ms, reclaimed=True)
                    old = reason.get("Item")
                    committed = (
                        _int(old, "committed")
                        if old
                        else self._committed(reservation.workflow, period_limit.period)
                    )
                    return ReserveResult(
                        False, None, period_limit.period, period_limit.limit_nanos, committed
                    )
            raise _ledger_error(self.table_name, "reserving budget", "TransactWriteItems", cancelled)
        reservation.lease_id = lease_id
        reservation.amount_nanos += amount_nanos
        reservation.expires_at_ms = expires
        return ReserveResult(True, reservation)

    def renew_lease(self, reservation: Reservation, now_ms: int) -> bool:
        if reservation.lease_id is None:
            return False
        expires = now_ms + reservation.ttl_ms
        update = _Update(self.table_name, self._lease_key(reservation.workflow, reservation.lease_id))
        update.set("expires_at_ms", _n(expires))
        update.condition = f"attribute_exists({update.name('pk')})"
        result = self._call("renewing a budget lease", "update_item", tolerate=("ConditionalCheckFailedException",), **update.params())
        if isinstance(result, ClientError):
            reservation.amount_nanos = 0
            reservation.lease_id = None
            return False
        reservation.expires_at_ms = expires
        return True

    def leases(self, workflow: str | None = None) -> list[Lease]:
        workflows = [workflow] if workflow is not None else sorted({c.workflow for c in self.budget_counters()})
        found: list[Lease] = []
        for name in workflows:
            for item in self._query(
                "reading budget leases",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :l)",
                ExpressionAttributeValues={":pk": _s(f"B#{_q(name)}"), ":l": _s("L#")},
                ConsistentRead=True,
            ):
                found.append(
                    Lease(
                        _str(item, "lease_id") or "",
                        _str(item, "workflow") or name,
                        tuple((_str(item, "periods") or "").split()),
                        _int(item, "amount"),
                        _str(item, "owner") or "",
                        _int(item, "expires_at_ms"),
                    )
                )
        return sorted(found, key=lambda lease: lease.expires_at_ms)

    def reclaim_expired_leases(self, now_ms: int, workflow: str | None = None) -> int:
        reclaimed = 0
        for lease in self.leases(workflow):
            if not lease.expired(now_ms):
                continue
            delete: dict[str, Any] = {
                "Delete": {
                    "TableName": self.table_name,
                    "Key": self._lease_key(lease.workflow, lease.lease_id),
                    # Only the lease as read: a renewal or a settlement since then wins.
                    "ConditionExpression": "expires_at_ms <= :now AND amount = :amount",
                    "ExpressionAttributeValues": {":now": _n(now_ms), ":amount": _n(lease.amount_nanos)},
                }
            }
            items = [delete]
            for period in lease.periods:
                update = self._budget_update(lease.workflow, period)
                update.add("reserved", -lease.amount_nanos).add("committed", -lease.amount_nanos)
                items.append({"Update": update.params()})
            if self._transact("reclaiming an expired lease", items) is None:
                reclaimed += 1
        if reclaimed:
            logger.warning("reclaimed %d expired budget lease(s) (a process died or hung mid-call)", reclaimed)
        return reclaimed

    def _settle_items(self, reservation: Reservation, spent_nanos: int, *, keep: bool = False, now_ms: int = 0, lease_gone: bool = False) -> list[dict[str, Any]]:
        """Counter updates (and the lease's delete or shrink) that settle ``spent_nanos``.

        ``lease_gone``: the lease was reclaimed, so its hold is already back in the budget and
        only the spend is counted.
        """
        held = 0 if lease_gone else reservation.amount_nanos
        released = min(held, spent_nanos) if keep else held
        items = []
        for period in reservation.periods:
            update = self._budget_update(reservation.workflow, period.period)
            update.add("spent", spent_nanos)
            update.add("reserved", -released)
            update.add("committed", spent_nanos - released)
            items.append({"Update": update.params()})
        if reservation.lease_id is not None and not lease_gone:
            key = self._lease_key(reservation.workflow, reservation.lease_id)
            if keep and held - released > 0:
                update = _Update(self.table_name, key)
                update.add("amount", -released).set("expires_at_ms", _n(now_ms + reservation.ttl_ms))
                update.condition = f"attribute_exists({update.name('pk')})"
                items.append({"Update": update.params()})
            else:
                items.append({"Delete": {"TableName": self.table_name, "Key": key, "ConditionExpression": "attribute_exists(pk)"}})
        return items

    @staticmethod
    def _after_settle(reservation: Reservation, spent_nanos: int, *, keep: bool, now_ms: int, lease_gone: bool) -> None:
        held = 0 if lease_gone else reservation.amount_nanos
        released = min(held, spent_nanos) if keep else held
        remaining = held - released
        if keep and remaining > 0:
            reservation.amount_nanos = remaining
            reservation.expires_at_ms = now_ms + reservation.ttl_ms
        else:
            reservation.amount_nanos = 0
            reservation.lease_id = None

    def release(self, reservation: Reservation) -> None:
        if not reservation.amount_nanos and reservation.lease_id is None:
            return
        for lease_gone in (False, True):
            cancelled = self._transact("releasing a reservation", self._settle_items(reservation, 0, lease_gone=lease_gone))
            if cancelled is None:
                break
            if lease_gone:
                raise _ledger_error(self.table_name, "releasing a reservation", "TransactWriteItems", cancelled)
        reservation.amount_nanos = 0
        reservation.lease_id = None

    # -- record ---------------------------------------------------------------------------------

    def _request_update(self, segment: RequestSegment, new: bool) -> _Update:
        t = segment.totals
        update = _Update(self.table_name, {"pk": _s(f"R#{_q(segment.request_id)}"), "sk": _s("#R")})
        for attr, value in (
            ("request_id", segment.request_id),
            ("workflow", segment.workflow),
            ("session_id", segment.session_id),
            ("operation", segment.operation),
            ("user_id", segment.user_id),
            ("agent_id", segment.agent_id),
            ("agent_alias_id", segment.agent_alias_id),
        ):
            if value is not None:
                update.set_if_absent(attr, _s(value))
        update.set_if_absent("started_ms", _n(segment.started_ms))
        update.set("ended_ms", _n(segment.ended_ms)).set("status", _s(segment.status))
        for attr in _TOTAL_ATTRS:  # the request takes the running totals, as SQLite does
            update.set(attr, _n(getattr(t, attr)))
        update.add("segments", segment.parts)
        update.add("latency_ms", segment.latency_ms)
        update.add("model_latency_ms", segment.model_latency_ms)
        update.add("tool_latency_ms", segment.tool_latency_ms)
        update.add("unknown_events", segment.unknown_events)
        update.add("unpriced_calls", segment.unpriced_calls)
        if segment.ttft_ms is not None:
            update.set_if_absent("ttft_ms", _n(segment.ttft_ms))
        if segment.return_control_id is not None:
            update.set("return_control_id", _s(segment.return_control_id))
            update.set("gsi1pk", _s(f"RC#{_q(segment.session_id)}#{_q(segment.return_control_id)}"))
            update.set("gsi1sk", _s(f"{_ts(segment.ended_ms)}#{_q(segment.request_id)}"))
        else:
            update.remove("return_control_id").remove("gsi1pk").remove("gsi1sk")
        pk = update.name("pk")
        update.condition = f"attribute_not_exists({pk})" if new else f"attribute_exists({pk})"
        return self._with_ttl(update)

    def _session_update(self, segment: RequestSegment, new: bool) -> _Update:
        d = segment.delta
        update = _Update(self.table_name, {"pk": _s(f"S#{_q(segment.session_id)}"), "sk": _s("#S")})
        update.set_if_absent("session_id", _s(segment.session_id))
        update.set_if_absent("workflow", _s(segment.workflow))
        if segment.user_id is not None:
            update.set_if_absent("user_id", _s(segment.user_id))
        update.set_if_absent("first_ms", _n(segment.started_ms))
        update.set("last_ms", _n(segment.ended_ms))
        update.add("requests", 1 if new else 0)
        for attr in _ADDITIVE_ATTRS:
            update.add(attr, getattr(d, attr))
        update.add("latency_ms", segment.latency_ms)
        update.add("model_latency_ms", segment.model_latency_ms)
        update.add("tool_latency_ms", segment.tool_latency_ms)
        return self._with_ttl(update)

    def _daily_items(self, segments: Sequence[RequestSegment]) -> list[dict[str, Any]]:
        """The day partitions' aggregates (``dynamodb_rollups``) the segments add to: one update
        per aggregate however many segments touch it (a transaction may name an item once)."""
        updates = aggregate_updates(
            deltas_of(segments), lambda pk, sk: _Update(self.table_name, {"pk": _s(pk), "sk": _s(sk)}), _q
        )
        return [{"Update": self._with_ttl(update).params()} for update in updates]

    def _request_day_item(self, segment: RequestSegment) -> dict[str, Any]:
        """The request's row in its start day's partition: running totals, models and agents used.

        Plain SETs of the running totals and set unions, so writing a segment twice, or a
        continuation, leaves exactly the request's totals.
        """
        t = segment.totals
        day = day_key(segment.started_ms)
        update = _Update(self.table_name, {"pk": _s(f"RD#{day}"), "sk": _s(f"{_q(segment.workflow)}#{_q(segment.request_id)}")})
        update.set("request_id", _s(segment.request_id)).set("workflow", _s(segment.workflow))
        update.set("session_id", _s(segment.session_id)).set("started_ms", _n(segment.started_ms))
        if segment.user_id is not None:
            update.set("user_id", _s(segment.user_id))
        for attr in ("model_calls", "tool_calls", *_TOKEN_ATTRS, "cost_nanos"):
            update.set(attr, _n(getattr(t, attr)))
        update.add("latency_ms", segment.latency_ms)  # summed over segments, as the request row does
        if segment.ttft_ms is not None:
            update.set_if_absent("ttft_ms", _n(segment.ttft_ms))
        if segment.model_calls:
            update.add_to_set("models", (m.base_model_id for m in segment.model_calls))
            update.add_to_set("agents", (agent_label(m.agent, segment.agent_id) for m in segment.model_calls))
            update.add_to_set("price_keys", (m.base_model_id + PRICE_KEY_SEPARATOR + (m.price_key or "") for m in segment.model_calls))
        return {"Update": self._with_ttl(update).params()}

    def _chunk_items(self, segment: RequestSegment) -> list[dict[str, Any]]:
        """Model and tool call rows packed into as few items as fit under the item size limit."""
        rows: list[tuple[str, str]] = []
        for m in segment.model_calls:
            rows.append(("calls", json.dumps(
                [m.ts_ms, m.model_id, m.base_model_id, m.step_type, m.agent, m.user_id, m.input_tokens,
                 m.output_tokens, m.cache_read_tokens, m.cache_write_tokens, m.cost_nanos,
                 1 if m.priced else 0, m.latency_ms, m.workflow, m.session_id, m.price_key, m.flags],
                separators=(",", ":"),
            )))
        for c in segment.tool_calls:
            rows.append(("tools", json.dumps(
                [c.ts_ms, c.kind, c.name, c.agent, c.response_bytes, c.latency_ms, c.workflow, c.session_id],
                separators=(",", ":"),
            )))
        if not rows:
            return []
        chunks: list[dict[str, list[str]]] = [{"calls": [], "tools": []}]
        size = 0
        for kind, row in rows:
            if size + len(row) > _CHUNK_BYTES and size:
                chunks.append({"calls": [], "tools": []})
                size = 0
            chunks[-1][kind].append(row)
            size += len(row) + 1
        prefix = f"C#{_ts(segment.ended_ms)}#{_uniq()}"
        items = []
        for n, chunk in enumerate(chunks):
            item: Item = {
                "pk": _s(f"R#{_q(segment.request_id)}"),
                "sk": _s(f"{prefix}#{n:04d}"),
                "request_id": _s(segment.request_id),
                "workflow": _s(segment.workflow),
                "session_id": _s(segment.session_id),
            }
            for kind in ("calls", "tools"):
                if chunk[kind]:
                    item[kind] = _s("[" + ",".join(chunk[kind]) + "]")
            items.append(self._put(item))
        return items

    def _violation_items(self, violations: Sequence[ViolationRecord]) -> list[dict[str, Any]]:
        items = []
        workflows = set()
        for v in violations:
            uniq = f"{_ts(v.ts_ms)}#{_uniq()}"
            pk = f"S#{_q(v.session_id)}" if v.session_id is not None else f"VW#{_q(v.workflow)}"
            item: Item = {
                "pk": _s(pk),
                "sk": _s(f"V#{uniq}"),
                "gsi1pk": _s(f"V#{_q(v.workflow)}"),
                "gsi1sk": _s(uniq),
                "ts_ms": _n(v.ts_ms),
                "workflow": _s(v.workflow),
                "kind": _s(v.kind),
                "rule": _s(v.rule),
                "limit_value": _s(v.limit),
                "observed": _s(v.observed),
                "enforced": {"BOOL": bool(v.enforced)},
                "detail": _s(json.dumps(v.detail, sort_keys=True, default=str)),
            }
            if v.session_id is not None:
                item["session_id"] = _s(v.session_id)
            if v.request_id is not None:
                item["request_id"] = _s(v.request_id)
            items.append(self._put(item))
            workflows.add(v.workflow)
        items.extend(self._registry_items("V", workflows))
        return items

    def _registry_items(self, kind: str, workflows: Iterable[str]) -> list[dict[str, Any]]:
        return [
            self._put({"pk": _s("WF"), "sk": _s(f"{kind}#{_q(w)}"), "workflow": _s(w)}, ttl=False)
            for w in sorted(set(workflows))
        ]

    def _session_max_update(self, segment: RequestSegment) -> dict[str, Any] | None:
        """The request's largest tool response, kept in the session's partition.

        An update expression cannot take a max, and a conditional max would cancel the whole
        transaction. A request's running max only grows and is known exactly (``totals``), so
        each request keeps its own mark in the session partition (``M#{request}``) with a plain
        SET, and the session's max is the largest of them, found by the read of the session.
        """
        value = segment.totals.max_tool_response_bytes
        if value <= 0:
            return None
        update = _Update(
            self.table_name, {"pk": _s(f"S#{_q(segment.session_id)}"), "sk": _s(f"M#{_q(segment.request_id)}")}
        )
        update.set("max_tool_response_bytes", _n(value))
        return {"Update": self._with_ttl(update).params()}

    def record(self, segment: RequestSegment) -> None:
        t, d = segment.totals, segment.delta
        counters: list[dict[str, Any]] = []
        session_max = self._session_max_update(segment)
        if session_max is not None:
            counters.append(session_max)
        settle_at = len(counters)
        if segment.reservation is not None:
            counters.extend(self._settle_items(segment.reservation, d.cost_nanos, keep=segment.keep_reservation, now_ms=segment.ended_ms))
        elif segment.lease_settle is not None:
            counters.extend(self._lease_settle_items([segment.lease_settle], set()))
        settle_end = len(counters)
        counters.extend(self._daily_items([segment]))
        counters.append(self._request_day_item(segment))
        rows = self._chunk_items(segment) + self._violation_items(segment.violations)
        fixed = len(counters) + 2  # + request and session updates
        if fixed > _TXN_MAX_ITEMS:
            raise LedgerError(
                f"DynamoDB ledger table {self.table_name!r}: request {segment.request_id!r} spans "
                f"{fixed} counters, more than one transaction can update atomically"
            )
        inline: list[dict[str, Any]] = []
        size = sum(_approx_size(i) for i in counters) + 4_000
        overflow: list[dict[str, Any]] = []
        for row in rows:
            row_size = _approx_size(row)
            if fixed + len(inline) < _TXN_MAX_ITEMS and size + row_size <= _TXN_MAX_BYTES:
                inline.append(row)
                size += row_size
            else:
                overflow.append(row)
        # Rows that do not fit go first: each is a Put under a unique key, so a retry after a
        # failure rewrites them harmlessly, while the counters below are applied exactly once.
        for start in range(0, len(overflow), 25):
            batch = overflow[start : start + 25]
            failed = self._transact("recording call rows", batch)
            if failed is not None:
                raise _ledger_error(self.table_name, "recording call rows", "TransactWriteItems", failed)
        new = t == d  # a first segment's running totals are its delta
        lease_gone = False
        for _ in range(3):
            items = [
                {"Update": self._request_update(segment, new).params()},
                {"Update": self._session_update(segment, new).params()},
                *counters,
                *inline,
            ]
            cancelled = self._transact("recording usage", items)
            if cancelled is None:
                break
            codes = _cancel_codes(cancelled)
            failed = [i for i, code in enumerate(codes) if code == "ConditionalCheckFailed"]
            if failed and failed[0] >= 2 and (segment.reservation or segment.lease_settle) is not None and not lease_gone:
                # The lease expired and was reclaimed: its hold is already back, count the spend only.
                lease_gone = True
                if segment.reservation is not None:
                    counters[settle_at:settle_end] = self._settle_items(
                        segment.reservation, d.cost_nanos, keep=segment.keep_reservation, now_ms=segment.ended_ms, lease_gone=True
                    )
                elif segment.lease_settle is not None:
                    counters[settle_at:settle_end] = self._lease_settle_items(
                        [segment.lease_settle], {segment.lease_settle.lease_id or ""}
                    )
                continue
            if not codes or codes[0] != "ConditionalCheckFailed":
                raise _ledger_error(self.table_name, "recording usage", "TransactWriteItems", cancelled)
            new = not new  # the guess about the request item was wrong; nothing was written
        else:
            raise LedgerError(
                f"DynamoDB ledger table {self.table_name!r}: recording request {segment.request_id!r} "
                "kept conflicting with a concurrent writer of the same request"
            )
        if segment.reservation is not None:
            self._after_settle(segment.reservation, d.cost_nanos, keep=segment.keep_reservation, now_ms=segment.ended_ms, lease_gone=lease_gone)

    # -- batched record (the background writer) --------------------------------------------------

    def record_many(self, segments: Sequence[RequestSegment]) -> None:
        """Many segments in as few TransactWriteItems as fit (100 items, ~3.5 MB each).

        Segments of one request are merged (so its items appear once per transaction, as
        DynamoDB requires); counters of one session, day, budget period and lease are summed
        across requests; call rows of the whole batch are packed into shared chunk items. Each
        transaction holds whole requests with their counters, so every counter still equals
        the rows behind it. Only requests paused by (or resumed from) a returnControl write their
        ``R#`` item: nothing else reads it.
        """
        if any(s.reservation is not None and (s.reservation.lease_id or s.reservation.amount_nanos) for s in segments):
            for segment in segments:  # per-request holds (synchronous mode) settle one by one
                self.record(segment)
            return
        written: set[int] = set()
        pending = [merge_by_request(segments)]
        try:
            while pending:
                part = pending.pop(0)
                items = self._batch_items(part, {}, set())
                if len(items) <= _TXN_MAX_ITEMS and sum(_approx_size(i) for i in items) <= _TXN_MAX_BYTES:
                    self._record_part(part, items)
                elif len(part) > 1:
                    half = len(part) // 2
                    pending[0:0] = [part[:half], part[half:]]
                    continue
                else:
                    # One request too big for one transaction: the per-segment path splits its rows.
                    for original in part[0][1]:
                        self.record(original)
                for _, originals in part:
                    written.update(id(o) for o in originals)
        except LedgerError as exc:
            if written:
                raise BatchPartlyWritten(str(exc), written) from exc
            raise

    def _record_part(self, part: list[tuple[RequestSegment, list[RequestSegment]]], items: list[dict[str, Any]]) -> None:
        """One transaction for ``part`` (its ``items`` already built); a condition that failed
        (a reclaimed lease, a wrong guess about a request's ``R#``) is corrected and retried."""
        requests = [m for m, _ in part]
        flipped: dict[str, bool] = {}
        gone: set[str] = set()
        for attempt in range(4):
            if attempt:
                items = self._batch_items(part, flipped, gone)
            cancelled = self._transact("recording usage", items)
            if cancelled is None:
                return
            codes = _cancel_codes(cancelled)
            retry = False
            for index, code in enumerate(codes):
                if code != "ConditionalCheckFailed":
                    continue
                key = items[index].get("Update", items[index].get("Delete", {})).get("Key", {})
                pk, sk = key.get("pk", {}).get("S", ""), key.get("sk", {}).get("S", "")
                if sk.startswith("L#"):
                    gone.add(sk[2:])  # the lease was reclaimed: count the spend only
                    retry = True
                elif sk == "#R":
                    for segment in requests:
                        if f"R#{_q(segment.request_id)}" == pk:
                            flipped[segment.request_id] = not flipped.get(segment.request_id, False)
                            retry = True
            if not retry:
                raise _ledger_error(self.table_name, "recording usage", "TransactWriteItems", cancelled)
        raise LedgerError(
            f"DynamoDB ledger table {self.table_name!r}: recording a batch kept conflicting with concurrent writers"
        )

    def _batch_items(
        self, part: list[tuple[RequestSegment, list[RequestSegment]]], flipped: dict[str, bool], gone: set[str]
    ) -> list[dict[str, Any]]:
        requests = [merged for merged, _ in part]
        items: list[dict[str, Any]] = []
        sessions: dict[str, list[RequestSegment]] = {}
        for segment in requests:
            sessions.setdefault(segment.session_id, []).append(segment)
            if segment.resumed or segment.return_control_id is not None:
                new = segment.is_first != flipped.get(segment.request_id, False)
                items.append({"Update": self._request_update(segment, new).params()})
            items.append(self._request_day_item(segment))
            mark = self._session_max_update(segment)
            if mark is not None:
                items.append(mark)
        for members in sessions.values():
            items.append({"Update": self._sessions_update(members).params()})
        items.extend(self._daily_items([o for _, originals in part for o in originals]))
        settles = [o.lease_settle for _, originals in part for o in originals if o.lease_settle is not None]
        items.extend(self._lease_settle_items(settles, gone))
        items.extend(self._batch_chunk_items(requests))
        items.extend(self._violation_items([v for s in requests for v in s.violations]))
        return items

    def _sessions_update(self, members: list[RequestSegment]) -> _Update:
        first = members[0]
        delta = Totals()
        for segment in members:
            delta.add(segment.delta)
        update = _Update(self.table_name, {"pk": _s(f"S#{_q(first.session_id)}"), "sk": _s("#S")})
        update.set_if_absent("session_id", _s(first.session_id))
        update.set_if_absent("workflow", _s(first.workflow))
        user = next((s.user_id for s in members if s.user_id is not None), None)
        if user is not None:
            update.set_if_absent("user_id", _s(user))
        update.set_if_absent("first_ms", _n(min(s.started_ms for s in members)))
        update.set("last_ms", _n(max(s.ended_ms for s in members)))
        update.add("requests", sum(1 for s in members if s.is_first))
        for attr in _ADDITIVE_ATTRS:
            update.add(attr, getattr(delta, attr))
        update.add("latency_ms", sum(s.latency_ms for s in members))
        update.add("model_latency_ms", sum(s.model_latency_ms for s in members))
        update.add("tool_latency_ms", sum(s.tool_latency_ms for s in members))
        return self._with_ttl(update)

    def _lease_settle_items(self, settles: list[LeaseSettle], gone: set[str]) -> list[dict[str, Any]]:
        periods: dict[tuple[str, str], list[int]] = {}
        leases: dict[tuple[str, str], int] = {}
        for settle in settles:
            release = settle.release_nanos if settle.lease_id is not None and settle.lease_id not in gone else 0
            for period in settle.periods:
                sums = periods.setdefault((settle.workflow, period), [0, 0])
                sums[0] += settle.spent_nanos
                sums[1] += release
            if release:
                key = (settle.workflow, settle.lease_id or "")
                leases[key] = leases.get(key, 0) + release
        items = []
        for (workflow, period), (spent, release) in periods.items():
            update = self._budget_update(workflow, period)
            update.add("spent", spent).add("reserved", -release).add("committed", spent - release)
            items.append({"Update": update.params()})
        for (workflow, lease_id), release in leases.items():
            update = _Update(self.table_name, self._lease_key(workflow, lease_id))
            update.add("amount", -release)
            update.condition = f"attribute_exists({update.name('pk')})"
            items.append({"Update": update.params()})
        return items

    def _batch_chunk_items(self, requests: list[RequestSegment]) -> list[dict[str, Any]]:
        """The batch's model and tool call rows, packed together in the day's chunk partition.

        ``C#{day}#{shard}`` (a random shard of :data:`_CHUNK_SHARDS`, so writers spread over
        partitions); each row names its request and session. Nothing on the hot path reads them:
        they are the raw rows behind the aggregates, for drill-downs and audits.
        """
        rows: list[str] = []
        for segment in requests:
            for m in segment.model_calls:
                rows.append(json.dumps(
                    ["call", m.ts_ms, m.model_id, m.base_model_id, m.step_type, m.agent, m.user_id, m.input_tokens,
                     m.output_tokens, m.cache_read_tokens, m.cache_write_tokens, m.cost_nanos,
                     1 if m.priced else 0, m.latency_ms, m.workflow, m.session_id, m.price_key, m.flags, m.request_id,
                     segment.agent_id],
                    separators=(",", ":"),
                ))
            for c in segment.tool_calls:
                rows.append(json.dumps(
                    ["tool", c.ts_ms, c.kind, c.name, c.agent, c.response_bytes, c.latency_ms, c.workflow, c.session_id,
                     c.request_id],
                    separators=(",", ":"),
                ))
        if not rows:
            return []
        chunks: list[list[str]] = [[]]
        size = 0
        for row in rows:
            if size + len(row) > _CHUNK_BYTES and size:
                chunks.append([])
                size = 0
            chunks[-1].append(row)
            size += len(row) + 1
        ended = max(s.ended_ms for s in requests)
        pk = f"C#{day_key(ended)}#{secrets.randbelow(_CHUNK_SHARDS)}"
        prefix = f"{_ts(ended)}#{_uniq()}"
        return [
            self._put({"pk": _s(pk), "sk": _s(f"{prefix}#{n:04d}"), "rows": _s("[" + ",".join(chunk) + "]")})
            for n, chunk in enumerate(chunks)
        ]

    def record_violation(self, violation: ViolationRecord) -> None:
        cancelled = self._transact("recording a violation", self._violation_items([violation]))
        if cancelled is not None:
            raise _ledger_error(self.table_name, "recording a violation", "TransactWriteItems", cancelled)

    def request_totals(self, request_id: str) -> Totals | None:
        item = self._get("reading a request", f"R#{_q(request_id)}", "#R")
        return _totals(item) if item else None

    def find_return_control(self, session_id: str, invocation_id: str) -> str | None:
        for item in self._query(
            "looking up a return-control invocation",
            IndexName=GSI_NAME,
            KeyConditionExpression="gsi1pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"RC#{_q(session_id)}#{_q(invocation_id)}")},
            ScanIndexForward=False,
            Limit=1,
        ):
            return _str(item, "request_id")
        return None

    # -- administration and reads ---------------------------------------------------------------

    @staticmethod
    def _violation_from(item: Item) -> ViolationRecord:
        return ViolationRecord(
            _int(item, "ts_ms"),
            _str(item, "workflow") or "",
            _str(item, "session_id"),
            _str(item, "request_id"),
            _str(item, "kind") or "",
            _str(item, "rule") or "",
            _str(item, "limit_value") or "",
            _str(item, "observed") or "",
            bool(item.get("enforced", {}).get("BOOL", False)),
            json.loads(_str(item, "detail") or "{}"),
        )

    def _session_violation_items(self, session_id: str) -> list[Item]:
        return list(
            self._query(
                "reading a session's violations",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
                ExpressionAttributeValues={":pk": _s(f"S#{_q(session_id)}"), ":v": _s("V#")},
                ConsistentRead=True,
                ScanIndexForward=False,
            )
        )

    def pin_session_model(self, session_id: str, model: str, now_ms: int) -> str:
        item: Item = {"pk": _s(f"S#{_q(session_id)}"), "sk": _s("P"), "model": _s(model), "pinned_ms": _n(now_ms)}
        ttl = self._ttl()
        if ttl is not None:
            item[TTL_ATTRIBUTE] = ttl
        result = self._call(
            "pinning a session's model",
            "put_item",
            tolerate=("ConditionalCheckFailedException",),
            TableName=self.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )
        if not isinstance(result, ClientError):
            return model
        pinned = self._get("reading a session's pinned model", f"S#{_q(session_id)}", "P")
        found = _str(pinned, "model") if pinned else None
        if found is None:  # pragma: no cover - a pin is never deleted while its session lives
            raise LedgerError(f"DynamoDB ledger table {self.table_name!r}: session {session_id!r} pin vanished")
        return found

    def tool_repeats(self, session_id: str) -> dict[str, int]:
        return {
            (_str(item, "sk") or "")[2:]: _int(item, "calls")
            for item in self._query(
                "reading tool repeat counters",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :t)",
                ExpressionAttributeValues={":pk": _s(f"S#{_q(session_id)}"), ":t": _s("T#")},
                ConsistentRead=True,
            )
        }

    def add_tool_repeats(self, session_id: str, counts: dict[str, int], now_ms: int) -> None:
        items = []
        for key, n in counts.items():
            update = _Update(self.table_name, {"pk": _s(f"S#{_q(session_id)}"), "sk": _s(f"T#{key}")})
            update.add("calls", n).set("last_ms", _n(now_ms))
            items.append({"Update": self._with_ttl(update).params()})
        # One transaction per 100 counters: its ClientRequestToken keeps a retried ADD single.
        for start in range(0, len(items), _TXN_MAX_ITEMS):
            failed = self._transact("counting tool repeats", items[start : start + _TXN_MAX_ITEMS])
            if failed is not None:
                raise _ledger_error(self.table_name, "counting tool repeats", "TransactWriteItems", failed)

    def session_usage(self, session_id: str) -> SessionUsage | None:
        summary: Item | None = None
        violation_items: list[Item] = []
        largest_response = 0
        # One Query returns the counters ("#S"), response marks ("M#...") and violations ("V#...").
        for item in self._query(
            "reading a session",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(f"S#{_q(session_id)}")},
            ConsistentRead=True,
        ):
            sk = _str(item, "sk") or ""
            if sk == "#S":
                summary = item
            elif sk.startswith("M#"):
                largest_response = max(largest_response, _int(item, "max_tool_response_bytes"))
            elif sk.startswith("V#"):
                violation_items.append(item)
        violation_items.sort(key=lambda i: _str(i, "sk") or "", reverse=True)
        violations = [self._violation_from(i) for i in violation_items]
        if summary is None or _str(summary, "workflow") is None:
            if not violations:
                return None
            usage = SessionUsage.empty(session_id)
            usage.workflow = violations[0].workflow
            usage.violations = violations
            return usage
        return SessionUsage(
            session_id=session_id,
            workflow=_str(summary, "workflow"),
            user_id=_str(summary, "user_id"),
            requests=_int(summary, "requests"),
            model_calls=_int(summary, "model_calls"),
            tool_calls=_int(summary, "tool_calls"),
            input_tokens=_int(summary, "input_tokens"),
            output_tokens=_int(summary, "output_tokens"),
            cache_read_tokens=_int(summary, "cache_read_tokens"),
            cache_write_tokens=_int(summary, "cache_write_tokens"),
            cost_usd=nanos_to_usd(_int(summary, "cost_nanos")),
            max_tool_response_bytes=largest_response,
            tool_response_bytes=_int(summary, "tool_response_bytes"),
            violations=violations,
            latency_ms=_int(summary, "latency_ms"),
            model_latency_ms=_int(summary, "model_latency_ms"),
            tool_latency_ms=_int(summary, "tool_latency_ms"),
        )

    def _kill_log_item(self, workflow: str, action: str, reason: str | None, actor: str, now_ms: int) -> dict[str, Any]:
        item: Item = {
            "pk": _s(f"KLOG#{_q(workflow)}"),
            "sk": _s(f"{_ts(now_ms)}#{_uniq()}"),
            "workflow": _s(workflow),
            "action": _s(action),
            "actor": _s(actor),
            "ts_ms": _n(now_ms),
        }
        if reason is not None:
            item["reason"] = _s(reason)
        return self._put(item, ttl=False)

    def set_kill_switch(
        self, workflow: str, reason: str, set_by: str, now_ms: int, expires_at_ms: int | None = None
    ) -> KillSwitch:
        item: Item = {
            "pk": _s("KILL"),
            "sk": _s(_fit(workflow)),
            "workflow": _s(workflow),
            "reason": _s(reason),
            "set_by": _s(set_by),
            "set_at_ms": _n(now_ms),
        }
        if expires_at_ms is not None:
            item["expires_at_ms"] = _n(expires_at_ms)
        failed = self._transact(
            "setting a kill switch",
            [self._put(item, ttl=False), self._kill_log_item(workflow, "block", reason, set_by, now_ms)],
        )
        if failed is not None:
            raise _ledger_error(self.table_name, "setting a kill switch", "TransactWriteItems", failed)
        with self._lock:
            self._kill_cache.pop(workflow, None)
        return KillSwitch(workflow, reason, set_by, now_ms, expires_at_ms)

    def clear_kill_switch(self, workflow: str, cleared_by: str, now_ms: int) -> bool:
        with self._lock:
            self._kill_cache.pop(workflow, None)
        cancelled = self._transact(
            "clearing a kill switch",
            [
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {"pk": _s("KILL"), "sk": _s(_fit(workflow))},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
                self._kill_log_item(workflow, "unblock", None, cleared_by, now_ms),
            ],
        )
        return cancelled is None

    def kill_switches(self, now_ms: int) -> list[KillSwitch]:
        switches = [
            self._kill_switch_from(item)
            for item in self._query(
                "reading kill switches",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s("KILL")},
                ConsistentRead=True,
            )
        ]
        active = [s for s in switches if s.expires_at_ms is None or s.expires_at_ms > now_ms]
        return sorted(active, key=lambda s: s.workflow)

    def kill_switch_log(self, workflow: str) -> list[tuple[str, str | None, str, int]]:
        """``(action, reason, actor, ts_ms)`` for every block/unblock of a workflow, oldest first."""
        return [
            (_str(i, "action") or "", _str(i, "reason"), _str(i, "actor") or "", _int(i, "ts_ms"))
            for i in self._query(
                "reading the kill switch log",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(f"KLOG#{_q(workflow)}")},
                ConsistentRead=True,
            )
        ]

    def budget_counters(self, workflow: str | None = None) -> list[BudgetCounter]:
        if workflow is not None:
            items = self._query(
                "reading budget counters",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(f"B#{_q(workflow)}")},
                ConsistentRead=True,
            )
        else:
            items = self._query(
                "reading budget counters",
                IndexName=GSI_NAME,
                KeyConditionExpression="gsi1pk = :pk",
                ExpressionAttributeValues={":pk": _s("BUDGETS")},
            )
        counters = [
            BudgetCounter(_str(i, "workflow") or "", _str(i, "period") or "", _int(i, "spent"), _int(i, "reserved"))
            for i in items
            if not (_str(i, "sk") or "").startswith("L#")  # the leases share the counters' partition
        ]
        return sorted(counters, key=lambda c: (c.workflow, c.period))

    def _registered(self, kind: str) -> list[str]:
        return [
            _str(i, "workflow") or ""
            for i in self._query(
                "reading the workflow registry",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :k)",
                ExpressionAttributeValues={":pk": _s("WF"), ":k": _s(f"{kind}#")},
                ConsistentRead=True,
            )
        ]

    def violations(
        self, *, workflow: str | None = None, session_id: str | None = None, limit: int | None = None
    ) -> list[ViolationRecord]:
        if limit is not None and int(limit) <= 0:
            return []
        keyed: list[tuple[str, Item]] = []
        if session_id is not None:
            for item in self._session_violation_items(session_id):
                if workflow is None or _str(item, "workflow") == workflow:
                    keyed.append((_str(item, "gsi1sk") or "", item))
        else:
            workflows = [workflow] if workflow is not None else self._registered("V")
            for name in workflows:
                params: dict[str, Any] = {
                    "IndexName": GSI_NAME,
                    "KeyConditionExpression": "gsi1pk = :pk",
                    "ExpressionAttributeValues": {":pk": _s(f"V#{_q(name)}")},
                    "ScanIndexForward": False,
                }
                if limit is not None:
                    params["Limit"] = int(limit)
                keyed.extend((_str(i, "gsi1sk") or "", i) for i in self._query("reading violations", **params))
        # gsi1sk is "{ts}#{time_ns}{random}": newest first, ties in write order, like SQLite's id.
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        if limit is not None:
            keyed = keyed[: int(limit)]
        return [self._violation_from(item) for _, item in keyed]

    def _daily_aggregates(self, what: str, since_day: str, until_day: str, condition: str, value: str) -> list[DailyUsage]:
        """The day partitions' aggregates whose sort key meets ``condition`` (on ``:sk``), per day
        in ``[since_day, until_day)``: one consistent Query per day."""
        day, until = _day_start(since_day), _day_start(until_day)
        rows: list[DailyUsage] = []
        while day < until:
            key = day.strftime("%Y-%m-%d")
            for i in self._query(
                what,
                KeyConditionExpression=f"pk = :pk AND {condition}",
                ExpressionAttributeValues={":pk": _s(f"D#{key}"), ":sk": _s(value)},
                ConsistentRead=True,
            ):
                rows.append(DailyUsage(key, _str(i, "workflow") or "", _str(i, "base_model_id") or "",
                                       *(_int(i, a) for a in ("model_calls", *_TOKEN_ATTRS, "cost_nanos", "unpriced_calls")),
                                       price_key=_str(i, "price_key")))
            day += timedelta(days=1)
        return sorted(rows, key=lambda r: (r.day, r.workflow, r.base_model_id, r.price_key or ""))

    def daily_usage(self, since_day: str, until_day: str) -> list[DailyUsage]:
        # Model aggregates only: other items of the day start with "#", which sorts first.
        return self._daily_aggregates("reading daily usage", since_day, until_day, "sk >= :sk", "$")

    def daily_usage_by_price_key(self, since_day: str, until_day: str) -> list[DailyUsage]:
        return self._daily_aggregates(
            "reading daily usage by price key", since_day, until_day, "begins_with(sk, :sk)", SORT_PREFIX["price"]
        )

    # -- reports -------------------------------------------------------------------------------

    def usage_report(self, query: ReportQuery) -> Report:
        """The report by Query on day partitions (see the module docstring); no Scan."""
        from costguard.reports import (
            CALL_COLUMNS,
            INVOKED_AGENT,
            REQUEST_COLUMNS,
            UsageFrames,
            build_report,
            frame_of,
        )

        since_ms, until_ms, workflow, group_by = query.since_ms, query.until_ms, query.workflow, query.group_by
        days = self._usage_days(since_ms, until_ms, workflow)
        requests: list[dict[str, Any]] = []
        for day in days:
            requests.extend(self._day_requests(day, workflow, since_ms, until_ms))
        frames = UsageFrames(
            requests=frame_of(requests, REQUEST_COLUMNS),
            violations=frame_of(
                self._report_violations(since_ms, until_ms, workflow, {r["request_id"]: r["user_id"] for r in requests})
                if group_by in ("workflow", "day", "user") else [],
                ("workflow", "ts_ms", "enforced", "user_id"),
                ("ts_ms", "enforced"),
            ),
        )
        if group_by == "workflow":
            frames.requests["latency_ms"] = [r["latency_ms"] for r in requests]
            frames.requests["ttft_ms"] = [r["ttft_ms"] for r in requests]
            lambda_nanos: dict[str, int] = {}
            for a in self.actions(workflow=workflow, since_ms=since_ms):
                if until_ms is None or a.ts_ms < until_ms:
                    lambda_nanos[a.workflow] = lambda_nanos.get(a.workflow, 0) + a.cost_nanos
            frames.lambda_nanos = lambda_nanos
        if group_by in ("model", "agent", "action", "price-key"):
            aggregates = [i for day in days for i in self._day_aggregates(day, workflow)]
            models = [i for i in aggregates if not i["sk"].startswith("#")]
            if group_by == "action":
                actions = [
                    a for a in self.actions(workflow=workflow, since_ms=since_ms) if until_ms is None or a.ts_ms < until_ms
                ]
                frames.actions = frame_of(
                    [{"workflow": a.workflow, "action": a.action, "bytes_before": a.bytes_before, "bytes_after": a.bytes_after,
                      "fields_dropped": a.fields_dropped, "items_dropped": a.items_dropped, "outcome": a.outcome} for a in actions],
                    ("workflow", "action", "bytes_before", "bytes_after", "fields_dropped", "items_dropped", "outcome"),
                    ("bytes_before", "bytes_after", "fields_dropped", "items_dropped"),
                )
                frames.models = frame_of(
                    [{"workflow": i["workflow"], "base_model_id": i["key"], "n": i["model_calls"]} for i in models],
                    ("workflow", "base_model_id", "n"), ("n",),
                ).groupby(["workflow", "base_model_id"], as_index=False)["n"].sum()
            else:
                prefix = SORT_PREFIX["agent" if group_by == "agent" else "price"]
                chosen = models if group_by == "model" else [i for i in aggregates if i["sk"].startswith(prefix)]
                used_by = {"model": "models", "agent": "agents", "price-key": "price_keys"}[group_by]
                calls: dict[str, dict[str, Any]] = {}
                for item in chosen:
                    row = calls.setdefault(item["key"], {"key": item["key"], "requests": 0})
                    for attr in ("model_calls", *_TOKEN_ATTRS, "cost_nanos"):
                        row[attr] = row.get(attr, 0) + item[attr]
                for request in requests:
                    for key in request[used_by]:
                        if key in calls:
                            calls[key]["requests"] += 1
                if group_by == "agent":
                    for row in calls.values():
                        row["key"] = row["key"] or INVOKED_AGENT
                frames.calls = frame_of(list(calls.values()), CALL_COLUMNS, CALL_COLUMNS[1:])
        return build_report(frames, query)

    def _usage_days(self, since_ms: int | None, until_ms: int | None, workflow: str | None) -> list[str]:
        """The UTC days in the window with usage: each request settles its start day's budget counter."""
        first = None if since_ms is None else day_key(since_ms)
        last = None if until_ms is None else day_key(until_ms - 1)
        days = {
            c.period[len("day:"):]
            for c in self.budget_counters(workflow)
            if c.period.startswith("day:")
        }
        return sorted(d for d in days if (first is None or d >= first) and (last is None or d <= last))

    def _day_requests(self, day: str, workflow: str | None, since_ms: int | None, until_ms: int | None) -> list[dict[str, Any]]:
        values: dict[str, AttributeValue] = {":pk": _s(f"RD#{day}")}
        condition = "pk = :pk"
        if workflow is not None:
            condition += " AND begins_with(sk, :wf)"
            values[":wf"] = _s(f"{_q(workflow)}#")
        rows = []
        for i in self._query("reading a day's requests", KeyConditionExpression=condition, ExpressionAttributeValues=values):
            started = _int(i, "started_ms")
            if (since_ms is not None and started < since_ms) or (until_ms is not None and started >= until_ms):
                continue
            row: dict[str, Any] = {
                "request_id": _str(i, "request_id"),
                "workflow": _str(i, "workflow"),
                "session_id": _str(i, "session_id"),
                "user_id": _str(i, "user_id"),
                "started_ms": started,
                "models": i.get("models", {}).get("SS", []),
                "agents": i.get("agents", {}).get("SS", []),
                "price_keys": i.get("price_keys", {}).get("SS", []),
            }
            for attr in ("model_calls", "tool_calls", *_TOKEN_ATTRS, "cost_nanos"):
                row[attr] = _int(i, attr)
            row["latency_ms"] = _opt_int(i, "latency_ms")
            row["ttft_ms"] = _opt_int(i, "ttft_ms")
            rows.append(row)
        return rows

    def _day_aggregates(self, day: str, workflow: str | None) -> list[dict[str, Any]]:
        rows = []
        for i in self._query(
            "reading a day's aggregates", KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": _s(f"D#{day}")}
        ):
            if workflow is not None and _str(i, "workflow") != workflow:
                continue
            sk = _str(i, "sk") or ""
            key = (_str(i, "agent") or "") if sk.startswith(SORT_PREFIX["agent"]) else (_str(i, "base_model_id") or "")
            if sk.startswith(SORT_PREFIX["price"]):
                key += PRICE_KEY_SEPARATOR + (_str(i, "price_key") or "")
            row: dict[str, Any] = {"sk": sk, "workflow": _str(i, "workflow") or "", "key": key}
            for attr in ("model_calls", *_TOKEN_ATTRS, "cost_nanos"):
                row[attr] = _int(i, attr)
            rows.append(row)
        return rows

    def _report_violations(
        self, since_ms: int | None, until_ms: int | None, workflow: str | None, users: dict[str, str | None]
    ) -> list[dict[str, Any]]:
        rows = []
        for name in [workflow] if workflow is not None else self._registered("V"):
            values: dict[str, AttributeValue] = {":pk": _s(f"V#{_q(name)}"), ":lo": _s(_ts(since_ms or 0))}
            condition = "gsi1pk = :pk AND gsi1sk >= :lo"
            if until_ms is not None:
                condition = "gsi1pk = :pk AND gsi1sk BETWEEN :lo AND :hi"
                values[":hi"] = _s(_ts(until_ms))  # "{ts}#..." of until itself sorts after ":hi": excluded
            for i in self._query("reading violations", IndexName=GSI_NAME, KeyConditionExpression=condition,
                                 ExpressionAttributeValues=values):
                request = _str(i, "request_id")
                rows.append({
                    "workflow": _str(i, "workflow"),
                    "ts_ms": _int(i, "ts_ms"),
                    "enforced": 1 if i.get("enforced", {}).get("BOOL") else 0,
                    "user_id": users.get(request) if request else None,
                })
        return rows

    # -- reconciler: alert dedupe ------------------------------------------------------------------

    def claim_alert_key(self, key: str, now_ms: int, detail: dict[str, Any]) -> bool:
        result = self._call(
            "claiming an alert key",
            "put_item",
            tolerate=("ConditionalCheckFailedException",),
            TableName=self.table_name,
            Item={
                "pk": _s("ALERT"),
                "sk": _s(_fit(key)),
                "key": _s(key),
                "ts_ms": _n(now_ms),
                "detail": _s(json.dumps(detail, sort_keys=True, default=str)),
                "state": _s("claimed"),
                "lease_until_ms": _n(now_ms + ALERT_CLAIM_LEASE_MS),
            },
            # new, or a claim that expired unsent (items from before states existed were sent)
            ConditionExpression="attribute_not_exists(pk) OR (#state = :claimed AND lease_until_ms <= :now)",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":claimed": _s("claimed"), ":now": _n(now_ms)},
        )
        return not isinstance(result, ClientError)

    def mark_alert_sent(self, key: str, now_ms: int) -> None:
        self._call(
            "marking an alert sent",
            "update_item",
            TableName=self.table_name,
            Key={"pk": _s("ALERT"), "sk": _s(_fit(key))},
            UpdateExpression="SET #state = :sent, sent_ms = :now REMOVE lease_until_ms",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":sent": _s("sent"), ":now": _n(now_ms)},
        )

    def release_alert_key(self, key: str) -> None:
        self._call(
            "releasing an alert key",
            "delete_item",
            TableName=self.table_name,
            Key={"pk": _s("ALERT"), "sk": _s(_fit(key))},
        )

    def alert_keys(self, prefix: str | None = None) -> list[AlertKey]:
        # A key too long for a sort key is stored hashed, so a prefix does not find it.
        if prefix:
            condition = "pk = :pk AND begins_with(sk, :prefix)"
            values = {":pk": _s("ALERT"), ":prefix": _s(prefix)}
        else:
            condition, values = "pk = :pk", {":pk": _s("ALERT")}
        keys = [
            AlertKey(
                _str(i, "key") or _str(i, "sk") or "",
                _int(i, "ts_ms"),
                json.loads(_str(i, "detail") or "{}"),
                _str(i, "state") or "sent",
                _opt_int(i, "lease_until_ms"),
            )
            for i in self._query(
                "reading alert keys", KeyConditionExpression=condition, ExpressionAttributeValues=values, ConsistentRead=True
            )
        ]
        return sorted(keys, key=lambda k: (k.ts_ms, k.key))

    # -- identity -------------------------------------------------------------------------------

    def user_id_key(self) -> bytes:
        """Kept in one config item (``CONFIG`` / ``user-id-key``), created once with a conditional
        put: the first host to ask creates it, every other host reads the same one."""
        if self._user_id_key is not None:
            return self._user_id_key
        self._call(
            "creating the user id key",
            "put_item",
            tolerate=("ConditionalCheckFailedException",),
            TableName=self.table_name,
            Item={"pk": _s("CONFIG"), "sk": _s("user-id-key"), "key": {"B": secrets.token_bytes(USER_ID_KEY_BYTES)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        # created now or by another host before: the stored key is the one every host uses
        item = self._get("reading the user id key", "CONFIG", "user-id-key")
        value = (item or {}).get("key", {}).get("B")
        if not isinstance(value, bytes | bytearray) or len(value) < USER_ID_KEY_BYTES:
            raise LedgerError(f"DynamoDB ledger table {self.table_name!r}: the user id key item is damaged; restore it")
        self._user_id_key = bytes(value)
        return self._user_id_key

    # -- action guard -------------------------------------------------------------------------------

    def record_action(self, record: ActionRecord) -> None:
        item: Item = {
            "pk": _s(f"A#{_q(record.workflow)}"),
            "sk": _s(f"{_ts(record.ts_ms)}#{_uniq()}"),
            "ts_ms": _n(record.ts_ms),
            "workflow": _s(record.workflow),
            "action": _s(record.action),
            "bytes_before": _n(record.bytes_before),
            "bytes_after": _n(record.bytes_after),
            "fields_dropped": _n(record.fields_dropped),
            "items_dropped": _n(record.items_dropped),
            "strings_truncated": _n(record.strings_truncated),
            "outcome": _s(record.outcome),
        }
        for attr in ("session_id", "request_id", "agent_id"):
            value = getattr(record, attr)
            if value is not None:
                item[attr] = _s(value)
        if record.latency_ms is not None:
            item["latency_ms"] = _n(record.latency_ms)
        for attr in ("billed_ms", "memory_mb"):
            value = getattr(record, attr)
            if value is not None:
                item[attr] = _n(value)
        if record.architecture is not None:
            item["architecture"] = _s(record.architecture)
        item["cost_nanos"] = _n(record.cost_nanos)
        failed = self._transact(
            "recording an action",
            [self._put(item), *self._registry_items("A", [record.workflow]), *self._action_cost_items(record)],
        )
        if failed is not None:
            raise _ledger_error(self.table_name, "recording an action", "TransactWriteItems", failed)

    def _action_cost_items(self, record: ActionRecord) -> list[dict[str, Any]]:
        """The Lambda's cost counts in its session and its workflow's budget periods."""
        if not record.cost_nanos:
            return []
        items = []
        for period in record.budget_periods():
            update = self._budget_update(record.workflow, period)
            update.add("spent", record.cost_nanos).add("committed", record.cost_nanos)
            items.append({"Update": update.params()})
        if record.session_id is not None:
            update = _Update(self.table_name, {"pk": _s(f"S#{_q(record.session_id)}"), "sk": _s("#S")})
            update.set_if_absent("session_id", _s(record.session_id))
            update.set_if_absent("workflow", _s(record.workflow))
            update.set_if_absent("first_ms", _n(record.ts_ms))
            update.add("cost_nanos", record.cost_nanos)
            items.append({"Update": self._with_ttl(update).params()})
        return items

    def actions(self, *, workflow: str | None = None, since_ms: int | None = None) -> list[ActionRecord]:
        workflows = [workflow] if workflow is not None else self._registered("A")
        keyed: list[tuple[tuple[int, str], ActionRecord]] = []
        for name in workflows:
            values: dict[str, AttributeValue] = {":pk": _s(f"A#{_q(name)}")}
            condition = "pk = :pk"
            if since_ms is not None:
                condition += " AND sk >= :since"
                values[":since"] = _s(_ts(since_ms))
            for i in self._query(
                "reading actions", KeyConditionExpression=condition, ExpressionAttributeValues=values, ConsistentRead=True
            ):
                record = ActionRecord(
                    _int(i, "ts_ms"),
                    _str(i, "workflow") or "",
                    _str(i, "action") or "",
                    _str(i, "session_id"),
                    _str(i, "request_id"),
                    _int(i, "bytes_before"),
                    _int(i, "bytes_after"),
                    _int(i, "fields_dropped"),
                    _int(i, "items_dropped"),
                    _int(i, "strings_truncated"),
                    _str(i, "outcome") or "",
                    _opt_int(i, "latency_ms"),
                    _str(i, "agent_id"),
                    _int(i, "cost_nanos"),
                    _opt_int(i, "billed_ms"),
                    _opt_int(i, "memory_mb"),
                    _str(i, "architecture"),
                )
                # sk's "{time_ns}{random}" tail orders same-millisecond records as written.
                keyed.append(((record.ts_ms, (_str(i, "sk") or "").split("#", 1)[-1]), record))
        keyed.sort(key=lambda pair: pair[0])
        return [record for _, record in keyed]

    @staticmethod
    def _idempotency_from(key: str, item: Item) -> IdempotencyRecord:
        return IdempotencyRecord(
            key,
            _str(item, "status") or "",
            _int(item, "claimed_at_ms"),
            _int(item, "expires_at_ms"),
            _str(item, "response_sha256"),
            _opt_int(item, "response_bytes"),
            _opt_int(item, "completed_at_ms"),
        )

    def claim_idempotency_key(self, key: str, now_ms: int, ttl_ms: int) -> IdempotencyRecord | None:
        expires_at_ms = now_ms + ttl_ms
        item: Item = {
            "pk": _s(f"I#{_q(key)}"),
            "sk": _s("#I"),
            "status": _s("in_progress"),
            "claimed_at_ms": _n(now_ms),
            "expires_at_ms": _n(expires_at_ms),
            # DynamoDB's own TTL sweeps the key some time after it stops mattering (rounded up).
            TTL_ATTRIBUTE: _n(-(-expires_at_ms // 1000)),
        }
        for _ in range(5):
            result = self._call(
                "claiming an idempotency key",
                "put_item",
                tolerate=("ConditionalCheckFailedException",),
                TableName=self.table_name,
                Item=item,
                # Same rule as SQLite: a record still within its expiry wins; an expired one is replaced.
                ConditionExpression="attribute_not_exists(pk) OR expires_at_ms <= :now",
                ExpressionAttributeValues={":now": _n(now_ms)},
            )
            if not isinstance(result, ClientError):
                return None
            existing = self._get("reading an idempotency key", f"I#{_q(key)}", "#I")
            if existing is not None:
                return self._idempotency_from(key, existing)
            # Released between our claim and our read: try to claim it again.
        raise LedgerError(
            f"DynamoDB ledger table {self.table_name!r}: idempotency key {key!r} kept changing while claimed"
        )

    def complete_idempotency_key(
        self, key: str, response_sha256: str, response_bytes: int, now_ms: int
    ) -> None:
        update = _Update(self.table_name, {"pk": _s(f"I#{_q(key)}"), "sk": _s("#I")})
        update.set("status", _s("completed")).set("response_sha256", _s(response_sha256))
        update.set("response_bytes", _n(response_bytes)).set("completed_at_ms", _n(now_ms))
        # SQLite's UPDATE of a missing row does nothing; without the condition DynamoDB would
        # create a half-formed record.
        update.condition = f"attribute_exists({update.name('pk')})"
        self._call(
            "completing an idempotency key",
            "update_item",
            tolerate=("ConditionalCheckFailedException",),
            **update.params(),
        )

    def release_idempotency_key(self, key: str) -> None:
        self._call(
            "releasing an idempotency key",
            "delete_item",
            tolerate=("ConditionalCheckFailedException",),
            TableName=self.table_name,
            Key={"pk": _s(f"I#{_q(key)}"), "sk": _s("#I")},
            ConditionExpression="#status = :in_progress",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":in_progress": _s("in_progress")},
        )


# -- table management -----------------------------------------------------------------------------


def _table_spec(table_name: str) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "GlobalSecondaryIndexes": [
            {
                "IndexName": GSI_NAME,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def _check_shape(table_name: str, table: dict[str, Any]) -> None:
    keys = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    if keys != {"pk": "HASH", "sk": "RANGE"}:
        raise LedgerError(
            f"DynamoDB table {table_name!r} exists with key {keys}, not the costguard ledger's pk/sk"
        )
    indexes = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", []) or []}
    if GSI_NAME not in indexes:
        raise LedgerError(f"DynamoDB table {table_name!r} exists without the {GSI_NAME!r} index the ledger needs")


def create_table(
    table_name: str, *, client: Any = None, session: Any = None, wait: bool = True
) -> dict[str, Any]:
    """Create the ledger table (or check an existing one) with TTL and point-in-time recovery on.

    Idempotent: on an existing table it checks the key shape, turns TTL and PITR on if they are
    off, and returns its description. TTL and PITR can only be switched on once the table is
    ACTIVE, so with ``wait=False`` a new table is returned still CREATING, without them; call
    again (idempotent) once it is active.
    """
    client = client if client is not None else _make_client(session, None, None, None)

    def call(operation: str, tolerate: tuple[str, ...] = (), **params: Any) -> dict[str, Any] | ClientError:
        try:
            result: dict[str, Any] = getattr(client, operation)(**params)
            return result
        except ClientError as exc:
            if _error_code(exc) in tolerate:
                return exc
            raise _ledger_error(table_name, "creating the table", operation, exc) from exc
        except BotoCoreError as exc:
            raise _ledger_error(table_name, "creating the table", operation, exc) from exc

    created = call("create_table", tolerate=("ResourceInUseException",), **_table_spec(table_name))
    if isinstance(created, ClientError) or wait:
        if wait:
            try:
                client.get_waiter("table_exists").wait(
                    TableName=table_name, WaiterConfig={"Delay": 2, "MaxAttempts": 150}
                )
            except (ClientError, BotoCoreError) as exc:
                raise _ledger_error(table_name, "waiting for the table", "DescribeTable", exc) from exc
        table = call("describe_table", TableName=table_name)
        assert not isinstance(table, ClientError)
        description: dict[str, Any] = table["Table"]
        _check_shape(table_name, description)
        if description.get("TableStatus") == "ACTIVE":
            _enable_ttl_and_pitr(table_name, client, call)
            refreshed = call("describe_table", TableName=table_name)
            assert not isinstance(refreshed, ClientError)
            description = refreshed["Table"]
        return description
    assert not isinstance(created, ClientError)
    description = created["TableDescription"]
    return description


def _enable_ttl_and_pitr(table_name: str, client: Any, call: Callable[..., dict[str, Any] | ClientError]) -> None:
    ttl = call("describe_time_to_live", TableName=table_name)
    assert not isinstance(ttl, ClientError)
    status = ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus", "DISABLED")
    if status not in ("ENABLED", "ENABLING"):
        call(
            "update_time_to_live",
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    # Right after creation AWS may answer ContinuousBackupsUnavailableException for a little while.
    for attempt in range(10):
        backups = call(
            "update_continuous_backups",
            tolerate=("ContinuousBackupsUnavailableException",),
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        if not isinstance(backups, ClientError):
            return
        time.sleep(min(10.0, 0.5 * 2**attempt))
    raise LedgerError(f"DynamoDB table {table_name!r}: point-in-time recovery could not be enabled; try again later")
