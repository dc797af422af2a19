"""Builders of ledger records shared by the ledger contract, concurrency tests and the bench.

Also :func:`moto_dynamodb_like_aws`, which makes moto's in-memory DynamoDB behave like the real
service where the ledger's concurrency guarantees depend on it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from costguard.usage import (
    ModelCallRecord,
    PeriodLimit,
    RequestSegment,
    Reservation,
    Totals,
    ToolCallRecord,
    ViolationRecord,
)

DAY = PeriodLimit("day:2026-11-22", 1_000)
MONTH = PeriodLimit("month:2026-11", 5_000)
# 2026-11-22T00:00:00Z: model call timestamps inside the DAY period.
DAY_START_MS = 1_795_305_600_000


def segment(
    request_id: str,
    cost: int,
    *,
    session: str = "s-1",
    workflow: str = "wf",
    reservation: Reservation | None = None,
    previous: Totals | None = None,
    violations: list[ViolationRecord] | None = None,
    model_calls: int = 1,
    ts_ms: int = 1_500,
    model: str = "m",
    tool_bytes: int = 500,
    priced: bool = True,
) -> RequestSegment:
    """A segment of ``model_calls`` calls costing ``cost`` nano-dollars in all, and one tool call."""
    before = previous or Totals()
    totals = before.copy()
    totals.model_calls += model_calls
    totals.tool_calls += 1
    totals.input_tokens += 100 * model_calls
    totals.output_tokens += 10 * model_calls
    totals.cost_nanos += cost
    totals.tool_response_bytes += tool_bytes
    totals.max_tool_response_bytes = max(totals.max_tool_response_bytes, tool_bytes)
    per_call = [cost // model_calls] * model_calls
    per_call[0] += cost - sum(per_call)  # the calls' costs add up to the segment's exactly
    return RequestSegment(
        request_id=request_id,
        workflow=workflow,
        session_id=session,
        user_id="u-1",
        operation="InvokeAgent",
        agent_id="A1",
        agent_alias_id="AL1",
        started_ms=ts_ms - 500,
        ended_ms=ts_ms + 500,
        status="ok",
        totals=totals,
        delta=totals.minus(before),
        latency_ms=1000,
        model_latency_ms=800,
        tool_latency_ms=100,
        unknown_events=0,
        unpriced_calls=0 if priced else model_calls,
        return_control_id=None,
        model_calls=[
            ModelCallRecord(
                request_id, workflow, session, ts_ms + i, model, model, "ORCHESTRATION", 100, 10, 0, 0, c, priced
            )
            for i, c in enumerate(per_call)
        ],
        tool_calls=[ToolCallRecord(request_id, workflow, session, ts_ms + 100, "ACTION_GROUP", "g::f", tool_bytes, 12)],
        violations=violations or [],
        reservation=reservation,
    )


@contextmanager
def moto_dynamodb_like_aws() -> Iterator[None]:
    """Serialise moto's DynamoDB requests and make its transaction rollback touch only its items.

    moto mutates items in plain Python, so two requests handled at once by ThreadedMotoServer can
    lose each other's writes; real DynamoDB applies each item's writes atomically, and one lock
    around request handling gives moto that property. moto also snapshots the WHOLE table
    (deepcopy) before every TransactWriteItems to roll a cancelled one back, which makes a
    growing table quadratically slow; under the lock, saving and restoring just the items the
    transaction names is an equivalent rollback.
    """
    from moto.dynamodb import models as ddb_models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    backend_cls = ddb_models.DynamoDBBackend
    original_call = DynamoHandler.call_action
    original_transact = backend_cls.transact_write_items
    original_copy = ddb_models.copy

    class _TablesAsIs:
        """moto's ``copy`` module, except that a Table is not copied (we roll back per item)."""

        copy = staticmethod(copy.copy)

        @staticmethod
        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def call_action(self: Any) -> Any:
        with lock:
            return original_call(self)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = self.tables.get(op.get("TableName"))
            key = op.get("Item") or op.get("Key") or {}
            if table is None or table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr in key else None
            saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            original_transact(self, transact_items)
        except Exception:
            for table, hash_key, range_key, old in reversed(saved):
                if old is None:
                    table.delete_item(hash_key, range_key)
                elif range_key is not None:
                    table.items[hash_key][range_key] = old
                else:
                    table.items[hash_key] = old
            raise

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    backend_cls.transact_write_items = transact_write_items  # type: ignore[method-assign]
    ddb_models.copy = _TablesAsIs  # type: ignore[assignment]
    try:
        yield
    finally:
        DynamoHandler.call_action = original_call  # type: ignore[method-assign]
        backend_cls.transact_write_items = original_transact  # type: ignore[method-assign]
        ddb_models.copy = original_copy


@contextmanager
def moto_dynamodb_endpoint() -> Iterator[str]:
    """The URL of a fresh moto server (real HTTP, on a free loopback port) whose DynamoDB behaves
    as :func:`moto_dynamodb_like_aws` makes it; stopped on exit. moto's backends outlive the
    server, so callers that need an empty table use a table name of their own."""
    import logging
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with moto_dynamodb_like_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            host, bound = server.get_host_and_port()
            yield f"http://{host}:{bound}"
        finally:
            server.stop()
