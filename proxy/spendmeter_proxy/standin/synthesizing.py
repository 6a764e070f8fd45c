"""Provider-correct responses built from the request alone, for calls no recording fits (pure functions).

Covers OpenAI chat completions (JSON and SSE, honouring ``stream_options.include_usage``), OpenAI
embeddings, Anthropic messages (JSON and SSE) and every provider's error shape. Token counts are
deterministic: about one token per four bytes of prompt text (`estimate_tokens`), and a reply whose
length follows from the prompt size and ``max_tokens``. Prompt caching follows the providers' rules
closely enough for a demo: `cacheable_prefix` names the part of a prompt a provider would cache; the
caller remembers which prefixes it has seen and passes a `Caching` outcome in.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from spendmeter_proxy.errorshapes import error_body
from spendmeter_proxy.standin.messages import Answer, Headers, Request

OPENAI_MIN_CACHED_PREFIX = 1024  # tokens; OpenAI caches prompts from 1024 tokens in 128-token steps
OPENAI_CACHE_STEP = 128
ANTHROPIC_MIN_CACHED_PREFIX = 1024
DEFAULT_REPLY_TOKENS = 64

_WORDS = (
    "The",
    " stand-in",
    " provider",
    " answers",
    " every",
    " request",
    " with",
    " a",
    " reply",
    " whose",
    " length",
    " follows",
    " from",
    " the",
    " prompt",
    ".",
)
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5|deepseek-reasoner)")
_EMBEDDING_DIMENSIONS = {"text-embedding-3-large": 3072}
_JSON: Headers = (("content-type", "application/json"),)
_SSE: Headers = (("content-type", "text/event-stream; charset=utf-8"),)


@dataclass(frozen=True, slots=True)
class Caching:
    """Cached input tokens read from the provider's cache and written to it by this call."""

    read: int = 0
    written: int = 0
    written_1h: int = 0


