"""A local HTTP server implementing POST /v1/messages and /v1/messages/count_tokens.

The real `anthropic` SDK reaches it through `base_url`. Replies are scripted per strategy
instance (the request's `metadata.user_id`): valid tool calls, malformed input, text only,
errors with headers, slow answers. Every request is recorded for assertions. Loopback only.

Prompt caching is honoured the way the Messages API documents it (platform.claude.com,
"Prompt caching"), and usage is reported from the request unless a reply pins it:

- The prompt is one sequence of blocks in the order tools -> system -> messages (a string
  `system` or message `content` is one text block). A block with `cache_control`
  {"type": "ephemeral", "ttl": "5m" | "1h"} is a breakpoint: the prefix up to and
  including it may be cached. A top-level `cache_control` (automatic caching) puts the
  breakpoint on the last block. At most 4 breakpoints (400 otherwise); a 1h breakpoint
  may not follow a 5m one; malformed `cache_control` (other type, other ttl, extra keys,
  on an empty text block) is a 400 `invalid_request_error`, as from the API.
- A cache entry is keyed by the exact prefix (and the model, and the API key standing for
  the organisation; `tool_choice` is part of the prefix from the messages on, since
  changing it invalidates only the messages' cache). A request reads the longest live
  entry found at or up to 20 blocks before any of its breakpoints (the API's look-back).
- A prefix shorter than the model's minimum cacheable length is neither written nor read
  (`MIN_CACHEABLE_TOKENS`; no error, as from the API).
- Entries live for their TTL from their last use (a read refreshes it at no cost). A new
  entry becomes readable only when the response that wrote it begins: concurrent requests
  with the same new prefix each miss and each write (Anthropic's page advises waiting for
  the first response before sending parallel requests that should hit; this rule and the
  20-block look-back were not in the local docs corpus, which had the rest).
- usage: `cache_read_input_tokens` (the entry read), `cache_creation_input_tokens` (from
  there to the last breakpoint, split by TTL in `cache_creation`), `input_tokens` (the
  part after the last breakpoint, or everything when nothing is cacheable), and
  `output_tokens` estimated from the answer.
- Tokens are estimated deterministically: ceil(characters / 4) per block, where a text
  block counts its text and any other block (a tool definition, tool_use, tool_result)
  its compact JSON without `cache_control`. The API's own tokenizer differs; the rules
  above do not depend on it. The clock (`AnthropicStub.clock`) is injectable.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["CHARS_PER_TOKEN", "MIN_CACHEABLE_TOKENS", "AnthropicStub", "PromptCache", "Reply"]

CHARS_PER_TOKEN = 4
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
TTL_S = {"5m": 300.0, "1h": 3600.0}
# Minimum cacheable prompt length by model prefix, first match wins; the API's table (the
# "Prompt caching" page): 4096 for Opus 4.6/4.5 and Haiku 4.5, 2048 for Haiku 3.5/3, 1024
# for Sonnet 4.6/4.5/4, Opus 4.1/4 and Sonnet 3.7. (Some third-party pages give 2048 for
# Sonnet 4.6; we follow Anthropic's own page.)
MIN_CACHEABLE_TOKENS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
    ("claude-haiku-3", 2048),
    ("claude-", 1024),
)


def min_cacheable_tokens(model: str) -> int:
    return next((n for prefix, n in MIN_CACHEABLE_TOKENS if model.startswith(prefix)), 1024)


def block_tokens(canonical: str) -> int:
    return math.ceil(len(canonical) / CHARS_PER_TOKEN)


class RequestError(ValueError):
    """A request the API would refuse with 400 invalid_request_error."""


@dataclass(frozen=True, slots=True)
class _Block:
    role: str  # tool, system, user, assistant (hashed with the block)
    canonical: str  # what is hashed and counted: the text, or the compact JSON
    cache_control: Any  # None, or the block's cache_control as sent
    where: str  # for error messages: tools.0, system.1, messages.0.content.0


def _without_cc(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _content_blocks(content: Any, where: str, role: str) -> list[_Block]:
    if isinstance(content, str):
        return [_Block(role, content, None, where)]
    if not isinstance(content, list):
        raise RequestError(f"{where}: Input should be a valid string or list of content blocks")
    out = []
    for i, b in enumerate(content):
        if not isinstance(b, dict) or not isinstance(b.get("type"), str):
            raise RequestError(f"{where}.{i}: Input should be an object with a type")
        if b["type"] == "text":
            text = b.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}.{i}.text: Field required")
            if not text and "cache_control" in b:
                raise RequestError(
                    f"{where}.{i}: cache_control cannot be set for empty text blocks"
                )
            canonical = text
        else:
            canonical = _compact(_without_cc(b))
        out.append(_Block(role, canonical, b.get("cache_control"), f"{where}.{i}"))
    return out


def _check_cache_control(cc: Any, where: str) -> str:
    """Validate one cache_control object as the API does; return its TTL."""
    if not isinstance(cc, dict):
        raise RequestError(f"{where}.cache_control: Input should be a valid dictionary")
    extra = sorted(set(cc) - {"type", "ttl"})
    if extra:
        raise RequestError(f"{where}.cache_control.{extra[0]}: Extra inputs are not permitted")
    if cc.get("type") != "ephemeral":
        raise RequestError(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = cc.get("ttl", "5m")
    if ttl not in TTL_S:
        raise RequestError(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What one request reads, writes and pays for."""

    total_tokens: int
    input_tokens: int
    cache_read: int
    cache_write: int
    write_5m: int
    write_1h: int
    writes: tuple[tuple[str, str, int], ...]  # (key, ttl, prefix tokens) to store on response
    read_key: str | None


