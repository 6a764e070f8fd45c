"""Normalized token usage and what one LLM response says about itself.

Every provider counts tokens its own way; parsers translate their counters into `Usage`,
whose fields mean the same for every provider (see DESIGN.md "Normalized usage"):

- ``input_tokens``: every input token billed, cached and cache-written included;
- ``cached_input_tokens`` and ``cache_write_tokens`` are subsets of the input
  (``cache_write_1h_tokens`` is the part of the cache writes made with a one-hour TTL);
- ``output_tokens``: every output token billed, reasoning included; ``reasoning_tokens`` is a subset.

This module is pure data: no I/O, no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TOKEN_TYPES: tuple[str, ...] = ("input", "output", "cached_input", "cache_write", "reasoning")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, normalized (see the module docstring)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        """Input billed at the base input rate (never negative)."""
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)

    def by_type(self) -> dict[str, int]:
        """Counts keyed by the `type` label of ``spendmeter_tokens_total``."""
        return {
            "input": self.input_tokens,
            "output": self.output_tokens,
            "cached_input": self.cached_input_tokens,
            "cache_write": self.cache_write_tokens,
            "reasoning": self.reasoning_tokens,
        }


@dataclass(slots=True)
class Reading:
    """What one response (JSON body or whole stream) said about itself.

    ``usage`` is None when the response carried no usage at all (an error, a stream cut
    before its usage event). ``model`` is the answering model where the provider names one.
    """

    model: str | None = None
    usage: Usage | None = None
    reported_cost_usd: float | None = None
    traffic_type: str | None = None
    error: str | None = None
    extras: dict[str, object] = field(default_factory=dict)