@dataclass(frozen=True, slots=True)
class Prefix:
    """The cacheable head of a prompt: a key that identifies it and its size in tokens."""

    key: str
    tokens: int
    ttl_1h: bool = False


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate: one token per four bytes of UTF-8, at least one for non-empty text."""
    return (len(text.encode()) + 3) // 4


def _text_of(content: object) -> str:
    """All text in an OpenAI or Anthropic message content (string, or list of parts/blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        return "".join(_text_of(part) for part in content)
    if isinstance(content, Mapping):
        for key in ("text", "content", "input", "arguments"):
            if key in content:
                value = content[key]
                return value if isinstance(value, str) else orjson.dumps(value).decode()
        return "x" * 340 if content.get("type") in ("image", "image_url", "input_image") else ""
    return ""


def _message_tokens(message: object) -> int:
    if not isinstance(message, Mapping):
        return 0
    return 4 + estimate_tokens(_text_of(message.get("content")))


def _tools_tokens(doc: Mapping[str, Any]) -> int:
    tools = doc.get("tools")
    return estimate_tokens(orjson.dumps(tools).decode()) if tools else 0


def _request_id(request: Request, prefix: str) -> str:
    return prefix + hashlib.sha256(request.body + request.path.encode()).hexdigest()[:24]


def _reply(prompt_tokens: int, limit: object) -> tuple[list[str], bool]:
    """The reply words (one token each) and whether ``limit`` cut them short."""
    wanted = min(DEFAULT_REPLY_TOKENS, 8 + prompt_tokens // 16)
    cut = isinstance(limit, int) and 0 < limit < wanted
    count = limit if cut and isinstance(limit, int) else wanted
    return [_WORDS[i % len(_WORDS)] for i in range(count)], cut


def _messages(doc: Mapping[str, Any]) -> list[Any]:
    messages = doc.get("messages")
    return list(messages) if isinstance(messages, list) else []


def _prefix_key(parts: Iterable[object]) -> str:
    return hashlib.sha256(orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS)).hexdigest()


def cacheable_prefix(request: Request) -> Prefix | None:
    """The part of the prompt the provider would serve from its cache on a repeat, if any.

    OpenAI caches automatically: every message but the last, from 1024 tokens, in 128-token steps.
    Anthropic caches what precedes and includes the last block marked ``cache_control`` (tools,
    system, then messages), from 1024 tokens.
    """
    doc = request.json
    if doc is None:
        return None
    if is_anthropic_messages(request):
        blocks: list[object] = list(doc.get("tools") or [])
        system = doc.get("system")
        blocks += system if isinstance(system, list) else [{"type": "text", "text": system}] if system else []
        for message in _messages(doc):
            content = message.get("content") if isinstance(message, Mapping) else None
            blocks += content if isinstance(content, list) else [{"type": "text", "text": content}]
        marked = [i for i, b in enumerate(blocks) if isinstance(b, Mapping) and b.get("cache_control")]
        if not marked:
            return None
        head = blocks[: marked[-1] + 1]
        tokens = sum(estimate_tokens(_text_of(b)) for b in head)
        control = blocks[marked[-1]]
        ttl_1h = isinstance(control, Mapping) and (control.get("cache_control") or {}).get("ttl") == "1h"
        return Prefix(_prefix_key(head), tokens, ttl_1h) if tokens >= ANTHROPIC_MIN_CACHED_PREFIX else None
    messages = _messages(doc)[:-1]
    tokens = sum(_message_tokens(m) for m in messages) + _tools_tokens(doc)
    if tokens < OPENAI_MIN_CACHED_PREFIX:
        return None
    return Prefix(
        _prefix_key([doc.get("model"), doc.get("tools"), messages]),
        tokens // OPENAI_CACHE_STEP * OPENAI_CACHE_STEP,
    )


def is_anthropic_messages(request: Request) -> bool:
    return request.route.endswith("/v1/messages")


def is_openai_chat(request: Request) -> bool:
    return request.route.endswith("/chat/completions")


def is_openai_embeddings(request: Request) -> bool:
    return request.route.endswith("/embeddings")


def can_synthesize(request: Request) -> bool:
    return (
        request.method == "POST"
        and request.json is not None
        and isinstance(request.model, str)
        and (is_openai_chat(request) or is_anthropic_messages(request) or is_openai_embeddings(request))
    )


def synthesize(request: Request, caching: Caching, now: int) -> Answer:
    """A successful answer to a request `can_synthesize` accepts; ``now`` is the Unix time to report."""
    if is_anthropic_messages(request):
        return anthropic_messages(request, caching)
    if is_openai_embeddings(request):
        return openai_embeddings(request)
    return openai_chat(request, caching, now)


def _dumps(value: object) -> bytes:
    return orjson.dumps(value)


def _sse(data: object, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + _dumps(data) + b"\n\n"


def openai_chat(request: Request, caching: Caching, now: int) -> Answer:
    doc = request.json or {}
    model = str(request.model)
    prompt = sum(_message_tokens(m) for m in _messages(doc)) + _tools_tokens(doc) + 3
    words, cut = _reply(prompt, doc.get("max_completion_tokens", doc.get("max_tokens")))
    reasoning = 4 * len(words) if _REASONING_MODEL.match(model) else 0
    completion = len(words) + reasoning
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": min(caching.read, prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    completion_id = _request_id(request, "chatcmpl-")
    finish = "length" if cut else "stop"
    headers: Headers = (("openai-version", "2020-10-01"), ("x-request-id", _request_id(request, "req_")))
    common = {"id": completion_id, "created": now, "model": model, "system_fingerprint": "fp_standin"}
    if not request.stream:
        body = {
            **common,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(words),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
            "service_tier": "default",
        }
        return Answer(200, _JSON + headers, (_dumps(body),))

    def chunk(delta: Mapping[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        data: dict[str, Any] = {**common, "object": "chat.completion.chunk", "choices": [choice]}
        if request.include_usage:
            data["usage"] = None
        return _sse(data)

    events = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
    events += [chunk({"content": w}, None) for w in words]
    events.append(chunk({}, finish))
    if request.include_usage:
        events.append(_sse({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return Answer(200, _SSE + headers, tuple(events), stream=True)


def openai_embeddings(request: Request) -> Answer:
    doc = request.json or {}
    model = str(request.model)
    raw = doc.get("input")
    inputs: list[object] = (
        [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw or [])
    )
    dimensions = doc.get("dimensions")
    size = (
        dimensions
        if isinstance(dimensions, int) and dimensions > 0
        else _EMBEDDING_DIMENSIONS.get(model, 1536)
    )
    as_base64 = doc.get("encoding_format") == "base64"
    data, tokens = [], 0
    for index, item in enumerate(inputs):
        tokens += len(item) if isinstance(item, list) else estimate_tokens(str(item))
        rng = random.Random(_prefix_key([model, item]))
        vector = [rng.uniform(-0.1, 0.1) for _ in range(size)]
        embedding: object = (
            base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if as_base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    headers = (("openai-model", model), ("x-request-id", _request_id(request, "req_")))
    return Answer(200, _JSON + headers, (_dumps(body),))


def anthropic_messages(request: Request, caching: Caching) -> Answer:
    doc = request.json or {}
    model = str(request.model)
    system = doc.get("system")
    total = (
        sum(_message_tokens(m) for m in _messages(doc))
        + _tools_tokens(doc)
        + (estimate_tokens(_text_of(system)) if system else 0)
    )
    cached = caching.read + caching.written
    words, cut = _reply(total, doc.get("max_tokens"))
    usage: dict[str, Any] = {
        "input_tokens": max(0, total - cached),
        "cache_creation_input_tokens": caching.written,
        "cache_read_input_tokens": caching.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": caching.written - caching.written_1h,
            "ephemeral_1h_input_tokens": caching.written_1h,
        },
        "output_tokens": len(words),
        "service_tier": "standard",
    }
    message_id = _request_id(request, "msg_")
    stop_reason = "max_tokens" if cut else "end_turn"
    headers: Headers = (("request-id", _request_id(request, "req_")),)
    message = {"id": message_id, "type": "message", "role": "assistant", "model": model}
    if not request.stream:
        body = {
            **message,
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return Answer(200, _JSON + headers, (_dumps(body),))
    start_usage = {**usage, "output_tokens": 1}
    events = [
        _sse(
            {
                "type": "message_start",
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            "message_start",
        ),
        _sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
        _sse({"type": "ping"}, "ping"),
    ]
    events += [
        _sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
            "content_block_delta",
        )
        for w in words
    ]
    final_usage = {
        k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {**final_usage, "output_tokens": len(words)},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return Answer(200, _SSE + headers, tuple(events), stream=True)


# --- errors -----------------------------------------------------------------------------------------


def api_family(host: str, route: str) -> str:
    """The error shape a host and path call for: openai, anthropic, google, bedrock, openrouter, cohere."""
    if route.endswith("/v1/messages") or "anthropic.com" in host:
        return "anthropic"
    if host.endswith(".amazonaws.com") or route.startswith("/model/"):
        return "bedrock"
    if host.endswith("googleapis.com") or ":generateContent" in route or ":streamGenerateContent" in route:
        return "google"
    if "openrouter" in host or route.startswith("/api/v1/"):
        return "openrouter"
    if "cohere" in host or route.startswith("/v2/chat"):
        return "cohere"
    return "openai"


def error_answer(family: str, status: int, message: str, headers: Headers = ()) -> Answer:
    """An error response in the shape the provider family really uses (see the corpus README)."""
    body, extra = error_body(family, status, message)
    return Answer(status, _JSON + tuple(extra) + headers, (body,), source="error")
