"""A local HTTP server implementing POST /v1/messages and /v1/messages/count_tokens.

The real `anthropic` SDK reaches it through `base_url`. Replies are scripted per strategy
instance (the request's `metadata.user_id`): valid tool calls, malformed input, text only,
errors with headers, slow answers. Every request is recorded for assertions. Loopback only.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["AnthropicStub", "Reply"]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str -> sent as is; None -> an empty submit_signals call
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


_ids = itertools.count(1)


def tool_answer(
    signals: list[dict[str, Any]] | Any,
    model: str = "claude-sonnet-4-6",
    input_tokens: int = 1200,
    output_tokens: int = 150,
    cache_read: int = 0,
    cache_write: int = 0,
) -> dict[str, Any]:
    tool_input = {"signals": signals} if isinstance(signals, list) else signals
    return {
        "id": f"msg_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {
                "type": "tool_use",
                "id": f"toolu_{next(_ids):06d}",
                "name": "submit_signals",
                "input": tool_input,
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        },
    }


def text_answer(text: str, model: str = "claude-sonnet-4-6") -> dict[str, Any]:
    body = tool_answer([], model)
    body["content"] = [{"type": "text", "text": text}]
    body["stop_reason"] = "end_turn"
    return body


def error_reply(
    status: int,
    kind: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Reply:
    return Reply(
        status, {"type": "error", "error": {"type": kind, "message": message}}, headers or {}
    )


class AnthropicStub:
    """Start with `start()`; `base_url` then points the SDK at it; `stop()` ends it."""

    tool_answer = staticmethod(tool_answer)
    text_answer = staticmethod(text_answer)
    error = staticmethod(error_reply)

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.requests: list[dict[str, Any]] = []
        self._scripts: dict[str, list[Reply | Callable[[dict[str, Any]], Reply]]] = {}
        self.default: Callable[[dict[str, Any]], Reply] = lambda body: Reply(body=tool_answer([]))
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, instance_id: str, *replies: Reply | Callable[[dict[str, Any]], Reply]) -> None:
        """Queue replies for one instance; the last one repeats."""
        self._scripts[instance_id] = list(replies)

    def calls_for(self, instance_id: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["instance"] == instance_id]

    def _next(self, body: dict[str, Any]) -> Reply:
        instance = (body.get("metadata") or {}).get("user_id", "")
        with self._lock:
            queue = self._scripts.get(instance)
            item = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        if item is None:
            return self.default(body)
        return item(body) if callable(item) else item

    def start(self) -> AnthropicStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                with stub._lock:
                    stub.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "instance": (body.get("metadata") or {}).get("user_id", ""),
                        }
                    )
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    if self.path.startswith("/v1/messages/count_tokens"):
                        reply = Reply(body={"input_tokens": len(raw) // 4})
                    elif self.path.startswith("/v1/messages"):
                        reply = stub._next(body)
                        time.sleep(stub.latency_s + reply.delay_s)
                    else:
                        reply = error_reply(404, "not_found_error", f"no route {self.path}")
                    payload = (
                        reply.body
                        if isinstance(reply.body, str)
                        else json.dumps(reply.body if reply.body is not None else tool_answer([]))
                    ).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.send_header("request-id", f"req_{next(_ids):06d}")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout or cancellation)
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="anthropic-stub",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
