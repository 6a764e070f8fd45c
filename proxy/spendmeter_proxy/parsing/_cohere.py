"""Usage of Cohere chat responses (v2 ``/v2/chat``, and the v1 ``/v1/chat`` shape).

Cohere bills ``billed_units`` (v2 ``usage.billed_units``, v1 ``meta.billed_units``); the raw
``tokens`` include the chat template and are kept as extras only. Cohere also reports
``cached_tokens``, a subset of the raw count whose relation to the billed units is undocumented:
the normalized cached count stays 0 (the billed units already are what is charged) and the
reported number is kept as an extra. No model is named in the response. In a v2 stream the usage
arrives in the ``message-end`` event (``delta.usage``); in v1, in ``stream-end``.
"""

from __future__ import annotations

from typing import Any

from spendmeter_proxy.parsing._common import as_int, error_of, load_json, sub
from spendmeter_proxy.usage import Reading, Usage

__all__ = ["CohereAccumulator", "parse_cohere_chat_body"]


class CohereAccumulator:
    """Cohere chat bodies and stream events (SSE or newline-delimited JSON)."""

    __slots__ = ("_error", "_usage")

    def __init__(self, provider: str = "cohere") -> None:
        self._usage: dict[str, Any] | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        for usage in (
            sub(obj, "usage"),
            sub(sub(obj, "delta"), "usage"),
            sub(obj, "meta"),
            sub(sub(obj, "response"), "meta"),
        ):
            if "billed_units" in usage or "tokens" in usage:
                self._usage = usage
                return
        if isinstance(obj.get("message"), str) or obj.get("type") == "error":
            self._error = error_of(obj) or "error"

    def reading(self) -> Reading:
        reading = Reading(error=self._error)
        if self._usage is not None:
            billed = sub(self._usage, "billed_units")
            reading.usage = Usage(
                input_tokens=as_int(billed.get("input_tokens")),
                output_tokens=as_int(billed.get("output_tokens")),
            )
            raw = sub(self._usage, "tokens")
            reading.extras.update(
                raw_input_tokens=as_int(raw.get("input_tokens")),
                raw_output_tokens=as_int(raw.get("output_tokens")),
                reported_cached_tokens=as_int(self._usage.get("cached_tokens")),
            )
        return reading


def parse_cohere_chat_body(body: bytes, provider: str) -> Reading:
    """Read a Cohere chat JSON body (ValueError if not JSON)."""
    acc = CohereAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()
