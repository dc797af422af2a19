"""The wrapped client: metered methods go through their operation adapter, the rest pass through."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from costguard.errors import UnmeteredCallBlocked
from costguard.meter import attempts
from costguard.meter.operations import operations_for, unmetered_for
from costguard.meter.request import Binding, RequestMeter
from costguard.metrics import record_unmetered
from costguard.usage import Totals

if TYPE_CHECKING:
    from costguard.meter.guard import Guard

logger = logging.getLogger("costguard")


class GuardedClient:
    """A boto3 client proxy: metered Bedrock methods, everything else passed through."""

    def __init__(self, guard: Guard, client: Any, service: str, binding: Binding) -> None:
        self.guard = guard
        self._client = client
        self._service = service
        self._binding = binding
        self._operations = operations_for(service)
        self._unmetered = unmetered_for(service)
        self._bound: dict[str, Callable[..., Any]] = {}
        attempts.install(client)

    @property
    def unwrapped(self) -> Any:
        return self._client

    @property
    def workflow(self) -> str:
        return self._binding.workflow

    @property
    def binding(self) -> Binding:
        return self._binding

    def __getattr__(self, name: str) -> Any:
        bound = self._bound.get(name)
        if bound is not None:
            return bound
        operation = self._operations.get(name)
        if operation is not None:
            bound = functools.partial(_call_operation, operation, self)
        elif name in self._unmetered:
            bound = functools.partial(self._unmetered_call, name)
        else:
            return getattr(self._client, name)
        self._bound[name] = bound
        return bound

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._client)) | set(super().__dir__()))

    def __repr__(self) -> str:
        return f"<costguard guarded {self._service} client, workflow={self._binding.workflow!r}>"

    # -- used by the operation adapters ---------------------------------------------------------

    def start_request(
        self,
        operation: str,
        *,
        session_id: str | None = None,
        model_id: str | None = None,
        agent_id: str | None = None,
        agent_alias_id: str | None = None,
        continuation_of: str | None = None,
        previous: Totals | None = None,
    ) -> RequestMeter:
        return self.guard.start_request(
            self._binding,
            operation,
            session_id if session_id is not None else (self._binding.session_id or ""),
            agent_id=agent_id,
            agent_alias_id=agent_alias_id,
            model_id=model_id,
            continuation_of=continuation_of,
            previous=previous,
        )

    def _unmetered_call(self, name: str, **kwargs: Any) -> Any:
        guard, binding = self.guard, self._binding
        policy = guard.policy_for(binding.workflow)
        setting = policy.unmetered
        guard.unmetered_calls += 1
        if setting == "block" and policy.mode != "shadow":
            raise UnmeteredCallBlocked(
                rule="unmetered",
                limit="metered operations",
                observed=name,
                workflow=binding.workflow,
                session_id=binding.session_id,
                request_id=None,
                enforced=True,
                detail={"operation": name, "why": self._unmetered[name]},
            )
        if setting != "allow":
            logger.warning(
                "unmetered cost-bearing call %s.%s for workflow %s (%s): costguard cannot see what it costs",
                self._service,
                name,
                binding.workflow,
                self._unmetered[name],
            )
            guard.publish_metrics(lambda sink: record_unmetered(sink, binding.workflow, name))
        return getattr(self._client, name)(**kwargs)


def _call_operation(operation: Any, proxy: GuardedClient, *args: Any, **kwargs: Any) -> Any:
    if args:
        # boto3 methods take keyword arguments only; let the client say so in its own words.
        return getattr(proxy.unwrapped, operation.method)(*args, **kwargs)
    return operation(proxy, kwargs)
