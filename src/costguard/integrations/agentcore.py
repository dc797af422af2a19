"""Amazon Bedrock AgentCore Runtime: costguard inside the hosted container.

``InvokeAgentRuntime`` returns no usage: the model calls happen inside the container, under the
runtime's role, so the meter runs there, on the shared DynamoDB ledger
(``COSTGUARD_LEDGER=dynamodb://TABLE``), and every container of the runtime sees the same session
caps, budgets and kill switch.

Who is calling comes from what the runtime hands the ``bedrock-agentcore`` SDK's entry point
(``@app.entrypoint def invoke(payload, context)``):

- session: ``context.session_id``, which the SDK reads from the
  ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id`` header (InvokeAgentRuntime's
  ``runtimeSessionId``);
- user: the ``X-Amzn-Bedrock-AgentCore-Runtime-User-Id`` header (InvokeAgentRuntime's
  ``runtimeUserId``) when the request carries it, else the allow-listed custom header
  ``X-Amzn-Bedrock-AgentCore-Runtime-Custom-User-Id``;
- workflow: ``$COSTGUARD_WORKFLOW`` when set, else the runtime's name, read from the runtime ARN
  the runtime puts in ``OTEL_RESOURCE_ATTRIBUTES`` (``cloud.resource_id``), whose runtime id is
  ``<name>-<10 characters>``.

Header names from botocore's bedrock-agentcore service model (2024-02-28, InvokeAgentRuntime
``locationName``s) and the bedrock-agentcore SDK (``runtime/models.py``, ``runtime/app.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costguard.integrations._common import require

if TYPE_CHECKING:
    from costguard.meter.guard import Guard
    from costguard.meter.session import GuardedSession

SESSION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
USER_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-User-Id"
CUSTOM_USER_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-User-Id"
#: ``arn:aws:bedrock-agentcore:REGION:ACCOUNT:runtime/NAME-XXXXXXXXXX`` (optionally followed by
#: ``/runtime-endpoint/...``); the name pattern is CreateAgentRuntime's ``agentRuntimeName``.
_RUNTIME_ARN = re.compile(r"arn:[^:]+:bedrock-agentcore:[^:]*:[^:]*:runtime/([a-zA-Z][a-zA-Z0-9_]{0,47})-[a-zA-Z0-9]{10}(?:/|$)")


@dataclass(frozen=True, slots=True)
class RuntimeCaller:
    """What one AgentCore Runtime invocation is attributed to."""

    workflow: str
    session_id: str | None
    user_id: str | None


def runtime_name(environ: Mapping[str, str] | None = None) -> str | None:
    """This runtime's name, from the runtime ARN in ``OTEL_RESOURCE_ATTRIBUTES`` (None outside
    AgentCore Runtime)."""
    environ = os.environ if environ is None else environ
    for attribute in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = attribute.strip().partition("=")
        if key == "cloud.resource_id":
            match = _RUNTIME_ARN.match(value)
            return match.group(1) if match else None
    return None


def runtime_caller(context: Any, *, default_workflow: str, environ: Mapping[str, str] | None = None) -> RuntimeCaller:
    """Workflow, session and user of the invocation the SDK's ``context`` describes."""
    environ = os.environ if environ is None else environ
    workflow = environ.get("COSTGUARD_WORKFLOW") or runtime_name(environ) or default_workflow
    session_id = getattr(context, "session_id", None) or _header(context, SESSION_HEADER)
    user_id = _header(context, USER_HEADER) or _header(context, CUSTOM_USER_HEADER)
    return RuntimeCaller(workflow, session_id, user_id)


def guarded_session(guard: Guard, context: Any, *, default_workflow: str, boto_session: Any = None) -> GuardedSession:
    """A boto3 session whose Bedrock clients are metered for this invocation's caller."""
    caller = runtime_caller(context, default_workflow=default_workflow)
    if boto_session is None:
        import boto3

        boto_session = boto3.Session()
    return guard.wrap_session(boto_session, workflow=caller.workflow, session_id=caller.session_id, user_id=caller.user_id)


def agentcore_app(**kwargs: Any) -> Any:
    """A ``bedrock_agentcore.runtime.BedrockAgentCoreApp`` (the SDK is imported only here)."""
    return require("bedrock_agentcore.runtime", "agentcore").BedrockAgentCoreApp(**kwargs)


def _header(context: Any, name: str) -> str | None:
    """A request header, from the forwarded headers or the raw request (case-insensitive)."""
    wanted = name.lower()
    forwarded = getattr(context, "request_headers", None)
    candidates: list[Any] = [forwarded] if isinstance(forwarded, Mapping) else []
    request = getattr(context, "request", None)
    if request is not None:
        candidates.append(getattr(request, "headers", None))
    for headers in candidates:
        items = getattr(headers, "items", None)
        if items is None:
            continue
        for key, value in items():
            if str(key).lower() == wanted and value:
                return str(value)
    return None
