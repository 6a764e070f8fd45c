"""HTTP content-codings (gzip, br, zstd, deflate) applied piece by piece, so a compressed stream still
delivers every event the moment it is sent: each piece is compressed and flushed on its own."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli  # type: ignore[import-untyped]

try:
    from compression.zstd import ZstdCompressor  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    from backports.zstd import ZstdCompressor  # type: ignore[import-not-found, unused-ignore]

CODINGS = ("gzip", "br", "zstd", "deflate")


def accepts(accept_encoding: str | None, coding: str) -> bool:
    """Whether an Accept-Encoding header value allows ``coding`` (a listed name or ``*`` with q > 0)."""
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in (coding, "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class StreamEncoder:
    """Compresses a body in pieces; `encode` returns bytes the client can decode up to that piece."""

    def __init__(self, coding: str) -> None:
        if coding not in CODINGS:
            raise ValueError(f"unknown content-coding {coding!r} (known: {', '.join(CODINGS)})")
        self.coding = coding
        self._encode: Callable[[bytes], bytes]
        self._finish: Callable[[], bytes]
        if coding in ("gzip", "deflate"):
            z = zlib.compressobj(wbits=31 if coding == "gzip" else 15)
            self._encode = lambda data: z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
            self._finish = z.flush
        elif coding == "br":
            b = brotli.Compressor()
            self._encode = lambda data: bytes(b.process(data)) + bytes(b.flush())
            self._finish = lambda: bytes(b.finish())
        else:
            c = ZstdCompressor()
            self._encode = lambda data: bytes(c.compress(data, ZstdCompressor.FLUSH_BLOCK))
            self._finish = lambda: bytes(c.flush(ZstdCompressor.FLUSH_FRAME))

    def encode(self, data: bytes) -> bytes:
        return self._encode(data)

    def finish(self) -> bytes:
        return self._finish()
