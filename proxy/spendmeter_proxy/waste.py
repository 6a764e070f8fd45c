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
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

_ZERO = Decimal(0)
RETRY_HEADERS = ("x-stainless-retry-count", "x-retry-count", "x-retry-attempt")
_RETRY_HEADERS = frozenset(h.encode() for h in RETRY_HEADERS)


def call_digest(method: str, host: str, path: str, body: bytes) -> int:
    """A 64-bit digest identifying a call (as an int: the smallest thing to keep); never the body itself.

    Among the at most ``capacity`` digests kept, a collision has a chance of about 1 in 10^10.
    """
    h = hashlib.blake2b(digest_size=8)
    for part in (method.upper().encode(), host.lower().encode(), path.encode()):
        h.update(part)
        h.update(b"\0")
    h.update(body)
    return int.from_bytes(h.digest())


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
    """Remembers recent call digests and their outcomes: at most ``capacity``, for ``window`` seconds.

    Memory is what bounds this: a plain dict of digest -> time of the last outcome (oldest first) and, for the
    few calls that failed, a second dict of what their failed attempts cost.
    """

    def __init__(self, window: float = 600.0, capacity: int = 20_000) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: dict[int, float] = {}
        self._failed: dict[int, Decimal] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def classify(self, digest: int, retry_count: int, now: float) -> Verdict:
        """What an incoming call is, judged against the calls seen before it."""
        with self._lock:
            self._expire(now)
            if digest not in self._seen:
                return Verdict(retry=retry_count > 0)
            failed_cost = self._failed.get(digest)
            if failed_cost is None:
                return Verdict(duplicate=True) if retry_count == 0 else Verdict(retry=True)
            if failed_cost:
                self._failed[digest] = _ZERO  # charged to this retry; never twice
            return Verdict(retry=True, failed_cost_usd=failed_cost)

    def record(self, digest: int, succeeded: bool, cost_usd: Decimal | None, now: float) -> None:
        """Remember how a call ended: success, or failure with what it cost anyway."""
        with self._lock:
            self._seen.pop(digest, None)
            self._seen[digest] = now  # (re)inserted last: the dict stays ordered by time
            earlier = self._failed.pop(digest, None)
            if not succeeded:
                self._failed[digest] = (cost_usd or _ZERO) + (earlier or _ZERO)
            while len(self._seen) > self.capacity:
                self._forget(next(iter(self._seen)))

    def _forget(self, digest: int) -> None:
        del self._seen[digest]
        self._failed.pop(digest, None)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._seen:
            digest, at = next(iter(self._seen.items()))
            if at >= cutoff:
                break
            self._forget(digest)
