"""Incremental decoding of Server-Sent Events (``text/event-stream``).

Streaming LLM APIs (OpenAI, Anthropic, Gemini, Mistral, OpenRouter, ...) send their answer as SSE.
`SSEDecoder` turns the bytes of such a stream, split at arbitrary points, into `SSEEvent` objects as
soon as each event is complete. Every event keeps the exact bytes it was made of (``raw``), so a
rewriter can forward the stream byte for byte and touch only the events it means to change: the
concatenation of the ``raw`` of every event returned by `SSEDecoder.feed` and `SSEDecoder.flush`
is exactly the input.

Line endings may be ``\\n``, ``\\r\\n`` or ``\\r`` (as the SSE specification allows), also mixed and
split across chunks. Undecodable bytes are replaced in ``data`` and kept as they were in ``raw``.
Pure code: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event of an SSE stream.

    ``event`` is the value of the ``event:`` field (None when absent); ``data`` joins the ``data:``
    lines with ``"\\n"``; ``raw`` holds the exact bytes of the event including the blank line that
    ended it; ``comment_only`` is True for a block without any field (only comments such as
    ``: OPENROUTER PROCESSING`` or stray blank lines), which carries nothing to read.
    """

    event: str | None
    data: str
    raw: bytes
    comment_only: bool


class SSEDecoder:
    """Turn SSE bytes into events, incrementally.

    `feed` returns the events that the new bytes completed and keeps the rest; `flush`, at the end
    of the stream, returns a last event that was not terminated by a blank line.
    """

    __slots__ = ("_buf", "_data", "_event", "_fields", "_first_line", "_line_start")

    def __init__(self) -> None:
        self._buf = bytearray()  # raw bytes of the event being read
        self._line_start = 0  # offset in _buf of the first line not yet parsed
        self._event: str | None = None
        self._data: list[str] = []
        self._fields = False
        self._first_line = True

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Add bytes; return the events they completed."""
        if not data:
            return []
        self._buf += data
        return self._parse(final=False)

    def flush(self) -> list[SSEEvent]:
        """End of stream: return an unterminated last event, if any."""
        events = self._parse(final=True)
        if self._line_start < len(self._buf):
            self._parse_line(bytes(self._buf[self._line_start :]))
            self._line_start = len(self._buf)
        if self._buf:
            events.append(self._take(len(self._buf)))
        return events

    def _parse(self, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        buf = self._buf
        pos = self._line_start
        end = len(buf)
        while pos < end:
            m = _LINE_END.search(buf, pos)
            if m is None:
                break
            eol = m.start()
            if buf[eol] == 0x0D:  # \r: either alone or the start of \r\n
                if eol + 1 < end:
                    nxt = eol + 2 if buf[eol + 1] == 0x0A else eol + 1
                elif final:
                    nxt = eol + 1
                else:
                    break  # wait: the next chunk may start with \n
            else:
                nxt = eol + 1
            if eol == pos:  # blank line: the event is complete
                self._line_start = nxt
                events.append(self._take(nxt))
                buf = self._buf
                pos = 0
                end = len(buf)
                continue
            self._parse_line(bytes(buf[pos:eol]))
            pos = nxt
            self._line_start = pos
        return events

    def _parse_line(self, line: bytes) -> None:
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if line.startswith(b":"):
            return  # comment
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        self._fields = True
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def _take(self, length: int) -> SSEEvent:
        raw = bytes(self._buf[:length])
        del self._buf[:length]
        self._line_start = 0
        event = SSEEvent(
            event=self._event, data="\n".join(self._data), raw=raw, comment_only=not self._fields
        )
        self._event = None
        self._data = []
        self._fields = False
        return event
