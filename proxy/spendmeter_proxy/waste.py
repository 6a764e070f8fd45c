"""Duplicate and retry detection (DESIGN.md "Duplicates and retries"), pure and bounded in memory.

A call is identified by a digest of method, host, path and body; only digests are kept, never bodies.

- A call identical to one answered successfully (2xx) within the window is a *duplicate*: a cache would have
  served it, so its whole cost is wasted.
- A call repeating one that failed (4xx, 5xx, cut off), or sent with an SDK retry header
  (``x-stainless-retry-count`` > 0), is a *retry*. What a retry wastes is what the failed attempts it repeats
  cost (a stream cut off half-way is paid for and thrown away); a rejected attempt that cost nothing wastes
  nothing, but the retry is still counted.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

_ZERO = Decimal(0)
RETRY_HEADERS = ("x-stainless-retry-count", "x-retry-count", "x-retry-attempt")
_RETRY_HEADERS = frozenset(h.encode() for h in RETRY_HEADERS)


def call_digest(method: str, host: str, path: str, body: bytes) -> bytes:
    """A 16-byte digest identifying a call; the body itself is never stored."""
    h = hashlib.blake2b(digest_size=16)
    for part in (method.upper().encode(), host.lower().encode(), path.encode()):
        h.update(part)
        h.update(b"\0")
    h.update(body)
    return h.digest()


def parse_retry_count(fields: Iterable[tuple[bytes, bytes]]) -> int:
    """The retry attempt an SDK announces in its headers (raw name/value pairs); 0 when none or unreadable."""
    for name, value in fields:
        if name.lower() in _RETRY_HEADERS:
            try:
                return max(0, int(value.strip()))
            except ValueError:
                return 0
    return 0


@dataclass(frozen=True, slots=True)
class Verdict:
    duplicate: bool = False
    retry: bool = False
    # what the earlier failed attempts that this call retries cost (only meaningful when retry)
    failed_cost_usd: Decimal = Decimal(0)


class WasteDetector:
    """Remembers recent call digests and their outcomes; at most ``capacity`` of them, for ``window`` seconds."""

    def __init__(self, window: float = 600.0, capacity: int = 20_000) -> None:
        self.window = window
        self.capacity = capacity
        # digest -> (time, what the failed attempts cost, or None after a success); tuples keep it small
        self._entries: OrderedDict[bytes, tuple[float, Decimal | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def classify(self, digest: bytes, retry_count: int, now: float) -> Verdict:
        """What an incoming call is, judged against the calls seen before it."""
        with self._lock:
            self._expire(now)
            entry = self._entries.get(digest)
            if entry is None:
                return Verdict(retry=retry_count > 0)
            at, failed_cost = entry
            if failed_cost is None:
                return Verdict(duplicate=True) if retry_count == 0 else Verdict(retry=True)
            if failed_cost:
                self._entries[digest] = (at, _ZERO)  # charged to this retry; never twice
            return Verdict(retry=True, failed_cost_usd=failed_cost)

    def record(self, digest: bytes, succeeded: bool, cost_usd: Decimal | None, now: float) -> None:
        """Remember how a call ended: success, or failure with what it cost anyway."""
        with self._lock:
            entry = self._entries.pop(digest, None)
            failed_cost: Decimal | None = None
            if not succeeded:
                earlier = entry[1] if entry is not None else None
                failed_cost = (cost_usd or _ZERO) + (earlier or _ZERO)
            self._entries[digest] = (now, failed_cost)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._entries:
            digest, (at, _) = next(iter(self._entries.items()))
            if at >= cutoff:
                break
            del self._entries[digest]
