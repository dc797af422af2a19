"""User ids as keyed hashes: what the ledger stores instead of the id a caller passes.

A stored user reference is ``"h:"`` + the first 32 hex digits (128 bits) of
HMAC-SHA256(key, user id as UTF-8): stable for one key, so reports still group by user, and not
reversible without the key (a plain hash of an e-mail address is, by guessing).

Which key (:meth:`UserIdHasher.configured`):

1. ``user_id_key=False``: raw ids are stored, by explicit opt-in only;
2. ``user_id_key`` given (str or bytes);
3. ``$COSTGUARD_USER_KEY`` when set;
4. otherwise the ledger's own key (:meth:`costguard.ledger.Ledger.user_id_key`), generated once
   and kept beside the ledger: a 0600 file next to a SQLite database, a config item in a DynamoDB
   table (shared by every host using the table).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from costguard.ledger.base import Ledger

__all__ = ["HASHED_PREFIX", "USER_KEY_ENV", "UserIdHasher"]

HASHED_PREFIX: Final[str] = "h:"
USER_KEY_ENV: Final[str] = "COSTGUARD_USER_KEY"
_HEX_DIGITS: Final[int] = 32


class UserIdHasher:
    """Maps a user id to what may be stored. ``key=None`` stores ids raw (the explicit opt-in)."""

    __slots__ = ("_key",)

    def __init__(self, key: str | bytes | None) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if key is not None and not key:
            raise ValueError("an empty user id key would hash every id with no secret at all")
        self._key: bytes | None = key

    @classmethod
    def configured(cls, user_id_key: str | bytes | Literal[False] | None, ledger: Ledger) -> UserIdHasher:
        """The hasher for a ``user_id_key`` setting (see the module docstring for the order).

        The ledger's key is read (or created) only when nothing else is configured; a failure
        to get it is the ledger's :class:`~costguard.errors.LedgerError`.
        """
        if user_id_key is False:
            return cls(None)
        if user_id_key is not None:
            return cls(user_id_key)
        from_env = os.environ.get(USER_KEY_ENV)
        if from_env:
            return cls(from_env)
        return cls(ledger.user_id_key())

    @property
    def hashes(self) -> bool:
        """False when ids are stored raw."""
        return self._key is not None

    def ref(self, user_id: str | None) -> str | None:
        """The stored form of ``user_id`` (None stays None)."""
        if user_id is None or self._key is None:
            return user_id
        digest = hmac.new(self._key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return HASHED_PREFIX + digest[:_HEX_DIGITS]
