"""The operator's own metrics, served on its health port's ``/metrics``: each SpendBudget's spend, limit and
thresholds, as of its last evaluation, so that alert rules can fire per threshold.

Ratios are shares of the limit (1.0 = the limit): ``spendmeter_budget_spent_ratio`` is the spend, and
``spendmeter_budget_threshold_ratio`` has one series per threshold (label ``threshold``, the percentage),
so ``spendmeter_budget_threshold_ratio <= on(namespace, budget) group_left spendmeter_budget_spent_ratio``
is the set of thresholds reached. Only the replica that leads evaluates budgets, so only it has series.
The registry is passed in (the operator makes one; tests make their own).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Gauge

from spendmeter_operator.budgets import Budget

_LABELS = ("namespace", "budget")


class BudgetMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.spent_usd = Gauge(
            "spendmeter_budget_spent_usd",
            "Spend in the budget's current window (USD)",
            _LABELS,
            registry=registry,
        )
        self.limit_usd = Gauge(
            "spendmeter_budget_limit_usd", "The budget's limit (USD)", _LABELS, registry=registry
        )
        self.spent_ratio = Gauge(
            "spendmeter_budget_spent_ratio",
            "Spend as a share of the limit (1 = the limit)",
            _LABELS,
            registry=registry,
        )
        self.threshold_ratio = Gauge(
            "spendmeter_budget_threshold_ratio",
            "Each alert threshold of the budget as a share of its limit",
            (*_LABELS, "threshold"),
            registry=registry,
        )
        self._thresholds: dict[tuple[str, str], tuple[float, ...]] = {}

    def observe(self, budget: Budget, spent_usd: float) -> None:
        labels = (budget.namespace, budget.name)
        self.spent_usd.labels(*labels).set(spent_usd)
        self.limit_usd.labels(*labels).set(budget.limit_usd)
        self.spent_ratio.labels(*labels).set(spent_usd / budget.limit_usd)
        for old in set(self._thresholds.get(labels, ())) - set(budget.thresholds):
            self.threshold_ratio.remove(*labels, f"{old:g}")
        for threshold in budget.thresholds:
            self.threshold_ratio.labels(*labels, f"{threshold:g}").set(threshold / 100)
        self._thresholds[labels] = budget.thresholds

    def forget(self, namespace: str, name: str) -> None:
        labels = (namespace, name)
        for gauge in (self.spent_usd, self.limit_usd, self.spent_ratio):
            with contextlib.suppress(KeyError):  # never evaluated
                gauge.remove(*labels)
        for threshold in self._thresholds.pop(labels, ()):
            self.threshold_ratio.remove(*labels, f"{threshold:g}")
