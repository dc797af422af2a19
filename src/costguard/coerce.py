"""Coercion of the fields costguard reads from responses and traces it does not control.

A response, a trace or a recording can carry anything: a token count as a string, a float, a
negative number or 2**62; a model id as a number; text with lone surrogates. None of it may
break the caller (unwrapped boto3 would not have failed) and none of it may vanish: a value that
had to be coerced is kept, bounded, and flagged ``usage_suspect`` so reports can show it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

#: The largest token count one call is believed to report. Far above any context window Bedrock
#: offers; a larger count is a bug or an attack, and pricing it as reported would let one
#: malformed event exhaust a budget (or overflow the ledger's 64-bit integers).
MAX_TOKENS_PER_CALL = 10_000_000

#: Longest id (model, agent, tool name...) kept verbatim; longer ones are cut (ids are labels, the
#: ledger hashes what does not fit a key).
MAX_ID_CHARS = 512

#: Longest latency taken as reported (a day); anything else is not a latency.
MAX_LATENCY_MS = 86_400_000


def token_count(value: Any) -> tuple[int, bool]:
    """``(count, suspect)``: a well-formed count as it is, anything else coerced and flagged."""
    if type(value) is int:
        if 0 <= value <= MAX_TOKENS_PER_CALL:
            return value, False
        return (0 if value < 0 else MAX_TOKENS_PER_CALL), True
    if value is None:
        return 0, False
    if isinstance(value, bool):
        return 0, True
    if isinstance(value, float):
        if not math.isfinite(value):
            return (MAX_TOKENS_PER_CALL if value > 0 else 0), True
        return token_count(int(value))[0], True
    if isinstance(value, (str, bytes)):
        try:
            number = int(value.strip())
        except ValueError:
            return 0, True
        return token_count(number)[0], True
    return 0, True


def usage_counts(
    usage: Mapping[str, Any], names: tuple[str, str, str, str]
) -> tuple[int, int, int, int, bool]:
    """Four token counts read from ``usage`` by ``names``, and whether any was suspect.

    The usual report (input and output counts that are sane ints, no cache counts) is read
    without a call per count: this runs for every model call the meter sees.
    """
    i, o = usage.get(names[0]), usage.get(names[1])
    if (
        type(i) is int and type(o) is int and 0 <= i <= MAX_TOKENS_PER_CALL and 0 <= o <= MAX_TOKENS_PER_CALL
        and names[2] not in usage and names[3] not in usage
    ):
        return i, o, 0, 0, False
    i, s1 = token_count(usage.get(names[0]))
    o, s2 = token_count(usage.get(names[1]))
    cr, s3 = token_count(usage.get(names[2]))
    cw, s4 = token_count(usage.get(names[3]))
    return i, o, cr, cw, s1 or s2 or s3 or s4


def optional_ms(value: Any) -> int | None:
    """A latency in milliseconds, or None when it is not a sane non-negative integer."""
    if type(value) is int and 0 <= value <= MAX_LATENCY_MS:
        return value
    return None


def text_id(value: Any) -> str | None:
    """An id as a string that can be stored and encoded: None stays None, the rest is str-ified,
    lone surrogates replaced, and cut at :data:`MAX_ID_CHARS`."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_ID_CHARS:
        text = text[:MAX_ID_CHARS]
    if not text.isascii():
        text = without_lone_surrogates(text)
    return text


def without_lone_surrogates(text: str) -> str:
    """``text`` with every lone surrogate (which UTF-8 cannot encode) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def utf8_len(text: Any) -> int:
    """UTF-8 size of ``text`` as the agent re-reads it; lone surrogates count as replaced."""
    if isinstance(text, str):
        if text.isascii():
            return len(text)
        return len(without_lone_surrogates(text).encode("utf-8"))
    if isinstance(text, (bytes, bytearray)):
        return len(text)
    return 0


def canonical(value: Any) -> Any:
    """Order-independent form of tool parameters: mapping keys as strings, lists sorted.

    Bedrock hands the same call's parameters over in any order (``[{name, type, value}]`` lists),
    so two calls that differ only in order are the same call (idempotency keys, loop detection).
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False, default=str))
    return value


def canonical_hash(*parts: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``parts``: a key that never reveals the values."""
    text = json.dumps([canonical(p) for p in parts], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
