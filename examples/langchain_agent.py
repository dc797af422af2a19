"""A LangChain tool loop on ``ChatBedrockConverse`` metered by costguard: one model object, each run
attributed to the session its config names, and a verbose tool result refused before it is sent.

Offline, against the repository's local Bedrock endpoint (a scripted model)::

    python examples/langchain_agent.py

Against Amazon Bedrock (your credentials; it costs a few model calls)::

    python examples/langchain_agent.py --aws
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from langchain_aws import ChatBedrockConverse
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool

import costguard
from costguard.integrations.langchain import govern
from costguard.policy import PolicySet

POLICY = """
version: 1
workflows:
  support:
    mode: enforce
    per_request: {max_tool_response_bytes: 4096}
    per_session: {max_model_calls: 8, max_tool_calls: 4}
"""
MODEL_ID = "amazon.nova-micro-v1:0"


@tool
def ticket_history(customer_id: str) -> str:
    """Every ticket a customer ever opened (verbose: the whole thread of each)."""
    return "\n".join(f"ticket {n}: " + "message text " * 40 for n in range(20))


@contextlib.contextmanager
def local_bedrock() -> Iterator[Any]:
    """The local endpoint: one session gets an answer, the other a tool call whose result is too big."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.converse_loop import queue_answer, queue_tool_use
    from tests.support.wire import FakeBedrock

    with FakeBedrock() as fake:
        queue_answer(fake, streaming=True, text="You can reset it from Settings > Security.", input_tokens=220, output_tokens=18)
        queue_tool_use(fake, streaming=True, tool_use_id="tooluse_1", name="ticket_history",
                       tool_input={"customer_id": "C-9"}, input_tokens=260, output_tokens=21)
        yield fake.client("bedrock-runtime")


def ask(llm: Any, question: str, session_id: str) -> None:
    bound = llm.bind_tools([ticket_history])
    config: Any = {"metadata": {"session_id": session_id, "user_id": f"user-of-{session_id}"}}
    messages: list[BaseMessage] = [HumanMessage(question)]
    try:
        for _ in range(4):
            reply: Any = None
            for chunk in bound.stream(messages, config=config):
                reply = chunk if reply is None else reply + chunk
            messages.append(reply)
            if not reply.tool_calls:
                print(f"[{session_id}] answer: {reply.content if isinstance(reply.content, str) else reply.text}")
                return
            messages.extend(ticket_history.invoke(call) for call in reply.tool_calls)
    except costguard.PolicyViolation as violation:
        print(f"[{session_id}] stopped: {violation.message}")


def main() -> None:
    ledger = Path(tempfile.mkdtemp()) / "costguard.db"
    guard = costguard.Guard(PolicySet.from_yaml(POLICY), ledger=f"sqlite:///{ledger}")
    with contextlib.nullcontext(None) if "--aws" in sys.argv else local_bedrock() as local_client:
        client = local_client if local_client is not None else boto3.client("bedrock-runtime")
        llm = govern(ChatBedrockConverse(model=MODEL_ID, client=client, region_name="us-east-1"), guard, workflow="support")
        ask(llm, "How do I reset my password?", "chat-1")
        ask(llm, "Summarise everything I ever asked you.", "chat-2")
    for session_id in ("chat-1", "chat-2"):
        usage = guard.session_usage(session_id)
        print(f"session {session_id} ({usage.user_id}): model_calls={usage.model_calls} tool_calls={usage.tool_calls} "
              f"tokens={usage.tokens} cost=${usage.cost_usd} violations={[v.rule for v in usage.violations]}")
    guard.close()


if __name__ == "__main__":
    main()
