"""A local Bedrock endpoint that speaks the real wire formats, for stock boto3 clients.

InvokeAgent answers in the AWS event-stream binary framing (prelude with total and header
lengths and a CRC32, string headers, JSON payload, message CRC32); Converse in JSON; InvokeModel
with the token-count headers. Streams are written event by event with chunked transfer
encoding, and the server notices when the client hangs up early.
"""

from __future__ import annotations

import base64
import binascii
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


@dataclass
class _Scripted:
    kind: str  # "agent" | "json" | "error"
    events: list[bytes] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200


class FakeBedrock:
    """``with FakeBedrock() as fake: client = fake.client("bedrock-agent-runtime")``."""

    def __init__(self, pace_seconds: float = 0.002) -> None:
        self.pace_seconds = pace_seconds
        self.requests: list[dict[str, Any]] = []
        self.streams: list[StreamRecord] = []
        self._queue: deque[_Scripted] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ------------------------------------------------------------------------------

    def queue_agent_response(
        self,
        events: list[dict[str, Any]],
        *,
        exception_after: int | None = None,
        exception: tuple[str, str] = ("throttlingException", "Rate exceeded"),
        repeat: int = 1,
    ) -> None:
        wire = [encode_event(e) for e in events]
        if exception_after is not None:
            wire = wire[:exception_after] + [encode_exception(*exception)]
        with self._lock:
            for _ in range(repeat):
                self._queue.append(_Scripted("agent", events=wire))

    def queue_converse(self, input_tokens: int, output_tokens: int, *, cache_read: int = 0, cache_write: int = 0, text: str = "ok") -> None:
        body = {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                      "totalTokens": input_tokens + output_tokens + cache_read + cache_write,
                      "cacheReadInputTokens": cache_read, "cacheWriteInputTokens": cache_write},
            "metrics": {"latencyMs": 250},
        }
        with self._lock:
            self._queue.append(_Scripted("json", body=body))

    def queue_converse_stream(self, input_tokens: int, output_tokens: int) -> None:
        events = [
            {"messageStart": {"role": "assistant"}},
            {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "hello"}}},
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": "end_turn"}},
            {"metadata": {"usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens}, "metrics": {"latencyMs": 300}}},
        ]
        with self._lock:
            self._queue.append(_Scripted("agent", events=[encode_event(e) for e in events]))

    def queue_invoke_model(self, body: dict[str, Any], input_tokens: int, output_tokens: int) -> None:
        headers = {"x-amzn-bedrock-input-token-count": str(input_tokens),
                   "x-amzn-bedrock-output-token-count": str(output_tokens),
                   "x-amzn-bedrock-invocation-latency": "123"}
        with self._lock:
            self._queue.append(_Scripted("json", body=body, headers=headers))

    def queue_error(self, status: int, error_type: str, message: str) -> None:
        with self._lock:
            self._queue.append(_Scripted("error", body={"message": message}, headers={"x-amzn-errortype": error_type}, status=status))

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

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, read_timeout=10, connect_timeout=5),
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
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    scripted = fake._queue.popleft() if fake._queue else None
                if scripted is None:
                    self._json(500, {"message": "FakeBedrock: nothing queued for " + self.path}, {"x-amzn-errortype": "InternalServerException"})
                elif scripted.kind == "agent":
                    self._stream(scripted.events)
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

            def _stream(self, events: list[bytes]) -> None:
                record = StreamRecord(events_total=len(events))
                with fake._lock:
                    fake.streams.append(record)
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("x-amzn-bedrock-agent-content-type", "application/json")
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
