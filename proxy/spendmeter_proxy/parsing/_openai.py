"""Usage of OpenAI-shaped responses: Chat Completions, legacy Completions, Embeddings, Responses.

Chat Completions is the lingua franca (OpenAI, Azure, Groq, Mistral, DeepSeek, xAI, OpenRouter,
Cerebras, vLLM, ...): ``prompt_tokens`` includes cached and cache-written tokens and
``completion_tokens`` includes reasoning. Known deviations, handled here:

- xAI leaves reasoning out of ``completion_tokens``; it is detected from ``total_tokens`` (equal to
  prompt + completion + reasoning) or, without a total, from the provider id;
- DeepSeek repeats the cached count as ``prompt_cache_hit_tokens`` and Groq repeats the usage in
  ``x_groq.usage``: each is counted once;
- streams carry usage in a final chunk (or, for xAI, running totals in every chunk): the last
  usage seen wins, never a sum;
- OpenRouter reports the USD charged (``usage.cost``) and may send an ``error`` with the usage.

The Responses API reads usage only from ``response.completed`` / ``incomplete`` / ``failed``.
"""

from __future__ import annotations

from typing import Any

from spendmeter_proxy.parsing._common import as_int, error_of, load_json, sub
from spendmeter_proxy.usage import Reading, Usage

__all__ = [
    "ChatAccumulator",
    "ResponsesAccumulator",
    "chat_usage",
    "parse_openai_chat_body",
    "parse_openai_responses_body",
    "responses_usage",
]


def chat_usage(usage: dict[str, Any], provider: str) -> Usage:
    """Normalize a Chat Completions (or Completions, Embeddings) ``usage`` object."""
    prompt = as_int(usage.get("prompt_tokens"))
    completion = as_int(usage.get("completion_tokens"))
    prompt_details = sub(usage, "prompt_tokens_details")
    reasoning = as_int(sub(usage, "completion_tokens_details").get("reasoning_tokens"))
    cached = as_int(prompt_details.get("cached_tokens")) or as_int(usage.get("prompt_cache_hit_tokens"))
    total = usage.get("total_tokens")
    if reasoning and (
        as_int(total) == prompt + completion + reasoning if isinstance(total, int) else provider == "x_ai"
    ):
        completion += reasoning  # reasoning reported outside completion_tokens (xAI)
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=cached,
        cache_write_tokens=as_int(prompt_details.get("cache_write_tokens")),
        reasoning_tokens=reasoning,
    )


def _cost(usage: dict[str, Any]) -> float | None:
    cost = usage.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        return float(cost)
    return None


class ChatAccumulator:
    """Chat Completions bodies and stream chunks (also Completions and Embeddings bodies)."""

    __slots__ = ("_error", "_model", "_provider", "_upstream", "_usage")

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._model: str | None = None
        self._usage: dict[str, Any] | None = None
        self._error: str | None = None
        self._upstream: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        model = obj.get("model")
        if isinstance(model, str) and model:
            self._model = model
        usage = obj.get("usage")
        if not isinstance(usage, dict) or not usage:
            usage = sub(obj, "x_groq").get("usage")
        if isinstance(usage, dict) and usage:
            self._usage = usage
        error = error_of(obj)
        if error:
            self._error = error
        upstream = obj.get("provider")
        if isinstance(upstream, str) and upstream:
            self._upstream = upstream

    def reading(self) -> Reading:
        reading = Reading(model=self._model, error=self._error)
        if self._usage is not None:
            reading.usage = chat_usage(self._usage, self._provider)
            reading.reported_cost_usd = _cost(self._usage)
        if self._upstream:
            reading.extras["upstream_provider"] = self._upstream
        return reading


def parse_openai_chat_body(body: bytes, provider: str) -> Reading:
    """Read a Chat Completions, Completions or Embeddings JSON body (ValueError if not JSON)."""
    acc = ChatAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()


def responses_usage(usage: dict[str, Any]) -> Usage:
    """Normalize a Responses API ``usage`` object (cached, cache writes and reasoning included)."""
    input_details = sub(usage, "input_tokens_details")
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cached_input_tokens=as_int(input_details.get("cached_tokens")),
        cache_write_tokens=as_int(input_details.get("cache_write_tokens")),
        reasoning_tokens=as_int(sub(usage, "output_tokens_details").get("reasoning_tokens")),
    )


_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesAccumulator:
    """Responses API bodies (a ``response`` object) and stream events (``response.*``)."""

    __slots__ = ("_error", "_model", "_usage")

    def __init__(self, provider: str) -> None:
        self._model: str | None = None
        self._usage: Usage | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            response = sub(obj, "response")
            final = kind in _FINAL_EVENTS
        elif "type" not in obj and ("usage" in obj or "object" in obj):
            response = obj  # a whole response body
            final = True
        else:
            self._error = error_of(obj) or self._error
            return
        model = response.get("model")
        if isinstance(model, str) and model:
            self._model = model
        usage = response.get("usage")
        if final and isinstance(usage, dict):
            self._usage = responses_usage(usage)
        if final:
            self._error = error_of(response) or self._error

    def reading(self) -> Reading:
        return Reading(model=self._model, usage=self._usage, error=self._error)


def parse_openai_responses_body(body: bytes, provider: str) -> Reading:
    """Read a Responses API JSON body (ValueError if not JSON)."""
    acc = ResponsesAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()
