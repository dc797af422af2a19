"""Writes the example recordings in examples/recordings/ (deterministic).

``claim-*.jsonl``: one InvokeAgent request's completion events each, as boto3 yields them, one
JSON object per line, chunk bytes base64-encoded. ``converse-session-log.jsonl``: Bedrock
model-invocation-log records (as delivered to CloudWatch Logs or S3) of one Converse session.
Prompt and output texts are placeholders: recordings made from real traffic should be scrubbed the
same way before they are shared (costguard reads only the counts).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HERE = Path(__file__).parent / "recordings"


def part(session: str, trace: dict) -> dict:
    return {"trace": {"agentId": "CLAIMS01", "agentAliasId": "PROD", "agentVersion": "7", "sessionId": session,
                      "eventTime": "2026-11-20T10:00:00Z", "trace": trace}}


def request(session: str, steps: int, tool_bytes: int, model: str = SONNET) -> list[dict]:
    events = [
        part(session, {"preProcessingTrace": {"modelInvocationInput": {"traceId": "p-0", "type": "PRE_PROCESSING", "foundationModel": model}}}),
        part(session, {"preProcessingTrace": {"modelInvocationOutput": {"traceId": "p-0", "metadata": {"usage": {"inputTokens": 1500, "outputTokens": 60}, "totalTimeMs": 700}}}}),
    ]
    context = 2200
    for step in range(steps):
        tid = f"o-{step}"
        orch = lambda body: part(session, {"orchestrationTrace": body})  # noqa: E731
        events.append(orch({"modelInvocationInput": {"traceId": tid, "type": "ORCHESTRATION", "foundationModel": model}}))
        events.append(orch({"modelInvocationOutput": {"traceId": tid, "metadata": {"usage": {"inputTokens": context, "outputTokens": 180}, "totalTimeMs": 1400}}}))
        events.append(orch({"invocationInput": {"traceId": tid, "invocationType": "ACTION_GROUP", "actionGroupInvocationInput": {"actionGroupName": "claims-api", "apiPath": "/claims/{id}/history", "verb": "get"}}}))
        body = json.dumps({"claim": f"C-{step}", "items": ["x" * 60] * max(1, tool_bytes // 70)})[:tool_bytes]
        events.append(orch({"observation": {"traceId": tid, "type": "ACTION_GROUP", "actionGroupInvocationOutput": {"text": body, "metadata": {"totalTimeMs": 250}}}}))
        context += 180 + len(body) // 4
    tid = f"o-{steps}"
    events.append(part(session, {"orchestrationTrace": {"modelInvocationInput": {"traceId": tid, "type": "ORCHESTRATION", "foundationModel": model}}}))
    events.append(part(session, {"orchestrationTrace": {"modelInvocationOutput": {"traceId": tid, "metadata": {"usage": {"inputTokens": context, "outputTokens": 220}, "totalTimeMs": 1600}}}}))
    events.append(part(session, {"orchestrationTrace": {"observation": {"traceId": tid, "type": "FINISH", "finalResponse": {"text": "Your claim is approved."}}}}))
    events.append({"chunk": {"bytes": base64.b64encode(b"Your claim is approved.").decode()}})
    return events


def invocation_log(session: str, calls: int, off_list_at: int) -> list[dict]:
    """A chat session's Converse calls; one call on a model the workflow does not allow."""
    records = []
    context = 900
    for n in range(calls):
        model = "anthropic.claude-3-opus-20240229-v1:0" if n == off_list_at else SONNET
        records.append({
            "schemaType": "ModelInvocationLog",
            "schemaVersion": "1.0",
            "timestamp": f"2026-11-20T11:{n // 60:02d}:{n % 60:02d}Z",
            "accountId": "123456789012",
            "identity": {"arn": "arn:aws:sts::123456789012:assumed-role/claims-intake-app/task"},
            "region": "us-east-1",
            "requestId": f"00000000-0000-4000-8000-{n:012d}",
            "operation": "Converse",
            "modelId": model,
            "requestMetadata": {"sessionId": session},
            "input": {"inputContentType": "application/json",
                      "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "<scrubbed>"}]}]},
                      "inputTokenCount": context, "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0},
            "output": {"outputContentType": "application/json",
                       "outputBodyJson": {"output": {"message": {"role": "assistant", "content": [{"text": "<scrubbed>"}]}}},
                       "outputTokenCount": 150},
        })
        context += 450
    return records


def main() -> None:
    HERE.mkdir(exist_ok=True)
    cases = {
        "claim-normal.jsonl": request("sess-normal", steps=4, tool_bytes=1_500),
        "claim-runaway-loop.jsonl": request("sess-loop", steps=24, tool_bytes=2_000),
        "claim-verbose-tool.jsonl": request("sess-verbose", steps=6, tool_bytes=40_000),
    }
    cases["converse-session-log.jsonl"] = invocation_log("sess-converse", calls=46, off_list_at=19)
    for name, events in cases.items():
        (HERE / name).write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events), encoding="utf-8")


if __name__ == "__main__":
    main()