def plan_request(body: dict[str, Any]) -> tuple[list[_Block], list[int], list[str], str]:
    """Validate the request's shape and return its blocks, breakpoint indexes and TTLs, and
    the model. Raises RequestError for what the API refuses with a 400."""
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise RequestError(f"{key}: Field required")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise RequestError("model: Input should be a valid string")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise RequestError("max_tokens: Input should be a positive integer")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: at least one message is required")
    blocks: list[_Block] = []
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise RequestError("tools: Input should be a valid list")
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise RequestError(f"tools.{i}.name: Field required")
        blocks.append(
            _Block("tool", _compact(_without_cc(t)), t.get("cache_control"), f"tools.{i}")
        )
    system = body.get("system")
    if system is not None:
        blocks += _content_blocks(system, "system", "system")
    choice = _compact(body.get("tool_choice"))
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise RequestError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        role = f"{m['role']}" if i else f"{m['role']}[{choice}]"  # tool_choice keys the messages
        blocks += _content_blocks(m.get("content"), f"messages.{i}.content", role)
    top = body.get("cache_control")
    breakpoints = [i for i, b in enumerate(blocks) if b.cache_control is not None]
    ttls = [_check_cache_control(blocks[i].cache_control, blocks[i].where) for i in breakpoints]
    if top is not None:
        ttl = _check_cache_control(top, "(request)")
        if not breakpoints or breakpoints[-1] != len(blocks) - 1:
            breakpoints.append(len(blocks) - 1)
            ttls.append(ttl)
    if len(breakpoints) > MAX_BREAKPOINTS:
        raise RequestError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(breakpoints)}."
        )
    if "1h" in ttls and "5m" in ttls[: len(ttls) - ttls[::-1].index("1h")]:
        raise RequestError(
            "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
        )
    return blocks, breakpoints, ttls, model


class PromptCache:
    """The API's prompt cache, for one server: prefix key -> (expires_at, ttl)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def plan(self, body: dict[str, Any], org: str) -> CachePlan:
        blocks, breakpoints, ttls, model = plan_request(body)
        keys: list[str] = []
        cumulative: list[int] = []
        h = hashlib.sha256(f"{org}\0{model}".encode()).hexdigest()
        total = 0
        for b in blocks:
            h = hashlib.sha256(f"{h}\0{b.role}\0{b.canonical}".encode()).hexdigest()
            keys.append(h)
            total += block_tokens(b.canonical)
            cumulative.append(total)
        minimum = min_cacheable_tokens(model)
        now = self.clock()
        read, read_key = 0, None
        with self._lock:
            for bp in breakpoints:
                for j in range(bp, max(bp - LOOKBACK_BLOCKS, -1), -1):
                    entry = self.entries.get(keys[j])
                    if entry is not None and entry[0] > now and cumulative[j] > read:
                        read, read_key = cumulative[j], keys[j]
                        break
            if read_key is not None:  # a read refreshes the entry's TTL at no cost
                ttl = self.entries[read_key][1]
                self.entries[read_key] = (now + TTL_S[ttl], ttl)
        write_5m = write_1h = 0
        writes: list[tuple[str, str, int]] = []
        covered = read
        cached_through = read
        for bp, ttl in zip(breakpoints, ttls, strict=True):
            if cumulative[bp] < minimum:
                continue
            if cumulative[bp] > covered:
                if ttl == "1h":
                    write_1h += cumulative[bp] - covered
                else:
                    write_5m += cumulative[bp] - covered
                covered = cumulative[bp]
            if keys[bp] != read_key:
                writes.append((keys[bp], ttl, cumulative[bp]))
            cached_through = max(cached_through, cumulative[bp])
        return CachePlan(
            total,
            total - cached_through,
            read,
            write_5m + write_1h,
            write_5m,
            write_1h,
            tuple(writes),
            read_key,
        )

    @staticmethod
    def count(body: dict[str, Any]) -> int:
        """The request's input tokens (count_tokens): no cache lookup, no TTL refresh."""
        blocks, _, _, _ = plan_request({"max_tokens": 1, **body})
        return sum(block_tokens(b.canonical) for b in blocks)

    def commit(self, plan: CachePlan) -> None:
        """Store the request's entries: called when its response begins."""
        now = self.clock()
        with self._lock:
            for key, ttl, _ in plan.writes:
                self.entries[key] = (now + TTL_S[ttl], ttl)


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
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cache_read: int | None = None,
    cache_write: int | None = None,
) -> dict[str, Any]:
    """A submit_signals answer. Usage left as None is filled in by the server from the
    request (caching included) and from the answer; a number pins it (for fault tests)."""
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


