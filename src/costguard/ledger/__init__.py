"""Ledgers: where metered usage, budgets, violations and kill switches live.

``open_ledger(url)`` turns a ledger URL into a backend:
``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (embedded, the default) and
``dynamodb://TABLE?region=us-east-1&endpoint_url=http://...`` (shared; region and endpoint
default to the boto3 session's). With no URL: ``$COSTGUARD_LEDGER``, else a SQLite file under the
user's data directory.

``open_ledger(url, read_only=True)`` is for commands that only read (reports, status): it
never creates a file, folder or table, and raises :class:`~costguard.errors.LedgerNotFound`
("no ledger at URL") when there is none. A malformed URL raises
:class:`~costguard.errors.LedgerUrlError` either way.

``DynamoDBLedger`` is imported lazily: SQLite users never pay for importing boto3's DynamoDB
support, and importing it never builds a client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from costguard.errors import LedgerUrlError
from costguard.ledger.base import Ledger
from costguard.ledger.sqlite import SQLiteLedger
from costguard.ledger.sqlite_rollups import Progress
from costguard.paths import user_data_dir

if TYPE_CHECKING:
    from costguard.ledger.dynamodb import DynamoDBLedger

__all__ = ["DynamoDBLedger", "Ledger", "SQLiteLedger", "default_ledger_url", "open_ledger"]

_DYNAMODB_PARAMS = {"region": "region_name", "endpoint_url": "endpoint_url"}


def __getattr__(name: str) -> Any:
    if name == "DynamoDBLedger":
        from costguard.ledger.dynamodb import DynamoDBLedger

        return DynamoDBLedger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_ledger_url() -> str:
    """``$COSTGUARD_LEDGER`` if set, else ``sqlite:///`` + the user data directory's ledger.db."""
    configured = os.environ.get("COSTGUARD_LEDGER", "").strip()
    if configured:
        return configured
    return f"sqlite:///{user_data_dir() / 'ledger.db'}"


def sqlite_path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db`` (SQLAlchemy's rule)."""
    if not url.startswith("sqlite:///"):
        raise LedgerUrlError(f"not a sqlite ledger URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs/path.db)")
    path = url[len("sqlite:///") :]
    if not path:
        raise LedgerUrlError(f"ledger URL {url!r} names no file")
    return Path(path)


def open_ledger(
    url: str | Ledger | None = None, *, read_only: bool = False, rollup_progress: Progress | None = None
) -> Ledger:
    """A ledger from a URL (or the default); a Ledger instance is returned as it is.

    ``read_only``: open an existing ledger for reading only, creating nothing; a missing one
    raises ``LedgerNotFound``. ``rollup_progress(step, done, steps)``: told about the one-time
    build of an older SQLite ledger's report rollups, if this open triggers it.
    """
    if isinstance(url, Ledger):
        return url
    if url is None:
        url = default_ledger_url()
    if not isinstance(url, str):
        raise LedgerUrlError(f"a ledger is a URL string or a Ledger instance, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteLedger(sqlite_path_from_url(url), read_only=read_only, rollup_progress=rollup_progress)
    if scheme == "dynamodb":
        return _open_dynamodb(url, read_only)
    if not scheme and url.strip():
        # A bare path is what people type most: treat it as a SQLite file.
        return SQLiteLedger(Path(url), read_only=read_only, rollup_progress=rollup_progress)
    raise LedgerUrlError(f"unknown ledger URL scheme {scheme!r} in {url!r}: use sqlite:///PATH or dynamodb://TABLE")


def _open_dynamodb(url: str, read_only: bool) -> Ledger:
    """``dynamodb://TABLE?region=..&endpoint_url=..`` -> a DynamoDBLedger (no request is sent)."""
    parts = urlsplit(url)
    table = parts.netloc
    if not table or parts.path not in ("", "/"):
        raise LedgerUrlError(f"ledger URL {url!r} names no table: use dynamodb://TABLE")
    kwargs: dict[str, str] = {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise LedgerUrlError(f"ledger URL {url!r}: malformed query string") from exc
    for key, value in pairs:
        if key not in _DYNAMODB_PARAMS:
            raise LedgerUrlError(
                f"ledger URL {url!r}: unknown parameter {key!r} (known: {', '.join(sorted(_DYNAMODB_PARAMS))})"
            )
        if not value:
            raise LedgerUrlError(f"ledger URL {url!r}: parameter {key!r} is empty")
        kwargs[_DYNAMODB_PARAMS[key]] = value
    from costguard.ledger.dynamodb import DynamoDBLedger

    return DynamoDBLedger(
        table, region_name=kwargs.get("region_name"), endpoint_url=kwargs.get("endpoint_url"), read_only=read_only
    )
