"""LangChain: ``ChatBedrockConverse`` and ``ChatBedrock`` (langchain-aws) on a metered client.

Both accept a boto3 ``client=``; ``ChatBedrockConverse`` calls Converse / ConverseStream,
``ChatBedrock`` calls InvokeModel / InvokeModelWithResponseStream, and costguard meters all four.
A client bound to one session is simply ``guard.wrap(client, workflow=..., session_id=...)``.

For one model object serving many sessions, :func:`govern` binds each call to the run that made
it: workflow, session and user come from the run's config metadata (``costguard_workflow``;
``costguard_session_id``, ``session_id`` or LangGraph's ``thread_id``; ``costguard_user_id`` or
``user_id``), falling back to the values given to :func:`govern`::

    llm = govern(ChatBedrockConverse(model=..., client=boto3.client("bedrock-runtime")),
                 guard, workflow="support")
    llm.invoke(messages, config={"metadata": {"session_id": "s-42", "user_id": "u-7"}})

A cap that trips raises its :class:`~costguard.errors.PolicyViolation` out of ``invoke`` /
``stream``, as any model error would.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costguard.errors import IntegrationError
from costguard.integrations._common import require
from costguard.meter.client import GuardedClient

if TYPE_CHECKING:
    from costguard.meter.guard import Guard

#: (workflow, session_id, user_id) of the LangChain run in progress in this context, as its
#: config metadata named them (None for a value it did not name).
_RUN_BINDING: contextvars.ContextVar[tuple[str | None, str | None, str | None] | None] = contextvars.ContextVar(
    "costguard_langchain_run", default=None
)
_SESSION_KEYS = ("costguard_session_id", "session_id", "thread_id")
_USER_KEYS = ("costguard_user_id", "user_id")


class RunBoundClient:
    """A boto3 Bedrock runtime client proxy that meters each call under the current run's
    workflow, session and user (see the module docstring); every other attribute is the client's."""

    def __init__(
        self,
        guard: Guard,
        client: Any,
        *,
        workflow: str,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        self.guard = guard
        self.unwrapped = client.unwrapped if isinstance(client, (GuardedClient, RunBoundClient)) else client
        self.defaults = (workflow, session_id, user_id)
        # Fails here, not on the first call, for a client costguard cannot meter.
        self._default_client = guard.wrap(self.unwrapped, workflow=workflow, session_id=session_id, user_id=user_id)

    def current(self) -> GuardedClient:
        """The metered client for the run in progress."""
        run = _RUN_BINDING.get()
        if run is None:
            return self._default_client
        workflow, session_id, user_id = (given or default for given, default in zip(run, self.defaults, strict=True))
        if (workflow, session_id, user_id) == self.defaults:
            return self._default_client
        return self.guard.wrap(self.unwrapped, workflow=str(workflow), session_id=session_id, user_id=user_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current(), name)

    def __repr__(self) -> str:
        return f"<costguard run-bound bedrock-runtime client, workflow={self.defaults[0]!r}>"


def run_binding(metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """(workflow, session_id, user_id) named by a run's config metadata."""
    metadata = metadata or {}

    def first(keys: tuple[str, ...]) -> str | None:
        for key in keys:
            value = metadata.get(key)
            if value is not None and value != "":
                return str(value)
        return None

    return first(("costguard_workflow",)), first(_SESSION_KEYS), first(_USER_KEYS)


@functools.cache
def _handler_class() -> type:
    base = require("langchain_core.callbacks", "langchain").BaseCallbackHandler

    class RunBindingHandler(base):  # type: ignore[misc, valid-type]
        """Publishes each model run's config metadata to :class:`RunBoundClient` before the model
        is called. Inline: it must run in the caller's context, not in an executor's copy."""

        run_inline = True

        def on_chat_model_start(self, serialized: Any, messages: Any, *, metadata: Any = None, **kwargs: Any) -> None:
            _RUN_BINDING.set(run_binding(metadata))

        def on_llm_start(self, serialized: Any, prompts: Any, *, metadata: Any = None, **kwargs: Any) -> None:
            _RUN_BINDING.set(run_binding(metadata))

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            _RUN_BINDING.set(None)

        def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
            _RUN_BINDING.set(None)

    return RunBindingHandler


def run_binding_handler() -> Any:
    """The callback handler that binds each run of a model to its config's session."""
    return _handler_class()()


def govern(
    llm: Any,
    guard: Guard,
    *,
    workflow: str,
    session_id: str | None = None,
    user_id: str | None = None,
) -> Any:
    """Meter ``llm`` (``ChatBedrockConverse``, ``ChatBedrock`` or ``BedrockLLM``) in place; returns it."""
    require("langchain_aws", "langchain")
    client = getattr(llm, "client", None)
    if client is None:
        raise IntegrationError(f"{type(llm).__name__} has no boto3 client to meter")
    llm.client = RunBoundClient(guard, client, workflow=workflow, session_id=session_id, user_id=user_id)
    handler_class = _handler_class()
    callbacks = llm.callbacks
    if callbacks is None:
        llm.callbacks = [run_binding_handler()]
    elif isinstance(callbacks, list):
        if not any(isinstance(h, handler_class) for h in callbacks):
            llm.callbacks = [*callbacks, run_binding_handler()]
    elif not any(isinstance(h, handler_class) for h in callbacks.handlers):
        callbacks.add_handler(run_binding_handler(), inherit=False)
    return llm
