"""A local stand-in for an OpenAI-compatible server (vLLM, SGLang) that answers after a fixed delay.

No model: each answer is a deterministic function of the request's messages, and every request is answered
in its own thread after ``delay_s``, like a server that batches concurrent requests. So tests and
benchmarks can measure what concurrency buys the clients (`predict`, `build`, the judge, the analyzer's LLM
engines) and check that their outputs do not depend on it, without a GPU. ``fault`` scripts failures
(429 with Retry-After, 5xx, garbage, hangs) for the error paths.

    python -m mentalglm.backends.stub_server --port 8011 --delay-ms 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[Sequence[Mapping[str, str]]], str]


@dataclass(frozen=True)
class Fault:
    """What to send instead of an answer (a status with a body and headers), after an extra ``hang_s``.

    ``body=None`` sends the normal answer, only late: a straggler.
    """

    status: int = 500
    body: bytes | None = b'{"error": {"message": "scripted failure"}}'
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0

    @classmethod
    def late(cls, hang_s: float) -> Fault:
        return cls(200, None, hang_s=hang_s)


# (the server's request number, from 1; the request body) -> a Fault, or None to answer normally
FaultScript = Callable[[int, Mapping[str, Any]], Fault | None]


def echo_reply(messages: Sequence[Mapping[str, str]]) -> str:
    """The last user message back, with a short digest of the whole conversation (differs per request)."""
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return f"{user[-200:]} [{messages_digest(messages)[:8]}]"


def messages_digest(messages: Sequence[Mapping[str, str]]) -> str:
    canonical = json.dumps(list(messages), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def completion(text: str, model: str, prompt_tokens: int) -> dict[str, Any]:
    return {"id": "stub", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text),
                      "total_tokens": prompt_tokens + len(text)}}


class StubChatServer(ThreadingHTTPServer):
    """`POST /v1/chat/completions` on 127.0.0.1; counts requests, peak concurrency and repeats of a request."""

    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 resets connections when many clients start at once

    def __init__(self, *, delay_s: float = 0.2, reply: Reply = echo_reply, fault: FaultScript | None = None,
                 port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.delay_s, self.reply, self.fault = delay_s, reply, fault
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: Counter[str] = Counter()  # digest of the messages -> times asked
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> StubChatServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> StubChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: StubChatServer
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as they do with a real server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.rstrip("/")
        if path.endswith("/models"):
            self._send(200, json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode())
        elif path.endswith("/stats"):  # for benchmarks in another process: what the server saw
            with self.server.lock:
                stats = {"requests": self.server.requests, "max_in_flight": self.server.max_in_flight,
                         "distinct": len(self.server.seen), "repeated": sum(n - 1 for n in self.server.seen.values())}
            self._send(200, json.dumps(stats).encode())
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length))
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            self._send(400, b'{"error": {"message": "expected a JSON chat completion request"}}')
            return
        server = self.server
        with server.lock:
            server.requests += 1
            number = server.requests
            server.seen[messages_digest(messages)] += 1
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            fault = server.fault(number, body) if server.fault else None
            time.sleep(server.delay_s + (fault.hang_s if fault else 0.0))
            if fault is not None and fault.body is not None:
                self._send(fault.status, fault.body, fault.headers)
                return
            prompt_tokens = sum(len(m.get("content", "")) for m in messages)
            text = server.reply(messages)
            self._send(200, json.dumps(completion(text, str(body.get("model")), prompt_tokens),
                                       ensure_ascii=False).encode("utf-8"))
        finally:
            with server.lock:
                server.in_flight -= 1


def main(argv: Sequence[str] | None = None, reply: Reply = echo_reply) -> None:
    """Serve until interrupted; ``reply`` lets a benchmark answer its prompts in the layout its clients read."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--delay-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    server = StubChatServer(delay_s=args.delay_ms / 1000, port=args.port, reply=reply)
    print(f"stub OpenAI-compatible server at {server.url}, answering after {args.delay_ms:.0f} ms", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()


if __name__ == "__main__":
    main()
