"""The tap on a streamed LLM answer: forwards every chunk at once while metering a decoded copy.

mitmproxy calls a tap with each chunk of the response body as it arrives (and with ``b""`` at the end);
what the tap returns goes to the client immediately, so nothing is buffered beyond an incomplete event.

Two kinds of tap:

- `PassThroughTap` forwards the bytes untouched and feeds a decoded copy to the usage meter.
- `UsageRewriteTap`, for OpenAI-compatible chat streams, works event by event: when the proxy itself asked
  the provider for usage (``stream_options.include_usage``), it drops the usage-only chunk the client did not
  ask for; when the client asked, it adds an ``x_spendmeter`` object (cost, model) to that chunk.

Metering never breaks the stream: a failure is reported through ``on_error`` and the bytes flow on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import orjson

from spendmeter_proxy._content import ContentDecoder
from spendmeter_proxy._sse import SSEDecoder, SSEEvent
from spendmeter_proxy.parsing import StreamMeter
from spendmeter_proxy.usage import Reading

ErrorHook = Callable[[str, BaseException], None]


class EventMeter(StreamMeter, Protocol):
    def on_event(self, ev: SSEEvent) -> None: ...


class _Tap:
    def __init__(
        self, decoder: ContentDecoder | None, on_error: ErrorHook, clock: Callable[[], float]
    ) -> None:
        self.decoder = decoder
        self.on_error = on_error
        self.clock = clock
        self.first_chunk_at: float | None = None
        self.ended = False
        self.broken = False

    def _decode(self, chunk: bytes, final: bool) -> bytes:
        if self.decoder is None:
            return chunk
        out = self.decoder.decode(chunk) if chunk else b""
        if final:
            out += self.decoder.flush()
        return out

    def _mark(self, chunk: bytes) -> None:
        if chunk and self.first_chunk_at is None:
            self.first_chunk_at = self.clock()
        if not chunk:
            self.ended = True


class PassThroughTap(_Tap):
    """Forwards bytes untouched; meters a decoded copy.

    The meter is made from the first decoded bytes (``make_meter(first_bytes)``), so that a stream
    sent without a content type can still be recognised by its framing.
    """

    def __init__(
        self,
        make_meter: Callable[[bytes], StreamMeter],
        decoder: ContentDecoder | None,
        on_error: ErrorHook,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(decoder, on_error, clock)
        self.make_meter = make_meter
        self.meter: StreamMeter | None = None

    def __call__(self, chunk: bytes) -> bytes:
        self._mark(chunk)
        if not self.broken:
            try:
                data = self._decode(chunk, final=not chunk)
                if data or not chunk:
                    if self.meter is None:
                        self.meter = self.make_meter(data)
                    self.meter.feed(data)
            except Exception as e:  # metering must never break the stream
                self.broken = True
                self.on_error("stream_metering", e)
        return chunk

    def reading(self) -> Reading:
        return self.meter.reading() if self.meter is not None else Reading()

    @property
    def complete(self) -> bool:
        return self.meter is not None and self.meter.complete


class UsageRewriteTap(_Tap):
    """Event-wise forwarding of an OpenAI-compatible chat stream (see the module docstring).

    ``annotate`` turns the reading so far into the ``x_spendmeter`` object; when ``drop_usage_chunk`` is set
    the usage-only chunk (``choices == []`` with ``usage``) is removed instead. With a content decoder the
    client receives the decoded stream (the caller removes the Content-Encoding header).
    """

    def __init__(
        self,
        meter: EventMeter,
        decoder: ContentDecoder | None,
        on_error: ErrorHook,
        *,
        drop_usage_chunk: bool,
        annotate: Callable[[Reading], dict[str, object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(decoder, on_error, clock)
        self.meter = meter
        self.sse = SSEDecoder()
        self.drop_usage_chunk = drop_usage_chunk
        self.annotate = annotate

    def __call__(self, chunk: bytes) -> list[bytes]:
        self._mark(chunk)
        try:
            data = self._decode(chunk, final=not chunk)
        except Exception as e:
            self.on_error("stream_decoding", e)
            self.decoder = None  # forward what comes as it is
            return [chunk]
        events = self.sse.feed(data) if data else []
        if not chunk:
            events += self.sse.flush()
        return [out for ev in events if (out := self._forward(ev))]

    def _forward(self, ev: SSEEvent) -> bytes:
        try:
            self.meter.on_event(ev)
            if b'"usage"' not in ev.raw or ev.comment_only:
                return ev.raw
            obj = orjson.loads(ev.data)
            if (
                not isinstance(obj, dict)
                or obj.get("choices") != []
                or not isinstance(obj.get("usage"), dict)
            ):
                return ev.raw
            if self.drop_usage_chunk:
                return b""
            obj["x_spendmeter"] = self.annotate(self.meter.reading())
            return b"data: " + orjson.dumps(obj) + b"\n\n"
        except Exception as e:
            self.on_error("stream_rewriting", e)
            return ev.raw

    def reading(self) -> Reading:
        return self.meter.reading()

    @property
    def complete(self) -> bool:
        return self.meter.complete
