"""Incremental decoding of compressed response bodies (``Content-Encoding``) for metering.

Providers may compress JSON bodies and even SSE streams (gzip, deflate, br, zstd). The proxy passes
the encoded bytes to the client untouched; `ContentDecoder` only makes a decoded copy, chunk by
chunk, for the usage parsers. Chains such as ``gzip, br`` are decoded in reverse order of
application. Pure code: no I/O.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import brotli  # type: ignore[import-untyped]
from backports import zstd

__all__ = ["SUPPORTED_ENCODINGS", "ContentDecoder", "parse_content_encoding"]


class _Stage(Protocol):
    def decode(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zlib:
    """gzip (several members allowed) or deflate (zlib-wrapped or raw, detected from the first bytes)."""

    __slots__ = ("_gzip", "_head", "_obj")

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._head = b""
        self._obj: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None

    def decode(self, data: bytes) -> bytes:
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        out: list[bytes] = []
        try:
            while data:
                out.append(self._obj.decompress(data))
                if not (self._gzip and self._obj.eof):
                    break
                data = self._obj.unused_data
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise ValueError(f"invalid {'gzip' if self._gzip else 'deflate'} data: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        if self._obj is None:
            if not self._head:
                return b""
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            data, self._head = self._head, b""
            return self.decode(data) + self.flush()
        try:
            return self._obj.flush()
        except zlib.error as exc:
            raise ValueError(f"invalid {'gzip' if self._gzip else 'deflate'} data: {exc}") from exc


class _Brotli:
    __slots__ = ("_obj",)

    def __init__(self) -> None:
        self._obj = brotli.Decompressor()

    def decode(self, data: bytes) -> bytes:
        try:
            out: bytes = self._obj.process(data)
        except brotli.error as exc:
            raise ValueError(f"invalid br data: {exc}") from exc
        return out

    def flush(self) -> bytes:
        return b""


class _Zstd:
    """zstd; a body made of several frames is decoded frame after frame."""

    __slots__ = ("_obj",)

    def __init__(self) -> None:
        self._obj = zstd.ZstdDecompressor()

    def decode(self, data: bytes) -> bytes:
        out: list[bytes] = []
        try:
            while data:
                out.append(self._obj.decompress(data))
                if not self._obj.eof:
                    break
                data = self._obj.unused_data
                self._obj = zstd.ZstdDecompressor()
        except zstd.ZstdError as exc:
            raise ValueError(f"invalid zstd data: {exc}") from exc
        return b"".join(out)

    def flush(self) -> bytes:
        return b""


SUPPORTED_ENCODINGS: frozenset[str] = frozenset({"identity", "gzip", "x-gzip", "deflate", "br", "zstd"})


def parse_content_encoding(value: str) -> list[str]:
    """The codings of a Content-Encoding value, in the order they were applied (identity dropped)."""
    codings = [part.strip().lower() for part in value.split(",")]
    unknown = [c for c in codings if c and c not in SUPPORTED_ENCODINGS]
    if unknown:
        raise ValueError(f"unsupported content encoding {unknown[0]!r} in {value!r}")
    return [c for c in codings if c and c != "identity"]


def _stage(coding: str) -> _Stage:
    if coding in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if coding == "deflate":
        return _Zlib(gzip=False)
    if coding == "br":
        return _Brotli()
    return _Zstd()


class ContentDecoder:
    """Decode a body sent with the given ``Content-Encoding``, chunk by chunk.

    Raises ValueError at construction for an unknown coding, and from `decode` on corrupt data.
    """

    __slots__ = ("_stages",)

    def __init__(self, encoding: str) -> None:
        self._stages = [_stage(c) for c in reversed(parse_content_encoding(encoding))]

    def decode(self, chunk: bytes) -> bytes:
        """Return the decoded bytes this chunk made available."""
        for stage in self._stages:
            chunk = stage.decode(chunk)
        return chunk

    def flush(self) -> bytes:
        """End of body: return whatever is still held back."""
        data = b""
        for stage in self._stages:
            data = stage.decode(data) + stage.flush() if data else stage.flush()
        return data
