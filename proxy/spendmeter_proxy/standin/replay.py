"""Choosing the recorded exchange that answers a request, and turning it into an `Answer` (pure).

A request is matched by method and path without query, then by host (any host when the request
names one no recording has, e.g. ``127.0.0.1``), then by requested model and stream flag (as the
recorded request asked, not as the answer came). Among several candidates an identical recorded
request body wins, then a successful exchange, then the same query string, then the first by id.

The answer keeps the recorded status and headers, minus hop-by-hop and framing headers (the server
sets content-length or chunked for what it actually sends; recorded bodies are stored decoded, so any
content-encoding goes too). Streams are cut into their events. OpenAI-compatible chat streams lose the
usage-only chunk when the request did not set ``stream_options.include_usage``, as the real APIs do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from spendmeter_proxy.standin.exchanges import Exchange
from spendmeter_proxy.standin.framing import (
    EVENT_STREAM_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    is_usage_only_chunk,
    ndjson_to_sse,
    split_event_stream,
    split_sse,
)
from spendmeter_proxy.standin.messages import Answer, Headers, Request, parse_request

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
    }
)
_DROPPED = HOP_BY_HOP | {"content-type"}


@dataclass(slots=True)
class ExchangeIndex:
    """Recorded exchanges by (method, path without query), for quick matching."""

    exchanges: Sequence[Exchange]
    by_id: dict[str, Exchange] = field(default_factory=dict)
    by_route: dict[tuple[str, str], list[Exchange]] = field(default_factory=lambda: defaultdict(list))
    hosts: set[str] = field(default_factory=set)
    asked_stream: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for exchange in self.exchanges:
            self.by_id[exchange.id] = exchange
            if exchange.path is not None and exchange.request_body is not None:
                recorded = parse_request(exchange.method, exchange.path, (), exchange.request_body)
                self.asked_stream[exchange.id] = recorded.stream
            self.hosts.add(exchange.host)
            if exchange.route is not None:
                self.by_route[(exchange.method, exchange.route)].append(exchange)

    def find(self, request: Request) -> Exchange | None:
        """The recorded exchange that best answers ``request``, or None."""
        candidates = self.by_route.get((request.method, request.route), [])
        if request.host in self.hosts:
            candidates = [e for e in candidates if e.host == request.host]
        candidates = [
            e
            for e in candidates
            if self.asked_stream.get(e.id, e.stream) == request.stream
            and (request.model is None or e.requested_model == request.model)
        ]
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda e: (e.request_body != request.body, e.is_error, e.path != request.path, e.id),
        )


def _content_type(exchange: Exchange) -> str:
    recorded = exchange.response_header("content-type")
    if recorded:
        return recorded
    body = exchange.response_body.lstrip()
    if body.startswith((b"data:", b"event:", b":")):
        return SSE_CONTENT_TYPE
    if exchange.stream and body.startswith(b"{") and b"\n{" in body:
        return SSE_CONTENT_TYPE  # one JSON event per line, re-framed as SSE below
    return "application/json"


def _is_openai_chat_stream(exchange: Exchange) -> bool:
    return exchange.route is not None and exchange.route.endswith("/chat/completions")


def replay_answer(exchange: Exchange, request: Request) -> Answer:
    """The recorded response, cut into events when it is a stream."""
    content_type = _content_type(exchange)
    kept = ((k.lower(), v) for k, v in exchange.response_headers)
    headers: Headers = (("content-type", content_type), *((k, v) for k, v in kept if k not in _DROPPED))
    body = exchange.response_body
    media = content_type.split(";", 1)[0].strip().lower()
    if media == EVENT_STREAM_CONTENT_TYPE:
        pieces = split_event_stream(body)
    elif media == SSE_CONTENT_TYPE:
        stripped = body.lstrip()
        events = ndjson_to_sse(body) if stripped.startswith(b"{") else split_sse(body)
        if _is_openai_chat_stream(exchange) and not request.include_usage:
            events = [e for e in events if not is_usage_only_chunk(e)]
        pieces = events
    else:
        return Answer(exchange.status, headers, (body,), stream=False, source=exchange.id)
    return Answer(exchange.status, headers, tuple(pieces), stream=True, source=exchange.id)
