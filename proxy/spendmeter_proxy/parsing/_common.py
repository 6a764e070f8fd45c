"""Pieces every usage parser shares: JSON helpers, error detection and the stream framings.

A parser for one wire API is an *accumulator*: it is shown the JSON objects of a response one by
one (a whole body is a single object; a stream yields one per event) and keeps what they say about
usage, model and errors. The framings here (SSE, AWS event stream, JSON lines, whole body) turn
bytes into those objects, so each provider module holds only its own counting rules.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from spendmeter_proxy._eventstream import EventStreamDecoder, Frame
from spendmeter_proxy._sse import SSEDecoder, SSEEvent
from spendmeter_proxy.usage import Reading

__all__ = [
    "Accumulator",
    "BodyMeter",
    "EventStreamMeter",
    "LinesMeter",
    "SSEMeter",
    "StreamMeter",
    "as_int",
    "error_of",
    "load_json",
    "sub",
]


class Accumulator(Protocol):
    """Reads the JSON objects of one response, in order."""

    def accept(self, event: str | None, obj: Any) -> None:
        """Take one object (``event`` is the SSE event name or event-stream event type, if any)."""

    def reading(self) -> Reading:
        """What the objects seen so far say."""


class StreamMeter(Protocol):
    """Meters a response body fed in pieces (split anywhere); `reading` may be called at any time."""

    complete: bool  # the stream's own end marker was seen: the app got the whole answer

    def feed(self, data: bytes) -> None: ...

    def reading(self) -> Reading: ...


def load_json(body: bytes) -> Any:
    """Parse a JSON body, raising ValueError with a short message when it is not JSON.

    Bytes that are not UTF-8 inside a string (a provider's bug) do not hide the usage beside them.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return orjson.loads(body.decode("utf-8", errors="replace"))
        except orjson.JSONDecodeError:
            raise ValueError(f"response body is not JSON: {exc}") from exc


def as_int(value: object) -> int:
    """A token count from JSON: non-negative ints (and integral floats) count, anything else is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def sub(obj: object, key: str) -> dict[str, Any]:
    """``obj[key]`` when both are JSON objects, else an empty dict."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, dict):
            return value
    return {}


def error_of(obj: object) -> str | None:
    """The error type (or code) of an error object in the OpenAI, Anthropic or Google shape, or None.

    Only type and code are kept: error messages may quote the request.
    """
    if not isinstance(obj, dict):
        return None
    error = obj.get("error")
    if isinstance(error, dict):
        for key in ("type", "status", "code"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
        return "error"
    if isinstance(error, str) and error:
        return "error"
    if obj.get("type") == "error":
        code = obj.get("code")
        return code if isinstance(code, str) and code else "error"
    return None


# Events after which a stream has nothing more to say; ``complete`` tells that the app got the whole answer
# even when the connection then ends abruptly (an SDK closing the response right after ``[DONE]``).
TERMINAL_EVENTS = frozenset(
    {"message_stop", "response.completed", "response.incomplete", "response.failed", "message-end"}
)


class SSEMeter:
    """An accumulator behind an SSE decoder; `on_event` takes events a caller already decoded."""

    __slots__ = ("_acc", "_decoder", "complete")

    def __init__(self, acc: Accumulator) -> None:
        self._acc = acc
        self._decoder = SSEDecoder()
        self.complete = False

    def feed(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            self.on_event(event)

    def on_event(self, ev: SSEEvent) -> None:
        if ev.event in TERMINAL_EVENTS or ev.data == "[DONE]":
            self.complete = True
        if ev.comment_only or not ev.data or ev.data == "[DONE]":
            return
        try:
            obj = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict) and obj.get("type") in TERMINAL_EVENTS:
            self.complete = True
        self._acc.accept(ev.event, obj)

    def reading(self) -> Reading:
        return self._acc.reading()


class LinesMeter:
    """An accumulator behind newline-delimited JSON (one object per line)."""

    __slots__ = ("_acc", "_tail", "complete")

    def __init__(self, acc: Accumulator) -> None:
        self._acc = acc
        self._tail = b""
        self.complete = False

    def feed(self, data: bytes) -> None:
        if b"\n" not in data:
            self._tail += data
            return
        *lines, rest = (self._tail + data).split(b"\n")
        self._tail = rest
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if isinstance(obj, dict) and obj.get("type") in TERMINAL_EVENTS:
            self.complete = True
        self._acc.accept(None, obj)

    def reading(self) -> Reading:
        tail = self._tail.strip()
        if tail:  # an unterminated last line counts once it is complete JSON
            try:
                obj = orjson.loads(tail)
            except orjson.JSONDecodeError:
                pass
            else:
                self._tail = b""
                self._acc.accept(None, obj)
        return self._acc.reading()


class EventStreamMeter:
    """An accumulator behind an AWS event-stream decoder.

    ``chunk`` frames whose payload is ``{"bytes": base64}`` (InvokeModelWithResponseStream) are
    unwrapped. Exception frames become the reading's error. After an integrity error the meter
    stops counting and keeps what it had.
    """

    __slots__ = ("_acc", "_decoder", "_error", "_failed", "complete")

    def __init__(self, acc: Accumulator) -> None:
        self._acc = acc
        self._decoder = EventStreamDecoder()
        self._failed = False
        self._error: str | None = None
        self.complete = False

    def feed(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            frames = self._decoder.feed(data)
        except ValueError:
            self._failed = True
            self._error = "corrupt event stream"
            return
        for frame in frames:
            self.on_frame(frame)

    def on_frame(self, frame: Frame) -> None:
        message_type = frame.headers.get(":message-type")
        if message_type in ("exception", "error"):
            kind = frame.headers.get(":exception-type") or frame.headers.get(":error-code")
            self._error = kind if isinstance(kind, str) and kind else "error"
            return
        event_type = frame.headers.get(":event-type")
        if event_type == "metadata" or b"amazon-bedrock-invocationMetrics" in frame.payload:
            self.complete = True  # Converse's last frame; InvokeModel's last chunk carries the metrics
        try:
            obj = orjson.loads(frame.payload)
        except orjson.JSONDecodeError:
            return
        encoded = obj.get("bytes") if isinstance(obj, dict) else None
        if isinstance(encoded, str):
            try:
                obj = orjson.loads(base64.b64decode(encoded, validate=True))
            except (binascii.Error, orjson.JSONDecodeError):
                return
        self._acc.accept(event_type if isinstance(event_type, str) else None, obj)

    def reading(self) -> Reading:
        reading = self._acc.reading()
        if self._error and not reading.error:
            reading.error = self._error
        return reading


class BodyMeter:
    """A whole (non-stream) JSON body, collected and parsed when read.

    A body that is not one JSON document is read as JSON lines instead; one that is neither gives
    an empty reading.
    """

    __slots__ = ("_chunks", "_new_acc", "complete")

    def __init__(self, new_acc: Callable[[], Accumulator]) -> None:
        self._new_acc = new_acc
        self._chunks: list[bytes] = []
        self.complete = False  # a JSON body has no end marker: only its end of message says it is whole

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)

    def reading(self) -> Reading:
        body = b"".join(self._chunks)
        self._chunks = [body]
        acc = self._new_acc()
        try:
            acc.accept(None, orjson.loads(body))
        except orjson.JSONDecodeError:
            lines = LinesMeter(acc)
            lines.feed(body)
            return lines.reading()
        return acc.reading()
