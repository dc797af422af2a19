"""A local Bedrock endpoint that speaks the real wire formats, for stock boto3 clients.

InvokeAgent, InvokeInlineAgent, ConverseStream, InvokeModelWithResponseStream, InvokeFlow and
RetrieveAndGenerateStream answer in the AWS event-stream binary framing (prelude with total and
header lengths and a CRC32, string headers, JSON payload, message CRC32); Converse,
RetrieveAndGenerate and ApplyGuardrail in JSON; InvokeModel with the token-count headers. Streams
are written event by event with chunked transfer encoding, and the server notices when the
client hangs up early.

Every response is scripted for one operation's path (``queue_*``). Each request is recorded
(path, the headers that matter, decoded body) in :attr:`FakeBedrock.requests`; a request that does
not match the next scripted path, or arrives when nothing is queued, is answered with an error
and recorded in :attr:`FakeBedrock.unscripted`, which the ``fake`` fixture requires to be empty.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import boto3
from botocore.config import Config


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    header_bytes = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack("!I", binascii.crc32(message))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def encode_event(event: dict[str, Any]) -> bytes:
    """A boto3-shaped event ({"trace": {...}}) in wire form; blobs travel base64 in the JSON."""
    (event_type, body), = event.items()
    payload = json.dumps(_jsonable(body)).encode()
    return encode_message(
        {":message-type": "event", ":event-type": event_type, ":content-type": "application/json"}, payload
    )


def encode_exception(exception_type: str, message: str) -> bytes:
    return encode_message(
        {":message-type": "exception", ":exception-type": exception_type, ":content-type": "application/json"},
        json.dumps({"message": message}).encode(),
    )


@dataclass
class StreamRecord:
    events_total: int
    events_sent: int = 0
    client_hung_up: bool = False
    completed: bool = False
    done: threading.Event = field(default_factory=threading.Event)


#: Request paths of each operation, from botocore's service models (``http.requestUri``).
PATHS: dict[str, str] = {
    "InvokeAgent": r"/agents/[^/]+/agentAliases/[^/]+/sessions/[^/]+/text",
    "InvokeInlineAgent": r"/agents/[^/]+",
    "Converse": r"/model/[^/]+/converse",
    "ConverseStream": r"/model/[^/]+/converse-stream",
    "InvokeModel": r"/model/[^/]+/invoke",
    "InvokeModelWithResponseStream": r"/model/[^/]+/invoke-with-response-stream",
    "ApplyGuardrail": r"/guardrail/[^/]+/version/[^/]+/apply",
    "InvokeFlow": r"/flows/[^/]+/aliases/[^/]+",
    "RetrieveAndGenerate": r"/retrieveAndGenerate",
    "RetrieveAndGenerateStream": r"/retrieveAndGenerateStream",
}
#: Request headers worth asserting on (the rest is signing and transport).
RECORDED_HEADERS = ("content-type", "accept", "x-amzn-bedrock-trace", "x-amzn-bedrock-service-tier",
                    "x-amzn-bedrock-performanceconfig-latency", "x-amzn-bedrock-guardrailidentifier")


@dataclass
class _Scripted:
    kind: str  # "stream" | "json" | "error"
    path: str | None  # a PATHS pattern; None: any path (errors scripted for "whatever comes next")
    events: list[bytes] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    #: Seconds to wait before answering (a client read timeout shorter than this never gets it).
    delay: float = 0.0

    def matches(self, path: str) -> bool:
        return self.path is None or re.fullmatch(self.path, path.split("?", 1)[0]) is not None


class FakeBedrock:
    """``with FakeBedrock() as fake: client = fake.client("bedrock-agent-runtime")``."""

    def __init__(self, pace_seconds: float = 0.002) -> None:
        self.pace_seconds = pace_seconds
        self.requests: list[dict[str, Any]] = []
        #: Requests nothing was scripted for (wrong path, or nothing queued): a test that sees one
        #: is not testing what it thinks it is.
        self.unscripted: list[dict[str, Any]] = []
        self.streams: list[StreamRecord] = []
        self._queue: deque[_Scripted] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ------------------------------------------------------------------------------

    def _push(self, item: _Scripted, repeat: int = 1) -> None:
        with self._lock:
            for _ in range(repeat):
                self._queue.append(item)

    def queue_agent_response(
        self,
        events: list[dict[str, Any]],
        *,
        exception_after: int | None = None,
        exception: tuple[str, str] = ("throttlingException", "Rate exceeded"),
        repeat: int = 1,
        operation: str = "InvokeAgent",
    ) -> None:
        self.queue_stream(operation, events, exception_after=exception_after, exception=exception, repeat=repeat)

    def queue_stream(
        self,
        operation: str,
        events: list[dict[str, Any]],
        *,
        exception_after: int | None = None,
        exception: tuple[str, str] = ("throttlingException", "Rate exceeded"),
        repeat: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A response of ``operation`` as an event stream of boto3-shaped ``events``."""
        wire = [encode_event(e) for e in events]
        if exception_after is not None:
            wire = wire[:exception_after] + [encode_exception(*exception)]
        self._push(_Scripted("stream", PATHS[operation], events=wire, headers=dict(headers or {})), repeat)

    def queue_json(self, operation: str, body: dict[str, Any], headers: dict[str, str] | None = None, *, delay: float = 0.0) -> None:
        self._push(_Scripted("json", PATHS[operation], body=body, headers=dict(headers or {}), delay=delay))

    def queue_converse(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read: int = 0,
        cache_write: int = 0,
        text: str = "ok",
        extra: dict[str, Any] | None = None,
        usage_extra: dict[str, Any] | None = None,
        content: list[dict[str, Any]] | None = None,
        stop_reason: str = "end_turn",
        delay: float = 0.0,
    ) -> None:
        body = {
            "output": {"message": {"role": "assistant", "content": content if content is not None else [{"text": text}]}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                      "totalTokens": input_tokens + output_tokens + cache_read + cache_write,
                      "cacheReadInputTokens": cache_read, "cacheWriteInputTokens": cache_write,
                      **(usage_extra or {})},
            "metrics": {"latencyMs": 250},
            **(extra or {}),
        }
        self.queue_json("Converse", body, delay=delay)

    def queue_converse_stream(self, input_tokens: int, output_tokens: int, *, metadata_extra: dict[str, Any] | None = None) -> None:
        events = [
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "hello"}}},
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": "end_turn"}},
            {"metadata": {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
                          "metrics": {"latencyMs": 300}, **(metadata_extra or {})}},
        ]
        self.queue_stream("ConverseStream", events)

    def queue_invoke_model(self, body: dict[str, Any], input_tokens: int, output_tokens: int, headers: dict[str, str] | None = None) -> None:
        all_headers = {"x-amzn-bedrock-input-token-count": str(input_tokens),
                       "x-amzn-bedrock-output-token-count": str(output_tokens),
                       "x-amzn-bedrock-invocation-latency": "123", **(headers or {})}
        self.queue_json("InvokeModel", body, all_headers)

    def queue_invoke_model_stream(
        self,
        chunks: list[dict[str, Any]],
        metrics: dict[str, Any] | None,
        *,
        headers: dict[str, str] | None = None,
        exception_after: int | None = None,
    ) -> None:
        """InvokeModelWithResponseStream: each chunk's model JSON travels base64 in ``bytes``;
        ``metrics`` (``amazon-bedrock-invocationMetrics``) rides in the last chunk, as Bedrock does."""
        bodies = [dict(c) for c in chunks]
        if metrics is not None:
            bodies[-1]["amazon-bedrock-invocationMetrics"] = metrics
        events = [{"chunk": {"bytes": json.dumps(b).encode()}} for b in bodies]
        self.queue_stream("InvokeModelWithResponseStream", events, exception_after=exception_after,
                          headers={"x-amzn-bedrock-content-type": "application/json", **(headers or {})})

    def queue_error(self, status: int, error_type: str, message: str, *, operation: str | None = None) -> None:
        self._push(_Scripted("error", PATHS[operation] if operation else None, body={"message": message},
                             headers={"x-amzn-errortype": error_type}, status=status))

    def wait_for_stream_end(self, index: int = -1, timeout: float = 5.0) -> StreamRecord:
        deadline = time.monotonic() + timeout
        while not self.streams and time.monotonic() < deadline:
            time.sleep(0.005)
        record = self.streams[index]
        record.done.wait(max(0.0, deadline - time.monotonic()))
        return record

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client(self, service: str, *, attempts: int = 1, read_timeout: float = 10) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            # One attempt, no retries: every request the endpoint sees is one the test scripted.
            config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}, read_timeout=read_timeout, connect_timeout=5),
        )

    def __enter__(self) -> FakeBedrock:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet test output
                return

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode(errors="replace")}
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = {
                    "path": self.path,
                    "model": unquote(self.path.split("/")[2]) if self.path.startswith("/model/") else None,
                    "headers": {k: headers[k] for k in RECORDED_HEADERS if k in headers},
                    "body": body,
                }
                with fake._lock:
                    fake.requests.append(request)
                    scripted = fake._queue[0] if fake._queue else None
                    if scripted is not None and scripted.matches(self.path):
                        fake._queue.popleft()
                    else:
                        fake.unscripted.append(request)
                        scripted = None
                if scripted is not None and scripted.delay:
                    time.sleep(scripted.delay)
                if scripted is None:
                    self._json(400, {"message": "FakeBedrock: nothing scripted for " + self.path}, {"x-amzn-errortype": "ValidationException"})
                elif scripted.kind == "stream":
                    self._stream(scripted.events, scripted.headers)
                elif scripted.kind == "json":
                    self._json(200, scripted.body, scripted.headers)
                else:
                    self._json(scripted.status, scripted.body, scripted.headers)

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, events: list[bytes], headers: dict[str, str]) -> None:
                record = StreamRecord(events_total=len(events))
                with fake._lock:
                    fake.streams.append(record)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("x-amzn-bedrock-agent-content-type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                sock = self.connection
                try:
                    for frame in events:
                        if fake.pace_seconds and _peer_closed(sock, fake.pace_seconds):
                            record.client_hung_up = True
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                        self.wfile.flush()
                        record.events_sent += 1
                    else:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        record.completed = True
                except (BrokenPipeError, ConnectionResetError):
                    record.client_hung_up = True
                finally:
                    if record.client_hung_up:
                        self.close_connection = True
                    record.done.set()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _peer_closed(sock: socket.socket, wait: float) -> bool:
    """True when the client has closed its end (readable with nothing to read)."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (ConnectionResetError, OSError):
        return True
