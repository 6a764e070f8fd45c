"""Budget blocks: which of this pod's LLM calls a SpendBudget with action ``block`` stops, and the answer.

The operator evaluates SpendBudgets and writes the blocks in force into the configuration the sidecars
already mount (the ``budgets.yaml`` key beside ``prices.yaml`` in the namespace's ConfigMap)::

    blocks:
      - budget: shop/team-daily          # namespace/name of the SpendBudget
        namespace: shop
        workloads: [chatbot]             # empty or absent: every workload of the namespace
        until: "2026-12-05T00:00:00Z"    # when the window rolls over
        limitUsd: 50
        spentUsd: 51.2

A matching proxy answers new LLM calls itself with HTTP 429 in the provider's own error shape, naming
the budget and when it resets; calls already in flight finish. A block ends when its ``until`` passes
(the window rolled over) or when the operator removes it (the limit was raised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from spendmeter_proxy.errorshapes import error_body
from spendmeter_proxy.identity import Identity

_FIELDS = {"budget", "namespace", "workloads", "until", "limitUsd", "spentUsd"}


@dataclass(frozen=True, slots=True)
class Block:
    budget: str
    namespace: str
    workloads: frozenset[str]
    until: datetime
    limit_usd: Decimal | None = None
    spent_usd: Decimal | None = None

    def applies(self, identity: Identity, now: datetime) -> bool:
        return (
            now < self.until
            and (not self.namespace or self.namespace == identity.namespace)
            and (not self.workloads or identity.workload in self.workloads)
        )

    def message(self) -> str:
        amounts = ""
        if self.limit_usd is not None and self.spent_usd is not None:
            amounts = f" (spent ${self.spent_usd:.2f} of ${self.limit_usd:.2f})"
        until = self.until.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return (
            f"spendmeter: the SpendBudget {self.budget} is exceeded{amounts}; "
            f"LLM calls from this workload are blocked until {until}."
        )


def _decimal(value: object, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: not a number: {value!r}") from None


def parse_blocks(doc: object, source: str) -> tuple[Block, ...]:
    """The blocks of a ``budgets.yaml`` document; ValueError naming the source and the field on bad input."""
    if doc is None:
        return ()
    if not isinstance(doc, Mapping) or not isinstance(doc.get("blocks", []), list):
        raise ValueError(f"{source}: expected a mapping with a 'blocks' list")
    blocks = []
    for i, raw in enumerate(doc.get("blocks") or []):
        where = f"{source}: blocks[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if not raw.get("budget") or "until" not in raw:
            raise ValueError(f"{where}: 'budget' and 'until' are required")
        until = raw["until"]
        try:
            when = until if isinstance(until, datetime) else datetime.fromisoformat(str(until))
        except ValueError:
            raise ValueError(f"{where}.until: not an ISO 8601 time: {until!r}") from None
        if when.tzinfo is None:
            raise ValueError(f"{where}.until: needs a time zone (e.g. 'Z'): {until!r}")
        workloads = raw.get("workloads") or []
        if not isinstance(workloads, list) or not all(isinstance(w, str) for w in workloads):
            raise ValueError(f"{where}.workloads: expected a list of names")
        blocks.append(
            Block(
                budget=str(raw["budget"]),
                namespace=str(raw.get("namespace") or ""),
                workloads=frozenset(workloads),
                until=when,
                limit_usd=_decimal(raw.get("limitUsd"), f"{where}.limitUsd"),
                spent_usd=_decimal(raw.get("spentUsd"), f"{where}.spentUsd"),
            )
        )
    return tuple(blocks)


def load_blocks(files: Sequence[Path]) -> tuple[Block, ...]:
    """Every block in the given budget files."""
    return tuple(
        b for path in files for b in parse_blocks(yaml.safe_load(path.read_text("utf-8")), str(path))
    )


def active_block(blocks: Sequence[Block], identity: Identity, now: datetime) -> Block | None:
    """The block in force for this pod now (the one lasting longest when several apply)."""
    applying = [b for b in blocks if b.applies(identity, now)]
    return max(applying, key=lambda b: b.until) if applying else None


def blocked_answer(block: Block, family: str, now: datetime) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of the 429 a blocked call gets, in the provider family's error shape."""
    body, extra = error_body(family, 429, block.message())
    retry_after = max(1, int((block.until - now).total_seconds()))
    headers = [
        ("content-type", "application/json"),
        ("retry-after", str(retry_after)),
        ("x-should-retry", "false"),  # SDKs would otherwise retry a budget that cannot change for hours
        ("x-spendmeter-blocked-by", block.budget),
        *extra,
    ]
    return 429, headers, body
