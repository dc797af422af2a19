"""Billing names of models -> the catalog's model ids, so billed and metered spend meet per model.

Cost Explorer names a model two ways, neither of them a model id:

* first-party usage types carry a billing name (``NovaLite``, ``Claude3.5SonnetV2``,
  ``Llama4-Maverick-17B``) or, for the newer endpoint, a model id (``openai.gpt-oss-120b``),
  which is normalised like the meter's ids;
* Marketplace editions are billed under a service named ``<model> (Amazon Bedrock Edition)``
  (``Claude 3 Haiku (Amazon Bedrock Edition)``).

Both are matched against the price catalog's model *names* (``Nova Lite``, ``Claude 3 Haiku``,
the names the Price List API gives) by their words and numbers, order ignored: ``Claude4Sonnet``
and ``Claude Sonnet 4`` are the same set. Only an exact set matches; a name that matches no
catalog model, or more than one, is kept as ``billing:<name>`` so it is reported, never merged
into another model's figures.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from costguard.pricing.catalog import PriceCatalog

__all__ = ["MARKETPLACE_SUFFIX", "UNMATCHED_PREFIX", "ModelNames", "name_words"]

MARKETPLACE_SUFFIX: Final = " (Amazon Bedrock Edition)"
UNMATCHED_PREFIX: Final = "billing:"

_CAMEL_RE: Final = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[0-9])(?=[A-Za-z])|(?<=[A-Za-z])(?=[0-9])")
_WORD_RE: Final = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)?")
# vendor.model as Bedrock spells ids: lower case, no spaces (not "Claude 3.5 Haiku")
_MODEL_ID_RE: Final = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9][a-z0-9.:-]*$")


def name_words(name: str) -> tuple[str, ...]:
    """The sorted words and numbers of a model name: ``Nova2.0Lite`` -> ("2", "lite", "nova")."""
    spaced = _CAMEL_RE.sub(" ", name.removesuffix(MARKETPLACE_SUFFIX)).lower()
    words = []
    for word in _WORD_RE.findall(spaced):
        if word[0].isdigit() and "." in word:
            word = word.rstrip("0").rstrip(".")  # "2.0" is "2"; "3.5" stays
        words.append(word)
    return tuple(sorted(words))


class ModelNames:
    """Resolves billing names against one price catalog (built once per run)."""

    def __init__(self, catalog: PriceCatalog) -> None:
        self._catalog = catalog
        by_words: dict[tuple[str, ...], set[str]] = {}
        for model_id, price in catalog.models.items():
            if price.name:
                by_words.setdefault(name_words(price.name), set()).add(model_id)
        self._by_words = {words: ids.pop() for words, ids in by_words.items() if len(ids) == 1}
        self._cache: dict[str, str] = {}

    def resolve(self, billing_name: str) -> str:
        """The catalog model id a billing name stands for, else ``billing:<name>``."""
        found = self._cache.get(billing_name)
        if found is None:
            found = self._resolve(billing_name)
            self._cache[billing_name] = found
        return found

    def _resolve(self, billing_name: str) -> str:
        if _MODEL_ID_RE.match(billing_name):
            # a model id (openai.gpt-oss-120b): normalised exactly as the meter's ids are, so
            # billed and metered meet even for a model the catalog does not price
            return self._catalog.quote(billing_name).base_model_id
        model_id = self._by_words.get(name_words(billing_name))
        return model_id if model_id is not None else f"{UNMATCHED_PREFIX}{billing_name.removesuffix(MARKETPLACE_SUFFIX)}"
