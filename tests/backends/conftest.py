"""Shared fixtures: a tiny chat checkpoint and a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from mentalglm.backends.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-qwen2"))


class ScriptedServer(ThreadingHTTPServer):
    """Behaviour is chosen by the first path segment: /ok, /flaky, /garbage, /bad, /slow, /auth."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.seen_bodies: list[dict] = []

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{scenario}/v1"


def _completion(text: str) -> dict:
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        scenario = self.path.strip("/").split("/")[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.hits[scenario] += 1
            hit = self.server.hits[scenario]
            self.server.seen_bodies.append(body)
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
        try:
            self._respond(scenario, hit, body)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1

    def _respond(self, scenario: str, hit: int, body: dict) -> None:
        user = body["messages"][-1]["content"]
        if scenario == "flaky" and hit == 1:
            self._send(500, b'{"error": {"message": "overloaded"}}')
        elif scenario == "garbage":
            self._send(200, b"<html>502 bad gateway, not JSON", "text/html")
        elif scenario == "bad":
            self._send(400, b'{"error": {"message": "bad request"}}')
        elif scenario == "auth":
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._send(401, json.dumps({"error": {"message": f"invalid key {key}"}}).encode())
        else:
            if scenario == "slow":
                time.sleep(0.15)
            self._send(200, json.dumps(_completion(f"echo: {user}")).encode())


@pytest.fixture()
def chat_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
