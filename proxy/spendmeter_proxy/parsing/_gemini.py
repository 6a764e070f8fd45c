"""Usage of Gemini ``generateContent`` responses (Gemini API and Vertex AI).

``promptTokenCount`` includes cached content (``cachedContentTokenCount``) but not the results of
built-in tools (``toolUsePromptTokenCount``, billed as input, added here); ``thoughtsTokenCount``
sits outside ``candidatesTokenCount`` and is billed as output (added, and counted as reasoning).
Every stream chunk repeats the cumulative ``usageMetadata``, so the last one wins (the prompt count
may even change between chunks). A non-SSE stream is a JSON array of the same chunks. Vertex's
``trafficType`` (ON_DEMAND, ON_DEMAND_FLEX, PROVISIONED...) changes the price and is kept.
"""

from __future__ import annotations

from typing import Any

from spendmeter_proxy.parsing._common import as_int, error_of, load_json
from spendmeter_proxy.usage import Reading, Usage

__all__ = ["GenerateAccumulator", "gemini_usage", "parse_gemini_generate_body"]


def gemini_usage(meta: dict[str, Any]) -> Usage:
    """Normalize a ``usageMetadata`` object."""
    thoughts = as_int(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=as_int(meta.get("promptTokenCount")) + as_int(meta.get("toolUsePromptTokenCount")),
        output_tokens=as_int(meta.get("candidatesTokenCount")) + thoughts,
        cached_input_tokens=as_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


class GenerateAccumulator:
    """``GenerateContentResponse`` bodies, stream chunks and JSON arrays of chunks."""

    __slots__ = ("_error", "_meta", "_model")

    def __init__(self, provider: str) -> None:
        self._model: str | None = None
        self._meta: dict[str, Any] | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if isinstance(obj, list):
            for item in obj:
                self.accept(event, item)
            return
        if not isinstance(obj, dict):
            return
        model = obj.get("modelVersion")
        if isinstance(model, str) and model:
            self._model = model
        meta = obj.get("usageMetadata")
        if isinstance(meta, dict) and meta:
            self._meta = meta
        self._error = error_of(obj) or self._error

    def reading(self) -> Reading:
        reading = Reading(model=self._model, error=self._error)
        if self._meta is not None:
            reading.usage = gemini_usage(self._meta)
            traffic = self._meta.get("trafficType")
            reading.traffic_type = traffic if isinstance(traffic, str) and traffic else None
            tool_use = as_int(self._meta.get("toolUsePromptTokenCount"))
            if tool_use:
                reading.extras["tool_use_prompt_tokens"] = tool_use
        return reading


def parse_gemini_generate_body(body: bytes, provider: str) -> Reading:
    """Read a ``generateContent`` JSON body, or a JSON array of stream chunks (ValueError if not JSON)."""
    acc = GenerateAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()
