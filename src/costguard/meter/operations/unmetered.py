"""Methods of the wrapped clients that cost money but that costguard cannot meter (yet).

Each call goes through the ``unmetered`` policy: ``allow`` (counted), ``warn`` (counted, a log
line and an ``Unmetered`` metric; the default) or ``block`` (refused before it is sent with
:class:`~costguard.errors.UnmeteredCallBlocked`). Operation names from botocore's service models
(bedrock-runtime 2023-09-30, bedrock-agent-runtime 2023-07-26); what they are charged for from the
Amazon Bedrock pricing page (https://aws.amazon.com/bedrock/pricing/, read 2026-12-01).
Operations that only read or manage state (sessions, memory, flow execution status, tags,
CountTokens, async-invoke status) cost nothing and pass through.
"""

from __future__ import annotations

COST_BEARING_UNMETERED: dict[str, dict[str, str]] = {
    "bedrock-runtime": {
        "invoke_model_with_bidirectional_stream": "speech-to-speech model tokens (e.g. Nova Sonic)",
        "start_async_invoke": "asynchronous generation (e.g. video) billed per output",
    },
    "bedrock-agent-runtime": {
        "retrieve": "knowledge-base retrieval (query embedding, reranking, structured-data queries)",
        "generate_query": "natural-language to SQL generation for structured knowledge bases",
        "rerank": "rerank model queries",
        "optimize_prompt": "prompt optimization model tokens",
        "start_flow_execution": "flow node transitions and the model calls of its nodes",
    },
}
