"""Every metered operation, driven by a stock boto3 client against the local endpoint.

Each test asserts what reached the endpoint (path, model id exactly as sent, body) and what the
ledger holds afterwards (tokens, price key, flags, cost to the nano-dollar from published prices).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import costguard
from costguard.errors import ModelNotAllowed, UnmeteredCallBlocked
from tests.support.converse_loop import guard_for, ledger_rows, nanos
from tests.support.traces import SONNET, part
from tests.support.wire import FakeBedrock

# Published on-demand prices, USD per 1M tokens (https://aws.amazon.com/bedrock/pricing/).
NOVA_MICRO = "amazon.nova-micro-v1:0"  # 0.035 in / 0.14 out
HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"  # 0.80 in / 4.00 out


def rows(guard: costguard.Guard) -> list[dict[str, Any]]:
    return ledger_rows(guard, "model_calls")


MESSAGES = [{"role": "user", "content": [{"text": "hello"}]}]


def test_converse_sends_the_model_id_untouched_and_records_its_price_key(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    fake.queue_converse(1200, 300)
    runtime.converse(modelId=f"us.{NOVA_MICRO}", messages=MESSAGES)
    assert fake.requests[0]["model"] == f"us.{NOVA_MICRO}"
    assert fake.requests[0]["path"] == "/model/us.amazon.nova-micro-v1%3A0/converse"  # as boto3 quotes it
    (row,) = rows(guard)
    assert (row["model_id"], row["input_tokens"], row["output_tokens"]) == (f"us.{NOVA_MICRO}", 1200, 300)
    assert row["price_key"].split("|")[1:] == ["us-east-1", "geo", "standard", "none", "standard", "-"]
    assert row["cost_nanos"] == nanos(1200, "0.035") + nanos(300, "0.14")


def test_converse_stream_metadata_usage_is_metered(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    fake.queue_converse_stream(500, 60)
    events = list(runtime.converse_stream(modelId=NOVA_MICRO, messages=MESSAGES)["stream"])
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
    assert fake.requests[0]["path"] == "/model/amazon.nova-micro-v1%3A0/converse-stream"
    (row,) = rows(guard)
    assert (row["input_tokens"], row["output_tokens"], row["flags"]) == (500, 60, "")
    assert row["cost_nanos"] == nanos(500, "0.035") + nanos(60, "0.14")


def test_invoke_model_tier_and_latency_headers_reach_the_price_key(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    fake.queue_invoke_model({"content": [{"text": "hi"}]}, 100, 20, headers={"x-amzn-bedrock-service-tier": "flex"})
    runtime.invoke_model(modelId=HAIKU_35, body=b'{"messages": []}', performanceConfigLatency="optimized", serviceTier="flex")
    assert fake.requests[0]["headers"]["x-amzn-bedrock-service-tier"] == "flex"
    assert fake.requests[0]["headers"]["x-amzn-bedrock-performanceconfig-latency"] == "optimized"
    (row,) = rows(guard)
    key = row["price_key"].split("|")
    assert (key[5], key[6]) == ("flex", "latency")
    assert (row["input_tokens"], row["output_tokens"]) == (100, 20)


def test_invoke_model_with_response_stream_reads_the_last_chunk_metrics(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    chunks = [{"type": "content_block_delta", "delta": {"text": "a"}}, {"type": "message_stop"}]
    metrics = {"inputTokenCount": 900, "outputTokenCount": 45, "invocationLatency": 321, "firstByteLatency": 100}
    fake.queue_invoke_model_stream(chunks, metrics)
    body = runtime.invoke_model_with_response_stream(modelId=HAIKU_35, body=b"{}")["body"]
    received = [e["chunk"]["bytes"] for e in body]
    assert len(received) == 2 and b"amazon-bedrock-invocationMetrics" in received[-1]
    assert fake.requests[0]["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
    (row,) = rows(guard)
    assert (row["input_tokens"], row["output_tokens"], row["latency_ms"], row["flags"]) == (900, 45, 321, "")
    assert row["cost_nanos"] == nanos(900, "0.80") + nanos(45, "4.00")


def test_a_response_stream_broken_off_before_its_metrics_is_priced_at_an_estimate(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    fake.queue_invoke_model_stream([{"delta": "x" * 100}] * 5, {"inputTokenCount": 1, "outputTokenCount": 1})
    with runtime.invoke_model_with_response_stream(modelId=HAIKU_35, body=b"q" * 4000)["body"] as body:
        for _ in zip(range(2), body, strict=False):
            pass
    (row,) = rows(guard)
    assert row["flags"] == "estimated,usage_unknown"
    assert row["input_tokens"] == 1000  # 4,000 request bytes at 4 characters a token
    assert row["output_tokens"] > 0 and row["cost_nanos"] > 0


def test_inline_agent_path_and_model_check(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path, 'models: {allow: ["amazon.nova-*"]}')
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    with pytest.raises(ModelNotAllowed):
        agents.invoke_inline_agent(sessionId="s-9", foundationModel=SONNET, instruction="x" * 40, inputText="hi")
    assert fake.requests == []  # refused before it was sent
    trace = {"orchestrationTrace": {"modelInvocationInput": {"traceId": "t", "foundationModel": NOVA_MICRO}}}
    out = {"orchestrationTrace": {"modelInvocationOutput": {"traceId": "t", "metadata": {"usage": {"inputTokens": 10, "outputTokens": 2}}}}}
    fake.queue_agent_response([part(trace), part(out), {"chunk": {"bytes": b"ok"}}], operation="InvokeInlineAgent")
    response = agents.invoke_inline_agent(sessionId="s-9", foundationModel=NOVA_MICRO, instruction="x" * 40, inputText="hi")
    assert [next(iter(e)) for e in response["completion"]] == ["chunk"]
    assert fake.requests[0]["path"] == "/agents/s-9" and fake.requests[0]["body"]["enableTrace"] is True
    assert guard.session_usage("s-9").model_calls == 1


def flow_events(usage: dict[str, int]) -> list[dict[str, Any]]:
    agent_traces = [
        part({"orchestrationTrace": {"modelInvocationInput": {"traceId": "f1", "foundationModel": NOVA_MICRO}}})["trace"],
        part({"orchestrationTrace": {"modelInvocationOutput": {"traceId": "f1", "metadata": {"usage": usage}}}})["trace"],
    ]
    return [
        {"flowTraceEvent": {"trace": {"nodeInputTrace": {"nodeName": "FlowInput", "timestamp": "2026-12-01T10:00:00Z", "fields": []}}}},
        {"flowTraceEvent": {"trace": {"nodeDependencyTrace": {"nodeName": "Agent", "timestamp": "2026-12-01T10:00:01Z",
                                                             "traceElements": {"agentTraces": agent_traces}}}}},
        {"flowTraceEvent": {"trace": {"nodeActionTrace": {"nodeName": "Prompt", "timestamp": "2026-12-01T10:00:02Z",
                                                         "requestId": "r", "serviceName": "bedrock-runtime", "operationName": "Converse",
                                                         "operationRequest": {"modelId": HAIKU_35},
                                                         "operationResponse": {"usage": {"inputTokens": 70, "outputTokens": 7}}}}}},
        {"flowOutputEvent": {"nodeName": "FlowOutput", "nodeType": "Output", "content": {"document": "answer"}}},
        {"flowCompletionEvent": {"completionReason": "SUCCESS"}},
    ]


def test_invoke_flow_meters_agent_and_prompt_nodes_and_hides_the_traces(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", session_id="flow-s")
    fake.queue_stream("InvokeFlow", flow_events({"inputTokens": 300, "outputTokens": 30}))
    response = agents.invoke_flow(flowIdentifier="FLOW1", flowAliasIdentifier="AL1",
                                  inputs=[{"nodeName": "FlowInput", "nodeOutputName": "document", "content": {"document": "q"}}])
    kinds = [next(iter(e)) for e in response["responseStream"]]
    assert kinds == ["flowOutputEvent", "flowCompletionEvent"]
    assert fake.requests[0]["path"] == "/flows/FLOW1/aliases/AL1" and fake.requests[0]["body"]["enableTrace"] is True
    nova, haiku = rows(guard)
    assert (nova["model_id"], nova["input_tokens"], nova["output_tokens"]) == (NOVA_MICRO, 300, 30)
    assert (haiku["model_id"], haiku["input_tokens"], haiku["output_tokens"]) == (HAIKU_35, 70, 7)
    assert nova["cost_nanos"] + haiku["cost_nanos"] == (
        nanos(300, "0.035") + nanos(30, "0.14") + nanos(70, "0.80") + nanos(7, "4.00")
    )


def test_invoke_flow_traces_stay_visible_when_the_caller_asked_for_them(fake: FakeBedrock, tmp_path: Path) -> None:
    agents = guard_for(tmp_path).wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    fake.queue_stream("InvokeFlow", flow_events({"inputTokens": 1, "outputTokens": 1}))
    response = agents.invoke_flow(flowIdentifier="F", flowAliasIdentifier="A", enableTrace=True,
                                  inputs=[{"nodeName": "FlowInput", "nodeOutputName": "document", "content": {"document": "q"}}])
    assert sum("flowTraceEvent" in e for e in response["responseStream"]) == 3


RAG_CONFIG = {
    "type": "KNOWLEDGE_BASE",
    "knowledgeBaseConfiguration": {"knowledgeBaseId": "KB12345678", "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU_35}"},
}


def test_retrieve_and_generate_is_priced_from_an_estimate_and_flagged(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", session_id="rag")
    refs = [{"content": {"text": "r" * 3000}, "location": {"type": "S3", "s3Location": {"uri": "s3://b/k"}}}]
    fake.queue_json("RetrieveAndGenerate", {"output": {"text": "a" * 400}, "sessionId": "kb-s",
                                            "citations": [{"generatedResponsePart": {"textResponsePart": {"text": "a"}}, "retrievedReferences": refs}]})
    agents.retrieve_and_generate(input={"text": "q" * 100}, retrieveAndGenerateConfiguration=RAG_CONFIG)
    assert fake.requests[0]["path"] == "/retrieveAndGenerate"
    (row,) = rows(guard)
    assert (row["input_tokens"], row["output_tokens"], row["flags"]) == (775, 100, "estimated")  # (100+3000)/4, 400/4
    assert row["cost_nanos"] == nanos(775, "0.80") + nanos(100, "4.00")


def test_retrieve_and_generate_stream_is_estimated_at_its_end(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf", session_id="rag")
    events = [
        {"output": {"text": "b" * 200}},
        {"citation": {"retrievedReferences": [{"content": {"text": "c" * 800}}]}},
        {"output": {"text": "b" * 200}},
    ]
    fake.queue_stream("RetrieveAndGenerateStream", events)
    stream = agents.retrieve_and_generate_stream(input={"text": "q" * 40}, retrieveAndGenerateConfiguration=RAG_CONFIG)["stream"]
    assert [next(iter(e)) for e in stream] == ["output", "citation", "output"]
    (row,) = rows(guard)
    assert (row["input_tokens"], row["output_tokens"], row["flags"]) == (210, 100, "estimated")  # (40+800)/4, 400/4


def test_unmetered_methods_warn_by_default_and_are_counted(fake: FakeBedrock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    guard = guard_for(tmp_path)
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    fake.queue_error(400, "ValidationException", "stop here", operation=None)
    with caplog.at_level(logging.WARNING, logger="costguard"), pytest.raises(Exception, match="stop here"):
        agents.retrieve(knowledgeBaseId="KB12345678", retrievalQuery={"text": "q"})
    assert guard.unmetered_calls == 1
    assert "unmetered cost-bearing call bedrock-agent-runtime.retrieve" in caplog.text


def test_unmetered_block_refuses_before_sending(fake: FakeBedrock, tmp_path: Path) -> None:
    guard = guard_for(tmp_path, "unmetered: block")
    agents = guard.wrap(fake.client("bedrock-agent-runtime"), workflow="wf")
    with pytest.raises(UnmeteredCallBlocked) as info:
        agents.rerank(queries=[{"type": "TEXT", "textQuery": {"text": "q"}}], sources=[],
                      rerankingConfiguration={"type": "BEDROCK_RERANKING_MODEL",
                                              "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": "m"}}})
    assert info.value.rule == "unmetered" and fake.requests == []
    # a free method is not governed at all
    assert agents.can_paginate("list_sessions") is True


def test_prompt_router_is_priced_as_the_routed_model_and_the_allow_list_applies(fake: FakeBedrock, tmp_path: Path) -> None:
    router = "arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/anthropic.claude:1"
    guard = guard_for(tmp_path, 'models: {allow: ["amazon.nova-*"]}')
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="r-1")
    fake.queue_converse(1000, 100, extra={"trace": {"promptRouter": {"invokedModelId": f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{HAIKU_35}"}}})
    with pytest.raises(ModelNotAllowed) as info:
        runtime.converse(modelId=router, messages=MESSAGES)
    assert info.value.rule == "models.allow"
    assert fake.requests[0]["model"] == router
    (row,) = rows(guard)
    assert row["model_id"].endswith(f"us.{HAIKU_35}") and row["flags"] == ""
    assert row["cost_nanos"] > nanos(1000, "0.80") - 1  # priced as Haiku, not at the fallback


def test_a_bug_inside_costguard_never_reaches_the_caller(fake: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guard = guard_for(tmp_path)
    runtime = guard.wrap(fake.client("bedrock-runtime"), workflow="wf", session_id="s-1")
    from costguard.meter.operations import converse as converse_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a costguard bug")

    monkeypatch.setattr(converse_module, "converse_steps", broken)
    fake.queue_converse(10, 1)
    response = runtime.converse(modelId=NOVA_MICRO, messages=MESSAGES)
    assert response["usage"]["inputTokens"] == 10
    assert guard.internal_errors == 1
