"""Evaluating SpendBudgets: read a budget's spend in its current window from Prometheus, and turn it into
the budget's status, its metrics and (for action ``block``) the block the namespace's sidecars read.

When Prometheus cannot be asked, the budget keeps its state (and any block, which still ends with its
window) and an ``Evaluated=False`` condition says why. The pure parts are in `spendmeter_operator.budgets`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from spendmeter_operator import budgets
from spendmeter_operator.metrics import BudgetMetrics
from spendmeter_operator.querying import Prometheus, QueryError

logger = logging.getLogger(__name__)


class Blocks(Protocol):
    """Where blocks go: the ConfigMap reconciler."""

    def set_block(self, namespace: str, budget: str, entry: Mapping[str, Any] | None) -> bool: ...

    async def trigger(self) -> None: ...


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class BudgetEvaluator:
    def __init__(
        self,
        prometheus: Prometheus | None,
        blocks: Blocks,
        metrics: BudgetMetrics,
        clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        self.prometheus = prometheus
        self.blocks = blocks
        self.metrics = metrics
        self.clock = clock

    async def evaluate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The budget's new status (a merge patch); the block and metrics are updated on the way."""
        now = self.clock()
        old = dict(body.get("status") or {})
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        try:
            budget = budgets.parse_budget(body)
        except ValueError as exc:
            return budgets.failed_status("InvalidBudget", str(exc), generation, now, old)
        if self.prometheus is None:
            message = "the operator was started without --prometheus-url, so budgets are not evaluated"
            return budgets.failed_status("NoPrometheus", message, generation, now, old)
        span = budgets.window_of(now, budget.window, budget.zone)
        query = budgets.spend_query(budget, budgets.seconds_since(span.start, now))
        try:
            samples = await asyncio.to_thread(self.prometheus.query, query, now)
        except QueryError as exc:
            reason = "PrometheusUnreachable" if str(exc).startswith("cannot reach") else "QueryFailed"
            logger.warning("SpendBudget %s not evaluated: %s", budget.key, exc)
            return budgets.failed_status(reason, str(exc), generation, now, old)
        spent = sum(s.value for s in samples)
        evaluation = budgets.evaluate(spent, budget.limit_usd, budget.thresholds)
        self.metrics.observe(budget, spent)
        if evaluation.state != old.get("state"):
            logger.info("SpendBudget %s: %s (%.1f%% of $%g).", budget.key, evaluation.state,
                        evaluation.percent, budget.limit_usd)  # fmt: skip
        blocking = budget.action == "block" and evaluation.state == "exceeded"
        entry = budgets.block_entry(budget, spent, span.end) if blocking else None
        if self.blocks.set_block(budget.namespace, budget.key, entry):
            await self.blocks.trigger()
        return budgets.status(budget, spent, evaluation, span, now, old.get("conditions") or ())

    async def forget(self, namespace: str, name: str) -> None:
        """The budget is gone: its metrics and its block go too."""
        self.metrics.forget(namespace, name)
        if self.blocks.set_block(namespace, f"{namespace}/{name}", None):
            await self.blocks.trigger()
