"""Usage of Anthropic Messages responses (direct, on Vertex ``rawPredict``, inside Bedrock invoke).

Anthropic's ``input_tokens`` counts only the uncached input: cache reads and cache writes are
reported apart and added here; cache writes are split by TTL (``cache_creation.ephemeral_1h_*``
costs more). Thinking is inside ``output_tokens`` and not reported apart. In a stream,
``message_start`` carries the input side and a placeholder output count, and every
``message_delta`` usage is cumulative: its fields replace, never add. With server-side compaction
the top-level numbers describe only the last iteration, so ``usage.iterations`` is summed.
An ``error`` event can arrive inside a 200 stream.
"""

from __future__ import annotations

from typing import Any

from spendmeter_proxy.parsing._common import as_int, error_of, load_json, sub
from spendmeter_proxy.usage import Reading, Usage

__all__ = ["MessagesAccumulator", "anthropic_usage", "parse_anthropic_messages_body"]


def _one(usage: dict[str, Any]) -> Usage:
    cached = as_int(usage.get("cache_read_input_tokens"))
    written = as_int(usage.get("cache_creation_input_tokens"))
    written_1h = as_int(sub(usage, "cache_creation").get("ephemeral_1h_input_tokens"))
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")) + cached + written,
        output_tokens=as_int(usage.get("output_tokens")),
        cached_input_tokens=cached,
        cache_write_tokens=written,
        cache_write_1h_tokens=min(written_1h, written),
    )


def anthropic_usage(usage: dict[str, Any]) -> Usage:
    """Normalize an Anthropic ``usage`` object (summing compaction ``iterations`` when present)."""
    iterations = usage.get("iterations")
    if not isinstance(iterations, list) or not any(isinstance(i, dict) for i in iterations):
        return _one(usage)
    parts = [_one(i) for i in iterations if isinstance(i, dict)]
    return Usage(
        input_tokens=sum(p.input_tokens for p in parts),
        output_tokens=sum(p.output_tokens for p in parts),
        cached_input_tokens=sum(p.cached_input_tokens for p in parts),
        cache_write_tokens=sum(p.cache_write_tokens for p in parts),
        cache_write_1h_tokens=sum(p.cache_write_1h_tokens for p in parts),
    )


class MessagesAccumulator:
    """Anthropic message bodies and stream events (``message_start``, ``message_delta``, ``error``)."""

    __slots__ = ("_error", "_model", "_usage")

    def __init__(self, provider: str = "anthropic") -> None:
        self._model: str | None = None
        self._usage: dict[str, Any] | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_start":
            message = sub(obj, "message")
        elif kind == "message" or (kind is None and "usage" in obj):
            message = obj
        elif kind == "message_delta":
            usage = sub(obj, "usage")
            if usage:  # cumulative: the fields given replace the earlier ones
                merged = dict(self._usage or {})
                merged.update((k, v) for k, v in usage.items() if v is not None)
                self._usage = merged
            return
        else:
            self._error = error_of(obj) or self._error
            return
        model = message.get("model")
        if isinstance(model, str) and model:
            self._model = model
        usage = sub(message, "usage")
        if usage:
            self._usage = dict(usage)

    @property
    def seen_usage(self) -> bool:
        """Whether any usage arrived."""
        return self._usage is not None

    def reading(self) -> Reading:
        usage = anthropic_usage(self._usage) if self._usage is not None else None
        return Reading(model=self._model, usage=usage, error=self._error)


def parse_anthropic_messages_body(body: bytes, provider: str) -> Reading:
    """Read an Anthropic Messages JSON body (ValueError if not JSON)."""
    acc = MessagesAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()
