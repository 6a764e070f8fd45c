"""Receipts: one JSON line per LLM call (DESIGN.md "Receipts").

A receipt holds counts, prices and identities, never prompt or completion text and never credentials.
`ReceiptWriter` appends lines to a file or standard output; a write failure is reported once and never
reaches the app's traffic.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import IO

import orjson

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Receipt:
    time: str
    request_id: str
    provider: str
    operation: str
    requested_model: str | None
    model: str | None
    status: int | None
    stream: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str | None
    cost_status: str
    price_source: str | None
    provider_reported_cost_usd: float | None
    duration_ms: float | None
    time_to_first_token_ms: float | None
    duplicate: bool
    retry: bool
    wasted_cost_usd: str | None
    error: str | None
    details: dict[
        str, object
    ]  # provider-specific counts (Gemini tool-use prompt, OpenRouter's upstream, ...)
    workload: str
    workload_kind: str
    namespace: str
    pod: str

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serializes dataclasses natively, far faster than asdict()


class ReceiptWriter:
    """Writes receipts as JSON lines to ``target`` (a path, or ``-`` for standard output)."""

    def __init__(self, target: str = "-") -> None:
        self.target = target
        self._lock = threading.Lock()
        self._failed = False
        self._stream: IO[bytes] = (
            sys.stdout.buffer if target == "-" else open(target, "ab", buffering=0)  # noqa: SIM115
        )

    def write(self, receipt: Receipt) -> None:
        line = receipt.to_json() + b"\n"
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError as e:
                if not self._failed:
                    logger.error("cannot write receipts to %s: %s", self.target, e)
                    self._failed = True

    def close(self) -> None:
        if self.target != "-":
            self._stream.close()
