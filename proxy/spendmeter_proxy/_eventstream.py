"""Incremental decoding (and encoding) of AWS event streams (``application/vnd.amazon.eventstream``).

Bedrock's ConverseStream and InvokeModelWithResponseStream answer with this binary framing instead
of SSE. Each message is::

    total length (u32) | headers length (u32) | prelude CRC32 (u32) | headers | payload | message CRC32

with big-endian integers and CRC32 as in `zlib.crc32`. `EventStreamDecoder.feed` returns the frames
completed by the bytes given, whatever the split points; a CRC mismatch or an impossible length
raises ValueError (the stream cannot be trusted past that point). `encode_frame` builds a frame, for
tests and for the provider stand-in. Pure code: no I/O.
"""

from __future__ import annotations

import datetime
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["MAX_FRAME_LENGTH", "EventStreamDecoder", "Frame", "HeaderValue", "encode_frame"]

HeaderValue = bool | int | bytes | str | datetime.datetime | uuid.UUID

MAX_FRAME_LENGTH = 24 * 1024 * 1024
"""Longest frame accepted (AWS allows 16 MiB payloads and 128 KiB of headers)."""

_PRELUDE = struct.Struct(">III")
_MIN_LENGTH = _PRELUDE.size + 4

_TRUE, _FALSE, _BYTE, _SHORT, _INT, _LONG, _BYTES, _STRING, _TIMESTAMP, _UUID = range(10)
_FIXED = {_BYTE: struct.Struct(">b"), _SHORT: struct.Struct(">h"), _INT: struct.Struct(">i")}
_INT64 = struct.Struct(">q")
_U16 = struct.Struct(">H")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class Frame:
    """One event-stream message: its headers (``:event-type``, ``:message-type``, ...) and payload."""

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""


def _parse_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    end = len(data)
    try:
        while pos < end:
            name_len = data[pos]
            name = data[pos + 1 : pos + 1 + name_len].decode("utf-8")
            pos += 1 + name_len
            kind = data[pos]
            pos += 1
            value: HeaderValue
            if kind == _TRUE:
                value = True
            elif kind == _FALSE:
                value = False
            elif kind in _FIXED:
                fmt = _FIXED[kind]
                value = fmt.unpack_from(data, pos)[0]
                pos += fmt.size
            elif kind in (_LONG, _TIMESTAMP):
                number = _INT64.unpack_from(data, pos)[0]
                pos += 8
                value = number if kind == _LONG else _EPOCH + datetime.timedelta(milliseconds=number)
            elif kind in (_BYTES, _STRING):
                size = _U16.unpack_from(data, pos)[0]
                raw = data[pos + 2 : pos + 2 + size]
                if len(raw) != size:
                    raise ValueError("header value runs past the headers")
                pos += 2 + size
                value = raw if kind == _BYTES else raw.decode("utf-8")
            elif kind == _UUID:
                raw = data[pos : pos + 16]
                if len(raw) != 16:
                    raise ValueError("header value runs past the headers")
                pos += 16
                value = uuid.UUID(bytes=raw)
            else:
                raise ValueError(f"unknown header value type {kind}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed event-stream headers: {exc}") from exc
    return headers


class EventStreamDecoder:
    """Turn event-stream bytes into `Frame` objects, incrementally, checking both CRCs."""

    __slots__ = ("_buf", "_failed")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._failed = False

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return the frames they completed. Raise ValueError on corrupt framing."""
        if self._failed:
            raise ValueError("event stream already failed an integrity check")
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= _PRELUDE.size:
                total, headers_len, prelude_crc = _PRELUDE.unpack_from(buf, pos)
                if zlib.crc32(buf[pos : pos + 8]) != prelude_crc:
                    raise ValueError("event-stream prelude CRC mismatch")
                if total < _MIN_LENGTH or total > MAX_FRAME_LENGTH:
                    raise ValueError(f"event-stream frame length {total} out of range")
                if headers_len > total - _MIN_LENGTH:
                    raise ValueError(
                        f"event-stream headers length {headers_len} exceeds frame length {total}"
                    )
                if len(buf) - pos < total:
                    break
                body_end = pos + total - 4
                (message_crc,) = struct.unpack_from(">I", buf, body_end)
                if zlib.crc32(buf[pos:body_end]) != message_crc:
                    raise ValueError("event-stream message CRC mismatch")
                headers_start = pos + _PRELUDE.size
                payload_start = headers_start + headers_len
                frames.append(
                    Frame(
                        headers=_parse_headers(bytes(buf[headers_start:payload_start])),
                        payload=bytes(buf[payload_start:body_end]),
                    )
                )
                pos += total
        except ValueError:
            self._failed = True
            self._buf = bytearray()
            raise
        del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)


def _encode_header(name: str, value: HeaderValue) -> bytes:
    encoded_name = name.encode("utf-8")
    if not 0 < len(encoded_name) < 256:
        raise ValueError(f"header name length must be 1..255 bytes: {name!r}")
    head = bytes([len(encoded_name)]) + encoded_name
    if isinstance(value, bool):
        return head + bytes([_TRUE if value else _FALSE])
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return head + bytes([_INT]) + _FIXED[_INT].pack(value)
        return head + bytes([_LONG]) + _INT64.pack(value)
    if isinstance(value, datetime.datetime):
        millis = (value - _EPOCH) // datetime.timedelta(milliseconds=1)
        return head + bytes([_TIMESTAMP]) + _INT64.pack(millis)
    if isinstance(value, uuid.UUID):
        return head + bytes([_UUID]) + value.bytes
    kind, raw = (_BYTES, value) if isinstance(value, bytes) else (_STRING, value.encode("utf-8"))
    if len(raw) > 0xFFFF:
        raise ValueError(f"header {name!r} value longer than 65535 bytes")
    return head + bytes([kind]) + _U16.pack(len(raw)) + raw


def encode_frame(headers: Mapping[str, HeaderValue], payload: bytes) -> bytes:
    """Build one event-stream message (ints become int32, or int64 when they do not fit)."""
    encoded = b"".join(_encode_header(name, value) for name, value in headers.items())
    total = _MIN_LENGTH + len(encoded) + len(payload)
    if total > MAX_FRAME_LENGTH:
        raise ValueError(f"event-stream frame of {total} bytes is too long")
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))
