"""What each operation adapter reads from a response: usage, TTLs, tiers, router choice, guardrail units."""

from __future__ import annotations

from costguard.meter.operations.converse import converse_steps
from costguard.meter.operations.invoke_model import invoke_model_call
from costguard.meter.request import GuardrailUsage
from costguard.trace import ModelCall

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def test_converse_usage_with_cache_tokens() -> None:
    response = {
        "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 120, "cacheReadInputTokens": 900, "cacheWriteInputTokens": 50},
        "metrics": {"latencyMs": 321},
    }
    assert list(converse_steps(SONNET, {}, response)) == [ModelCall(SONNET, "CONVERSE", 100, 20, 900, 50, 321)]


def test_converse_without_usage_is_priced_at_an_estimate_of_the_request() -> None:
    request = {"messages": [{"role": "user", "content": [{"text": "x" * 400}]}]}
    (missing,) = converse_steps(SONNET, request, {})
    assert missing.usage_missing
    assert missing.flags == {"usage_unknown", "estimated"}
    # 400 characters of text plus the JSON around them, at 4 characters a token.
    assert missing.input_tokens == -(-len('[{"role": "user", "content": [{"text": "' + "x" * 400 + '"}]}]') // 4)


def test_converse_one_hour_cache_writes_tier_latency_and_router() -> None:
    response = {
        "usage": {
            "inputTokens": 10,
            "outputTokens": 5,
            "cacheWriteInputTokens": 3000,
            "cacheDetails": [{"ttl": "1h", "inputTokens": 2000}, {"ttl": "5m", "inputTokens": 1000}],
        },
        "serviceTier": {"type": "priority"},
        "performanceConfig": {"latency": "optimized"},
        "trace": {"promptRouter": {"invokedModelId": "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"}},
    }
    (call,) = converse_steps("arn:aws:bedrock:us-east-1:1:default-prompt-router/anthropic.claude:1", {}, response)
    assert call.model_id == "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert call.routed
    assert (call.cache_write_tokens, call.cache_write_1h_tokens) == (3000, 2000)
    assert (call.tier, call.latency_optimized) == ("priority", True)


def test_converse_tier_from_the_request_when_the_response_is_silent_and_reserved_is_flagged() -> None:
    (call,) = converse_steps(SONNET, {"serviceTier": {"type": "flex"}}, {"usage": {"inputTokens": 1}})
    assert call.tier == "flex"
    (call,) = converse_steps(SONNET, {}, {"usage": {"inputTokens": 1}, "serviceTier": {"type": "reserved"}})
    assert (call.tier, call.flags) == ("standard", {"tier_assumed"})


def test_converse_guardrail_units_from_input_and_output_assessments() -> None:
    usage_in = {"contentPolicyUnits": 2, "topicPolicyUnits": 2, "wordPolicyUnits": 0}
    usage_out = {"sensitiveInformationPolicyUnits": 1}
    response = {
        "usage": {"inputTokens": 1, "outputTokens": 1},
        "trace": {
            "guardrail": {
                "inputAssessment": {"gr-1": {"invocationMetrics": {"usage": usage_in}}},
                "outputAssessments": {"gr-1": [{"invocationMetrics": {"usage": usage_out}}]},
            }
        },
    }
    steps = list(converse_steps(SONNET, {}, response))
    assert steps[1:] == [
        GuardrailUsage({"contentPolicyUnits": 2, "topicPolicyUnits": 2}),
        GuardrailUsage({"sensitiveInformationPolicyUnits": 1}),
    ]


def test_malformed_converse_counts_are_coerced_and_flagged() -> None:
    response = {"usage": {"inputTokens": "12", "outputTokens": -4, "cacheReadInputTokens": 2**62, "cacheWriteInputTokens": 1.5}}
    (call,) = converse_steps(SONNET, {}, response)
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens, call.cache_write_tokens) == (12, 0, 10_000_000, 1)
    assert call.flags == {"usage_suspect"}


def test_invoke_model_token_headers() -> None:
    response = {
        "ResponseMetadata": {
            "HTTPHeaders": {
                "x-amzn-bedrock-input-token-count": "12",
                "x-amzn-bedrock-output-token-count": "7",
                "x-amzn-bedrock-cache-read-input-token-count": "3",
                "x-amzn-bedrock-invocation-latency": "55",
            }
        }
    }
    assert invoke_model_call(SONNET, {}, response) == ModelCall(SONNET, "INVOKE_MODEL", 12, 7, 3, 0, 55)
    bogus = invoke_model_call(SONNET, {}, {"ResponseMetadata": {"HTTPHeaders": {"x-amzn-bedrock-input-token-count": "x"}}})
    assert (bogus.input_tokens, bogus.flags) == (0, {"usage_suspect"})
    missing = invoke_model_call(SONNET, {"body": b"a" * 41}, {})
    assert missing.usage_missing and missing.input_tokens == 11 and "usage_unknown" in missing.flags
