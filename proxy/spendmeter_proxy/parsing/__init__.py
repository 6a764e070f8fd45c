"""Token usage of LLM responses, for every wire API `spendmeter_proxy.routes` knows.

`parse_body` reads a whole JSON response; `new_meter` returns a meter to feed a response body in
pieces as it streams past (SSE, AWS event stream or newline-delimited JSON, chosen from the
content type or, when there is none, from the first bytes), whose `reading` is valid at any
time, so a cut stream still gives the usage seen so far. The per-provider counting rules live in
the private modules; everything here is pure (no I/O).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import orjson

from spendmeter_proxy._eventstream import _PRELUDE
from spendmeter_proxy.parsing._anthropic import MessagesAccumulator, parse_anthropic_messages_body
from spendmeter_proxy.parsing._bedrock import (
    ConverseAccumulator,
    InvokeAccumulator,
    parse_bedrock_converse_body,
    parse_bedrock_invoke_body,
)
from spendmeter_proxy.parsing._cohere import CohereAccumulator, parse_cohere_chat_body
from spendmeter_proxy.parsing._common import (
    Accumulator,
    BodyMeter,
    EventStreamMeter,
    LinesMeter,
    SSEMeter,
    StreamMeter,
)
from spendmeter_proxy.parsing._gemini import GenerateAccumulator, parse_gemini_generate_body
from spendmeter_proxy.parsing._openai import (
    ChatAccumulator,
    ResponsesAccumulator,
    parse_openai_chat_body,
    parse_openai_responses_body,
)
from spendmeter_proxy.routes import Api, Route
from spendmeter_proxy.usage import Reading

__all__ = [
    "BodyMeter",
    "EventStreamMeter",
    "LinesMeter",
    "SSEMeter",
    "StreamMeter",
    "framing",
    "is_stream",
    "new_meter",
    "parse_anthropic_messages_body",
    "parse_bedrock_converse_body",
    "parse_bedrock_invoke_body",
    "parse_body",
    "parse_cohere_chat_body",
    "parse_gemini_generate_body",
    "parse_openai_chat_body",
    "parse_openai_responses_body",
]

_ACCUMULATORS: dict[Api, Callable[[str], Accumulator]] = {
    "openai_chat": ChatAccumulator,
    "openai_completions": ChatAccumulator,
    "openai_embeddings": ChatAccumulator,
    "openai_responses": ResponsesAccumulator,
    "anthropic_messages": MessagesAccumulator,
    "gemini_generate": GenerateAccumulator,
    "bedrock_converse": ConverseAccumulator,
    "bedrock_invoke": InvokeAccumulator,
    "cohere_chat": CohereAccumulator,
}

_BODY_PARSERS: dict[Api, Callable[[bytes, str], Reading]] = {
    "openai_chat": parse_openai_chat_body,
    "openai_completions": parse_openai_chat_body,
    "openai_embeddings": parse_openai_chat_body,
    "openai_responses": parse_openai_responses_body,
    "anthropic_messages": parse_anthropic_messages_body,
    "gemini_generate": parse_gemini_generate_body,
    "bedrock_converse": parse_bedrock_converse_body,
    "bedrock_invoke": parse_bedrock_invoke_body,
    "cohere_chat": parse_cohere_chat_body,
}


def parse_body(route: Route, body: bytes, content_type: str | None = None) -> Reading:
    """Read a whole (non-stream) response body of the call ``route`` describes.

    Raises ValueError when the body is not JSON; a JSON body without usage (an error) gives a
    reading whose ``usage`` is None.
    """
    return _BODY_PARSERS[route.api](body, route.provider)


_SSE_STARTS = (b"data:", b"event:", b":", b"id:", b"retry:")


def framing(content_type: str | None, first_bytes: bytes = b"") -> str:
    """How a response body is framed: ``sse``, ``eventstream``, ``lines`` or ``json`` (one document).

    Decided by the content type; without a telling one, by the first bytes of the body.
    """
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == "text/event-stream":
        return "sse"
    if media == "application/vnd.amazon.eventstream":
        return "eventstream"
    if media in ("application/x-ndjson", "application/jsonl", "application/stream+json"):
        return "lines"
    if media.endswith("json"):
        return "json"
    return _sniff(first_bytes)


def _sniff(first: bytes) -> str:
    if len(first) >= _PRELUDE.size:
        total, headers_len, crc = _PRELUDE.unpack_from(first)
        if zlib.crc32(first[:8]) == crc and headers_len < total:
            return "eventstream"
    head = first.lstrip()
    if head.startswith(_SSE_STARTS):
        return "sse"
    line, newline, _ = head.partition(b"\n")
    if newline and line.rstrip().endswith(b"}") and line.startswith(b"{"):
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            return "json"
        return "lines"
    return "json"


def is_stream(content_type: str | None, first_bytes: bytes = b"") -> bool:
    """Whether a response is a stream of events rather than one JSON document."""
    return framing(content_type, first_bytes) != "json"


def new_meter(route: Route, content_type: str | None, first_bytes: bytes = b"") -> StreamMeter:
    """A meter for the response body of the call ``route`` describes.

    ``first_bytes`` (the start of the body, when the content type is missing) only help choose the
    framing: feed the meter the whole body, those bytes included. The returned meter is an
    `SSEMeter` (with ``on_event``), an `EventStreamMeter` (with ``on_frame``), a `LinesMeter`, or a
    `BodyMeter` for a body that is one JSON document.
    """
    new_acc = _ACCUMULATORS[route.api]
    kind = framing(content_type, first_bytes)
    if kind == "sse":
        return SSEMeter(new_acc(route.provider))
    if kind == "eventstream":
        return EventStreamMeter(new_acc(route.provider))
    if kind == "lines":
        return LinesMeter(new_acc(route.provider))
    return BodyMeter(lambda: new_acc(route.provider))
