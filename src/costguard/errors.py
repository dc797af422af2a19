"""The one exception hierarchy of costguard.

Every error the library raises on purpose is a :class:`CostguardError`. Policy violations carry
what limit was crossed, what was observed and where (workflow, session, request), and render to a
plain dict (:meth:`PolicyViolation.to_dict`) that an agent or a caller can reason about.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class CostguardError(Exception):
    """Root of every error costguard raises on purpose."""


@dataclass(frozen=True, slots=True)
class PolicyErrorDetail:
    """One problem in a policy file: where it is and what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class PolicyError(CostguardError):
    """One or more policy files are invalid. ``errors`` lists every problem found, not just the first."""

    def __init__(self, errors: list[PolicyErrorDetail] | PolicyErrorDetail | str) -> None:
        if isinstance(errors, str):
            errors = [PolicyErrorDetail(file="<policy>", line=None, field="-", message=errors)]
        elif isinstance(errors, PolicyErrorDetail):
            errors = [errors]
        self.errors: list[PolicyErrorDetail] = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class MissingExtraError(CostguardError):
    """An optional dependency is not installed; ``extra`` names what to install (``costguard[extra]``)."""

    def __init__(self, message: str, *, extra: str) -> None:
        self.extra = extra
        super().__init__(message)


class LedgerError(CostguardError):
    """The ledger could not be read or written (corrupt file, unreachable table, bad URL)."""


class BatchPartlyWritten(LedgerError):
    """A batch of segments was written in several atomic units and a later one failed: the
    segments in ``written`` (their ``id()``) are in the ledger and must not be written again."""

    def __init__(self, message: str, written: set[int]) -> None:
        super().__init__(message)
        self.written = written


class InvalidIdError(CostguardError):
    """An id (session, request, workflow, user...) that no ledger can store: not a string, empty
    where one is required, not valid Unicode (a lone surrogate) or too long. Raised before
    anything is sent, so nothing is spent that cannot be recorded."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind} id {reason}")


class LedgerUrlError(LedgerError):
    """A ledger URL that names no usable ledger (unknown scheme, no path, unknown parameter): bad input."""


class LedgerNotFound(LedgerError):
    """A read-only open found no ledger at the URL (nothing was created)."""


class PricingError(CostguardError):
    """The price catalog is missing, malformed, or cannot price a model."""


class IntegrationError(CostguardError):
    """A framework integration cannot work: its framework is not installed, or it was handed an
    object it cannot meter."""


class PolicyViolation(CostguardError):
    """A policy limit was crossed (or, in shadow mode, would have been).

    ``rule`` names the limit (for example ``per_request.max_model_calls``), ``limit`` is the
    configured value and ``observed`` the value that crossed it.
    """

    default_rule = "policy"

    def __init__(
        self,
        message: str | None = None,
        *,
        rule: str | None = None,
        limit: Any = None,
        observed: Any = None,
        workflow: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
        enforced: bool = True,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.rule = rule or self.default_rule
        self.limit = limit
        self.observed = observed
        self.workflow = workflow
        self.session_id = session_id
        self.request_id = request_id
        self.enforced = enforced
        self.detail = dict(detail or {})
        if message is None:
            message = f"{self.rule}: observed {_plain(observed)} against limit {_plain(limit)}"
            if workflow:
                message += f" (workflow {workflow!r}"
                message += f", session {session_id!r})" if session_id else ")"
        self.message = message
        super().__init__(message)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the violation, stable for callers and agents."""
        return {
            "error": self.kind,
            "rule": self.rule,
            "limit": _plain(self.limit),
            "observed": _plain(self.observed),
            "workflow": self.workflow,
            "session_id": self.session_id,
            "request_id": self.request_id,
            "enforced": self.enforced,
            "message": self.message,
            "detail": {k: _plain(v) for k, v in self.detail.items()},
        }


class LoopCapExceeded(PolicyViolation):
    """Too many model calls in one request or session: the orchestration loop ran away."""

    default_rule = "max_model_calls"


class ToolCapExceeded(PolicyViolation):
    """Too many tool (action group, knowledge base, collaborator) calls."""

    default_rule = "max_tool_calls"


class ResponseTooLarge(PolicyViolation):
    """A tool response was larger than ``max_tool_response_bytes``."""

    default_rule = "max_tool_response_bytes"


class TokenCapExceeded(PolicyViolation):
    """Too many tokens in one request or session."""

    default_rule = "max_tokens"


class CostCapExceeded(PolicyViolation):
    """A request or session cost more than its cap."""

    default_rule = "max_cost_usd"


class BudgetExceeded(PolicyViolation):
    """The workflow's daily or monthly budget has no room for this call."""

    default_rule = "budget"


class ModelNotAllowed(PolicyViolation):
    """The model is not on the workflow's allow-list (or is unpriced under ``unpriced: block``)."""

    default_rule = "models.allow"


class WorkflowBlocked(PolicyViolation):
    """The workflow's kill switch is set."""

    default_rule = "kill_switch"


class UnmeteredCallBlocked(PolicyViolation):
    """A cost-bearing call costguard cannot meter, refused under ``unmetered: block``."""

    default_rule = "unmetered"


def _plain(value: Any) -> Any:
    """Decimal money renders as its exact string; everything else is left as it is."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


VIOLATION_TYPES: dict[str, type[PolicyViolation]] = {
    cls.__name__: cls
    for cls in (
        PolicyViolation,
        LoopCapExceeded,
        ToolCapExceeded,
        ResponseTooLarge,
        TokenCapExceeded,
        CostCapExceeded,
        BudgetExceeded,
        ModelNotAllowed,
        WorkflowBlocked,
    )
}
