"""InvokeInlineAgent: the same events as InvokeAgent; the model is named in the request."""

from __future__ import annotations

from typing import Any

from costguard.coerce import text_id
from costguard.meter.operations import register
from costguard.meter.operations.invoke_agent import InvokeAgent


@register
class InvokeInlineAgent(InvokeAgent):
    method = "invoke_inline_agent"
    api_name = "InvokeInlineAgent"
    state_key = "inlineSessionState"

    def inline_model(self, kwargs: dict[str, Any]) -> str | None:
        return text_id(kwargs.get("foundationModel"))
