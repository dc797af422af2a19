"""Ledgers: where metered usage, budgets, violations and kill switches live.

``open_ledger(url)`` turns a ledger URL into a backend:
``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (embedded, the default) and, once the
DynamoDB backend lands, ``dynamodb://TABLE``. With no URL: ``$COSTGUARD_LEDGER``, else a SQLite
file under the user's data directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from costguard.errors import LedgerError
from costguard.ledger.base import Ledger
from costguard.ledger.sqlite import SQLiteLedger
from costguard.paths import user_data_dir

__all__ = ["Ledger", "SQLiteLedger", "default_ledger_url", "open_ledger"]


def default_ledger_url() -> str:
    """``$COSTGUARD_LEDGER`` if set, else ``sqlite:///`` + the user data directory's ledger.db."""
    configured = os.environ.get("COSTGUARD_LEDGER", "").strip()
    if configured:
        return configured
    return f"sqlite:///{user_data_dir() / 'ledger.db'}"


def sqlite_path_from_url(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db`` (SQLAlchemy's rule)."""
    if not url.startswith("sqlite:///"):
        raise LedgerError(f"not a sqlite ledger URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs/path.db)")
    path = url[len("sqlite:///") :]
    if not path:
        raise LedgerError(f"ledger URL {url!r} names no file")
    return Path(path)


def open_ledger(url: str | Ledger | None = None) -> Ledger:
    """A ledger from a URL (or the default); a Ledger instance is returned as it is."""
    if isinstance(url, Ledger):
        return url
    if url is None:
        url = default_ledger_url()
    if not isinstance(url, str):
        raise LedgerError(f"a ledger is a URL string or a Ledger instance, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteLedger(sqlite_path_from_url(url))
    if scheme == "dynamodb":
        raise LedgerError(
            f"{url!r}: the DynamoDB ledger is not available in this version of costguard; "
            "use a sqlite:/// ledger"
        )
    if not scheme:
        # A bare path is what people type most: treat it as a SQLite file.
        return SQLiteLedger(Path(url))
    raise LedgerError(f"unknown ledger URL scheme {scheme!r} in {url!r}: use sqlite:///PATH or dynamodb://TABLE")
