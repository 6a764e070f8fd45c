"""Cutting recorded stream bodies into the events a provider sends one at a time (pure functions).

Server-sent events end at a blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``); each event keeps its
terminator, so joining the events gives back the body byte for byte. AWS event-stream messages
(``application/vnd.amazon.eventstream``) start with their own 4-byte big-endian length.
"""

from __future__ import annotations

import re
import struct

import orjson

SSE_CONTENT_TYPE = "text/event-stream"
EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

_SSE_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_EVENT_STREAM_PRELUDE = 12  # total length, headers length, prelude CRC
_EVENT_STREAM_MIN = 16  # prelude + message CRC


def split_sse(body: bytes) -> list[bytes]:
    """The events of an SSE body, each with its terminating blank line (a trailing partial event is kept)."""
    events, start = [], 0
    for m in _SSE_EVENT_END.finditer(body):
        events.append(body[start : m.end()])
        start = m.end()
    if start < len(body):
        events.append(body[start:])
    return events


def split_event_stream(body: bytes) -> list[bytes]:
    """The messages of an AWS event-stream body, cut by their length prefix; ValueError on bad framing."""
    frames, offset = [], 0
    while offset < len(body):
        if len(body) - offset < _EVENT_STREAM_PRELUDE:
            raise ValueError(f"event stream: {len(body) - offset} trailing bytes at offset {offset}")
        (total,) = struct.unpack_from(">I", body, offset)
        if total < _EVENT_STREAM_MIN or offset + total > len(body):
            raise ValueError(f"event stream: message at offset {offset} claims {total} bytes")
        frames.append(body[offset : offset + total])
        offset += total
    return frames


def sse_data(event: bytes) -> bytes:
    """The joined ``data:`` lines of one SSE event (empty when it has none)."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)


def is_usage_only_chunk(event: bytes) -> bool:
    """Whether an OpenAI-compatible chat stream event is the usage-only chunk ``include_usage`` asks for."""
    data = sse_data(event)
    if not data.startswith(b"{") or b'"usage"' not in data:
        return False
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == [] and bool(chunk.get("usage"))


def ndjson_to_sse(body: bytes) -> list[bytes]:
    """Events ``event: <type>`` / ``data: <json>`` for a body of one JSON object per line (Cohere v2)."""
    events = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            event_type = orjson.loads(line).get("type")
        except (orjson.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"not one JSON object per line: {line[:60]!r}") from e
        head = b"event: " + str(event_type).encode() + b"\n" if event_type else b""
        events.append(head + b"data: " + line + b"\n\n")
    return events
