"""RetrieveAndGenerate: no usage in the response, so the model call is priced from an estimate.

The generating model is the request's ``retrieveAndGenerateConfiguration``
``knowledgeBaseConfiguration.modelArn`` or ``externalSourcesConfiguration.modelArn`` (botocore
bedrock-agent-runtime 2023-07-26). Input is estimated from the query and every retrieved
reference's text (what the model is prompted with), output from the generated text, at
:data:`~costguard.meter.operations.base.CHARS_PER_TOKEN`; the row is flagged ``estimated``.
The retrieval itself (query embedding, vector store) is billed by other services and not priced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costguard.coerce import text_id, utf8_len
from costguard.meter.operations import register
from costguard.meter.operations.base import CHARS_PER_TOKEN, Operation
from costguard.meter.request import RequestMeter
from costguard.trace import ModelCall

if TYPE_CHECKING:
    from costguard.meter.client import GuardedClient

ESTIMATED = frozenset({"estimated"})


def generating_model(kwargs: Mapping[str, Any]) -> str:
    config = kwargs.get("retrieveAndGenerateConfiguration")
    if isinstance(config, Mapping):
        for key in ("knowledgeBaseConfiguration", "externalSourcesConfiguration"):
            section = config.get(key)
            if isinstance(section, Mapping) and section.get("modelArn"):
                return text_id(section.get("modelArn")) or ""
    return ""


def query_bytes(kwargs: Mapping[str, Any]) -> int:
    query = kwargs.get("input")
    return utf8_len(query.get("text")) if isinstance(query, Mapping) else 0


def references_bytes(citations: Any) -> int:
    total = 0
    for citation in citations if isinstance(citations, list) else ():
        refs = citation.get("retrievedReferences") if isinstance(citation, Mapping) else None
        for ref in refs if isinstance(refs, list) else ():
            content = ref.get("content") if isinstance(ref, Mapping) else None
            if isinstance(content, Mapping):
                total += utf8_len(content.get("text"))
    return total


def estimated_call(model_id: str, input_bytes: int, output_bytes: int) -> ModelCall:
    return ModelCall(
        model_id,
        "RETRIEVE_AND_GENERATE",
        -(-input_bytes // CHARS_PER_TOKEN),
        -(-output_bytes // CHARS_PER_TOKEN),
        flags=ESTIMATED,
    )


class RetrieveAndGenerateBase(Operation):
    service = "bedrock-agent-runtime"

    def prepare(self, proxy: GuardedClient, kwargs: dict[str, Any]) -> tuple[RequestMeter, dict[str, Any], Any]:
        model_id = generating_model(kwargs)
        meter = proxy.start_request(
            self.api_name,
            session_id=text_id(kwargs.get("sessionId")) or proxy.binding.session_id or "",
            model_id=model_id or None,
        )
        return meter, kwargs, model_id


@register
class RetrieveAndGenerate(RetrieveAndGenerateBase):
    method = "retrieve_and_generate"
    api_name = "RetrieveAndGenerate"

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        output = response.get("output")
        output_bytes = utf8_len(output.get("text")) if isinstance(output, Mapping) else 0
        input_bytes = query_bytes(kwargs) + references_bytes(response.get("citations"))
        meter.run_steps([estimated_call(state or None, input_bytes, output_bytes)])
        return response
