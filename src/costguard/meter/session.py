"""A boto3 session whose Bedrock runtime clients come out wrapped: the one-line way to meter a
framework that builds its own clients from a session it is given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from costguard.meter.operations import METERED_SERVICES

if TYPE_CHECKING:
    from costguard.meter.guard import Guard


class GuardedSession:
    """A proxy of a ``boto3.Session``: ``client("bedrock-runtime" | "bedrock-agent-runtime", ...)``
    returns a metered client bound to this session's workflow, user and session id; every other
    client, resource and attribute is the session's own."""

    def __init__(
        self, guard: Guard, session: Any, *, workflow: str, user_id: str | None, session_id: str | None
    ) -> None:
        self.guard = guard
        self._session = session
        self._workflow = workflow
        self._user_id = user_id
        self._session_id = session_id

    @property
    def unwrapped(self) -> Any:
        return self._session

    def client(self, *args: Any, **kwargs: Any) -> Any:
        client = self._session.client(*args, **kwargs)
        service = args[0] if args else kwargs.get("service_name")
        if service not in METERED_SERVICES:
            return client
        return self.guard.wrap(
            client, workflow=self._workflow, user_id=self._user_id, session_id=self._session_id
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __repr__(self) -> str:
        return f"<costguard guarded boto3 session, workflow={self._workflow!r}>"
