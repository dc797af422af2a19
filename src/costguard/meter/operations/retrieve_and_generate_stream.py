"""RetrieveAndGenerateStream: ``output{text}`` and ``citation`` events; priced from an estimate
at the end of the stream, as RetrieveAndGenerate is (see that module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costguard.coerce import utf8_len
from costguard.meter.operations import register
from costguard.meter.operations.retrieve_and_generate import (
    RetrieveAndGenerateBase,
    estimated_call,
    query_bytes,
    references_bytes,
)
from costguard.meter.request import RequestMeter
from costguard.meter.streams import MeteredStream


class _EstimateConsumer:
    __slots__ = ("meter", "model_id", "input_bytes", "output_bytes")

    def __init__(self, meter: RequestMeter, model_id: str, query: int) -> None:
        self.meter = meter
        self.model_id = model_id
        self.input_bytes = query
        self.output_bytes = 0

    def feed(self, event: dict[str, Any]) -> bool:
        output = event.get("output")
        if isinstance(output, Mapping):
            self.output_bytes += utf8_len(output.get("text"))
        else:
            citation = event.get("citation")
            if isinstance(citation, Mapping):
                refs = citation.get("retrievedReferences")
                if refs is None and isinstance(citation.get("citation"), Mapping):
                    refs = citation["citation"].get("retrievedReferences")
                self.input_bytes += references_bytes([{"retrievedReferences": refs}])
        return True

    def end(self, completed: bool) -> None:
        self.meter.on_step(estimated_call(self.model_id or None, self.input_bytes, self.output_bytes))  # type: ignore[arg-type]


@register
class RetrieveAndGenerateStream(RetrieveAndGenerateBase):
    method = "retrieve_and_generate_stream"
    api_name = "RetrieveAndGenerateStream"

    def meter_response(self, meter: RequestMeter, kwargs: dict[str, Any], state: Any, response: Any) -> Any:
        response["stream"] = MeteredStream(response["stream"], meter, _EstimateConsumer(meter, state, query_bytes(kwargs)))
        return response