def _with_usage(body: dict[str, Any], plan: CachePlan) -> dict[str, Any]:
    """Fill the usage fields a reply left as None from the cache plan and the answer."""
    usage = dict(body["usage"])
    if usage.get("input_tokens") is None:
        usage["input_tokens"] = plan.input_tokens
    if usage.get("cache_read_input_tokens") is None:
        usage["cache_read_input_tokens"] = plan.cache_read
    if usage.get("cache_creation_input_tokens") is None:
        usage["cache_creation_input_tokens"] = plan.cache_write
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": plan.write_5m,
            "ephemeral_1h_input_tokens": plan.write_1h,
        }
    if usage.get("output_tokens") is None:
        usage["output_tokens"] = max(1, block_tokens(_compact(body.get("content", []))))
    return {**body, "usage": usage}


class AnthropicStub:
    """Start with `start()`; `base_url` then points the SDK at it; `stop()` ends it."""

    tool_answer = staticmethod(tool_answer)
    text_answer = staticmethod(text_answer)
    error = staticmethod(error_reply)

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.clock: Callable[[], float] = time.monotonic  # replace to move time in tests
        self.cache = PromptCache(lambda: self.clock())
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

    def paths(self) -> Counter[str]:
        """How many requests each path received."""
        with self._lock:
            return Counter(r["path"].split("?")[0] for r in self.requests)

    def usages(self) -> list[dict[str, Any]]:
        """The usage of every 200 answer to /v1/messages, in the order they were sent."""
        with self._lock:
            return [r["usage"] for r in self.requests if r.get("usage") is not None]

    def _next(self, body: dict[str, Any]) -> Reply:
        instance = (body.get("metadata") or {}).get("user_id", "")
        with self._lock:
            queue = self._scripts.get(instance)
            item = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        if item is None:
            return self.default(body)
        return item(body) if callable(item) else item

    def start(self) -> Self:
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
                if not isinstance(body, dict):
                    body = {}
                record: dict[str, Any] = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "instance": (body.get("metadata") or {}).get("user_id", ""),
                    "usage": None,
                }
                with stub._lock:
                    stub.requests.append(record)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                # the organisation a cache belongs to, without keeping the key itself
                org = hashlib.sha256(
                    (
                        self.headers.get("x-api-key") or self.headers.get("authorization") or ""
                    ).encode()
                ).hexdigest()
                try:
                    plan = None
                    if self.path.startswith("/v1/messages/count_tokens"):
                        try:
                            reply = Reply(body={"input_tokens": stub.cache.count(body)})
                        except RequestError as exc:
                            reply = error_reply(400, "invalid_request_error", str(exc))
                    elif self.path.startswith("/v1/messages"):
                        try:
                            plan = stub.cache.plan(body, org)
                        except RequestError as exc:
                            reply = error_reply(400, "invalid_request_error", str(exc))
                        else:
                            reply = stub._next(body)
                            time.sleep(stub.latency_s + reply.delay_s)
                    else:
                        reply = error_reply(404, "not_found_error", f"no route {self.path}")
                    if plan is not None and reply.status == 200:
                        if reply.body is None:
                            reply = Reply(reply.status, tool_answer([]), reply.headers)
                        if isinstance(reply.body, dict) and isinstance(
                            reply.body.get("usage"), dict
                        ):
                            reply = Reply(
                                reply.status, _with_usage(reply.body, plan), reply.headers
                            )
                            record["usage"] = reply.body["usage"]
                        stub.cache.commit(plan)  # the response begins: the entries exist
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
