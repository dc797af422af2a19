"""Where costguard keeps per-user files (the default SQLite ledger, the refreshed price catalog)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_data_dir"]


def user_data_dir() -> Path:
    """``$COSTGUARD_HOME``, else ``$XDG_DATA_HOME/costguard``, else ``~/.local/share/costguard``.

    The directory is not created here: callers that write create it, so that merely asking for the
    path (for ``--help`` text, or a read that finds nothing) leaves no trace on disk.
    """
    home = os.environ.get("COSTGUARD_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    if xdg and Path(xdg).expanduser().is_absolute():
        return Path(xdg).expanduser() / "costguard"
    return Path.home() / ".local" / "share" / "costguard"
