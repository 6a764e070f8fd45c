"""Usage of Amazon Bedrock responses: Converse(Stream) and InvokeModel(WithResponseStream).

Converse reports ``inputTokens`` without the cache reads and writes (``cacheRead/WriteInputTokens``,
with legacy ``...Count`` copies counted once), and names no model: the reading leaves the model
unknown and callers fall back to the id in the path. In ConverseStream the usage is in the
``metadata`` event.

InvokeModel answers in the model vendor's own shape: Anthropic messages (read by the Anthropic
rules), Meta Llama (``prompt_token_count`` / ``generation_token_count``), Amazon Nova (Converse-like
``usage``), Titan, or OpenAI-shaped chat. In a stream the last chunk carries
``amazon-bedrock-invocationMetrics``, the vendor-neutral count, which wins when present (the
vendor's own numbers still supply the one-hour cache-write split and reasoning).
"""

from __future__ import annotations

from typing import Any

from spendmeter_proxy.parsing._anthropic import MessagesAccumulator
from spendmeter_proxy.parsing._common import as_int, error_of, load_json, sub
from spendmeter_proxy.parsing._openai import ChatAccumulator
from spendmeter_proxy.usage import Reading, Usage

__all__ = [
    "ConverseAccumulator",
    "InvokeAccumulator",
    "converse_usage",
    "parse_bedrock_converse_body",
    "parse_bedrock_invoke_body",
]


def _first(obj: dict[str, Any], *keys: str) -> int:
    for key in keys:
        if key in obj:
            return as_int(obj[key])
    return 0


def converse_usage(usage: dict[str, Any]) -> Usage:
    """Normalize a Bedrock ``usage`` (Converse, Nova) or ``invocationMetrics`` object."""
    cached = _first(usage, "cacheReadInputTokens", "cacheReadInputTokenCount")
    written = _first(usage, "cacheWriteInputTokens", "cacheWriteInputTokenCount")
    return Usage(
        input_tokens=_first(usage, "inputTokens", "inputTokenCount") + cached + written,
        output_tokens=_first(usage, "outputTokens", "outputTokenCount"),
        cached_input_tokens=cached,
        cache_write_tokens=written,
    )


def _message_error(obj: dict[str, Any]) -> str | None:
    """Bedrock error bodies are ``{"message": ...}`` (the type is in the x-amzn-ErrorType header)."""
    if isinstance(obj.get("message"), str) and "usage" not in obj and "output" not in obj:
        return "error"
    return error_of(obj)


class ConverseAccumulator:
    """Converse bodies and ConverseStream event payloads."""

    __slots__ = ("_error", "_usage")

    def __init__(self, provider: str = "aws.bedrock") -> None:
        self._usage: Usage | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        usage = sub(obj, "usage") or sub(sub(obj, "metadata"), "usage")
        if usage:
            self._usage = converse_usage(usage)
        elif event is None or event.endswith("Exception"):
            self._error = _message_error(obj) or self._error

    def reading(self) -> Reading:
        return Reading(usage=self._usage, error=self._error)


def parse_bedrock_converse_body(body: bytes, provider: str) -> Reading:
    """Read a Converse JSON body (ValueError if not JSON)."""
    acc = ConverseAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()


_METRICS = "amazon-bedrock-invocationMetrics"


class InvokeAccumulator:
    """InvokeModel bodies and the decoded ``chunk`` objects of InvokeModelWithResponseStream."""

    __slots__ = ("_anthropic", "_chat", "_error", "_llama", "_metrics", "_nova")

    def __init__(self, provider: str = "aws.bedrock") -> None:
        self._anthropic = MessagesAccumulator(provider)
        self._chat = ChatAccumulator(provider)
        self._llama: Usage | None = None
        self._nova: Usage | None = None
        self._metrics: Usage | None = None
        self._error: str | None = None

    def accept(self, event: str | None, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        metrics = sub(obj, _METRICS)
        if metrics:
            self._metrics = converse_usage(metrics)
        kind = obj.get("type")
        usage = sub(obj, "usage") or sub(sub(obj, "metadata"), "usage")
        if isinstance(kind, str):  # Anthropic messages and stream events
            self._anthropic.accept(event, obj)
        elif "prompt_token_count" in obj or "generation_token_count" in obj:
            self._accept_llama(obj)
        elif "inputTokens" in usage or "inputTokenCount" in usage:
            self._nova = converse_usage(usage)
        elif "prompt_tokens" in usage or "choices" in obj:
            self._chat.accept(event, obj)
        elif "inputTextTokenCount" in obj:  # Titan text
            results = obj.get("results")
            output = (
                sum(as_int(r.get("tokenCount")) for r in results if isinstance(r, dict))
                if isinstance(results, list)
                else 0
            )
            self._nova = Usage(input_tokens=as_int(obj["inputTextTokenCount"]), output_tokens=output)
        elif not metrics:
            self._error = _message_error(obj) or self._error

    def _accept_llama(self, obj: dict[str, Any]) -> None:
        before = self._llama or Usage()
        prompt = obj.get("prompt_token_count")
        generated = obj.get("generation_token_count")
        self._llama = Usage(
            input_tokens=as_int(prompt) if prompt is not None else before.input_tokens,
            output_tokens=as_int(generated) if generated is not None else before.output_tokens,
        )

    def reading(self) -> Reading:
        vendor = self._anthropic.reading()
        chat = self._chat.reading()
        usage = vendor.usage or chat.usage or self._nova or self._llama
        if self._metrics is not None:
            usage = Usage(
                input_tokens=self._metrics.input_tokens,
                output_tokens=self._metrics.output_tokens,
                cached_input_tokens=self._metrics.cached_input_tokens,
                cache_write_tokens=self._metrics.cache_write_tokens,
                cache_write_1h_tokens=min(
                    usage.cache_write_1h_tokens if usage else 0, self._metrics.cache_write_tokens
                ),
                reasoning_tokens=usage.reasoning_tokens if usage else 0,
            )
        return Reading(
            model=vendor.model or chat.model,
            usage=usage,
            error=self._error or vendor.error or chat.error,
        )


def parse_bedrock_invoke_body(body: bytes, provider: str) -> Reading:
    """Read an InvokeModel JSON body in the model vendor's shape (ValueError if not JSON)."""
    acc = InvokeAccumulator(provider)
    acc.accept(None, load_json(body))
    return acc.reading()
