"""SpendBudgets (pure): what a budget selects, its current window, the PromQL of its spend, its state, its
status, and the blocks the sidecars read.

A budget's window is a calendar day or month in its time zone (``spec.timeZone``, an IANA name, UTC by
default); a window starts at the first instant of its local day or month, so a day is 23 or 25 hours long
across a daylight-saving change, and a midnight that a clock change skips starts the day at the first
instant after it. The spend in the window is what Prometheus's ``increase`` of the proxies'
``spendmeter_cost_usd_total`` counter gives over the time since the window started, for the budget's
namespace (Prometheus's target label), workloads and cost labels.

The state is ``exceeded`` once the limit is used up (spent >= limit), else ``warning`` once a threshold
(a percentage of the limit) is reached, else ``ok``; ``unknown`` until the first evaluation. A budget
with action ``block`` that is exceeded becomes one entry of the namespace's ``budgets.yaml`` (the schema
of `spendmeter_proxy.blocking`), lasting until its window ends, so the sidecars stop blocking at
roll-over by themselves even when the operator is down.
"""

from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from spendmeter_proxy.blocking import parse_blocks

from spendmeter_operator import conditions

GROUP, VERSION, PLURAL = "spendmeter.io", "v1alpha1", "spendbudgets"
BLOCKS_KEY = "budgets.yaml"  # the ConfigMap key beside prices.yaml
BLOCKS_HEADER = "# The SpendBudget blocks in force in this namespace; written by the spendmeter operator.\n"
COST_METRIC = "spendmeter_cost_usd_total"

Window = Literal["day", "month"]
WINDOWS: tuple[Window, ...] = ("day", "month")
State = Literal["unknown", "ok", "warning", "exceeded"]
Action = Literal["alert", "block"]
DEFAULT_THRESHOLDS = (80.0, 100.0)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({"namespace", "workload"})


@dataclass(frozen=True, slots=True)
class Budget:
    namespace: str
    name: str
    window: Window
    limit_usd: float
    zone: zoneinfo.ZoneInfo = field(default_factory=lambda: zoneinfo.ZoneInfo("UTC"))
    workloads: tuple[str, ...] = ()  # every workload of the namespace when empty
    cost_labels: Mapping[str, str] = field(default_factory=dict)
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    action: Action = "alert"
    generation: int = 0

    @property
    def key(self) -> str:
        """``namespace/name``, as blocks and metrics name the budget."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Span:
    """A budget window: from ``start`` (included) to ``end`` (excluded), both in UTC."""

    start: datetime.datetime
    end: datetime.datetime


@dataclass(frozen=True, slots=True)
class Evaluation:
    state: State
    percent: float  # spent as a percentage of the limit
    threshold: float | None  # the highest threshold reached, if any


def parse_key(body: Mapping[str, Any]) -> str:
    """``namespace/name`` of a SpendBudget as the API holds it."""
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def parse_time_zone(text: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone name such as ``Europe/Berlin`` or ``UTC``."""
    name = text.strip()
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r} (an IANA name such as Europe/Berlin or UTC)") from None


def parse_budget(body: Mapping[str, Any]) -> Budget:
    """A SpendBudget as the API holds it; ValueError naming the field for what the CRD schema cannot catch."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    window = spec.get("window")
    if window not in WINDOWS:
        raise ValueError(f"spec.window must be one of {', '.join(WINDOWS)} (got {window!r})")
    try:
        limit = float(spec["limitUSD"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"spec.limitUSD must be a number (got {spec.get('limitUSD')!r})") from None
    if not limit > 0 or not math.isfinite(limit):
        raise ValueError(f"spec.limitUSD must be above 0 (got {limit})")
    try:
        zone = parse_time_zone(str(spec.get("timeZone") or "UTC"))
    except ValueError as exc:
        raise ValueError(f"spec.timeZone: {exc}") from None
    labels = {str(k): str(v) for k, v in (spec.get("costLabels") or {}).items()}
    for name in labels:
        if not _LABEL_NAME.match(name) or name in _RESERVED_LABELS or name.startswith("__"):
            raise ValueError(f"spec.costLabels: {name!r} is not a cost label name (such as team)")
    thresholds = spec.get("alertThresholds")
    action: Action = "block" if spec.get("action") == "block" else "alert"
    if spec.get("action") not in (None, "alert", "block"):
        raise ValueError(f"spec.action must be alert or block (got {spec.get('action')!r})")
    return Budget(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        window=window,
        limit_usd=limit,
        zone=zone,
        workloads=tuple(sorted({str(w["name"]) for w in spec.get("workloads") or ()})),
        cost_labels=labels,
        thresholds=tuple(sorted(float(t) for t in thresholds))
        if thresholds is not None
        else DEFAULT_THRESHOLDS,
        action=action,
        generation=int(meta.get("generation") or 0),
    )


def window_of(instant: datetime.datetime, window: Window, zone: zoneinfo.ZoneInfo) -> Span:
    """The day or month of ``zone`` that ``instant`` (timezone-aware) falls in."""
    if instant.tzinfo is None:
        raise ValueError("the instant needs a time zone")
    local = instant.astimezone(zone).date()
    if window == "day":
        first, following = local, local + datetime.timedelta(days=1)
    else:
        first = local.replace(day=1)
        following = (first + datetime.timedelta(days=32)).replace(day=1)
    return Span(_first_instant(first, zone), _first_instant(following, zone))


def _first_instant(day: datetime.date, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """The first instant of the local ``day`` in UTC. Where the clock skips midnight, the wall time
    00:00 does not exist and (fold=0) is read with the offset before the change, which is the instant the
    skipped hour ends: the day's first instant. An ambiguous midnight takes its earlier instant (fold=0)."""
    return datetime.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(datetime.UTC)


def evaluate(spent_usd: float, limit_usd: float, thresholds: Iterable[float]) -> Evaluation:
    """The state of a budget that has spent ``spent_usd`` of ``limit_usd``."""
    percent = 100.0 * spent_usd / limit_usd
    reached = [t for t in thresholds if percent >= t]
    threshold = max(reached) if reached else None
    if spent_usd >= limit_usd:
        return Evaluation("exceeded", percent, threshold)
    return Evaluation("warning" if reached else "ok", percent, threshold)


def _quoted(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def spend_query(budget: Budget, seconds: int) -> str:
    """PromQL for the budget's spend over the last ``seconds`` (the time since its window started)."""
    matchers = [f"namespace={_quoted(budget.namespace)}"]
    if budget.workloads:
        names = "|".join(re.escape(w) for w in budget.workloads)
        matchers.append(f"workload=~{_quoted(names)}")
    matchers += [f"{k}={_quoted(v)}" for k, v in sorted(budget.cost_labels.items())]
    return f"sum(increase({COST_METRIC}{{{', '.join(matchers)}}}[{max(1, seconds)}s]))"


def seconds_since(start: datetime.datetime, now: datetime.datetime) -> int:
    return max(1, math.ceil((now - start).total_seconds()))


def block_entry(budget: Budget, spent_usd: float, until: datetime.datetime) -> dict[str, Any]:
    """The budget's entry in ``budgets.yaml``."""
    return {
        "budget": budget.key,
        "namespace": budget.namespace,
        "workloads": list(budget.workloads),
        "until": conditions.timestamp(until),
        "limitUsd": budget.limit_usd,
        "spentUsd": round(spent_usd, 6),
    }


def render_blocks(entries: Iterable[Mapping[str, Any]], now: datetime.datetime) -> str:
    """The ``budgets.yaml`` of a namespace: the entries not yet over, in budget order."""
    live = [
        dict(e)
        for e in entries
        if datetime.datetime.fromisoformat(str(e["until"]).replace("Z", "+00:00")) > now
    ]
    live.sort(key=lambda e: str(e["budget"]))
    return BLOCKS_HEADER + yaml.safe_dump({"blocks": live}, sort_keys=False, default_flow_style=False)


def parse_rendered_blocks(text: str, source: str) -> list[dict[str, Any]]:
    """The entries of a ``budgets.yaml`` this module rendered (to restore them after a restart); ValueError
    when the sidecars would not accept the file either."""
    doc = yaml.safe_load(text)
    parse_blocks(doc, source)
    return [dict(e) for e in (doc or {}).get("blocks") or ()]


def status(
    budget: Budget,
    spent_usd: float,
    evaluation: Evaluation,
    span: Span,
    now: datetime.datetime,
    old_conditions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The status after an evaluation that read ``spent_usd`` from Prometheus."""
    window = (
        f"the {budget.window} from {conditions.timestamp(span.start)} to {conditions.timestamp(span.end)}"
    )
    message = (
        f"spent ${spent_usd:.4f} of ${budget.limit_usd:.4f} ({evaluation.percent:.1f}%) in {window}: "
        f"{evaluation.state}"
    )
    if evaluation.threshold is not None:
        message += f" (threshold {evaluation.threshold:g}% reached)"
    new = [conditions.condition("Evaluated", True, "SpendRead", message, budget.generation, now)]
    if budget.action == "block":
        new.append(_blocking_condition(budget, evaluation.state == "exceeded", span.end, now))
    result: dict[str, Any] = {
        "state": evaluation.state,
        "spentUSD": round(spent_usd, 6),
        "percent": round(evaluation.percent, 2),
        "thresholdReached": evaluation.threshold,
        "windowStart": conditions.timestamp(span.start),
        "windowEnd": conditions.timestamp(span.end),
        "lastEvaluated": conditions.timestamp(now),
        "observedGeneration": budget.generation,
        "conditions": conditions.settled(old_conditions, new),
    }
    return result


def failed_status(
    reason: str,
    message: str,
    generation: int,
    now: datetime.datetime,
    old_status: Mapping[str, Any],
) -> dict[str, Any]:
    """The status after an evaluation that could not be made: the last state is kept, a condition says why."""
    state = old_status.get("state") or "unknown"
    since = old_status.get("lastEvaluated")
    kept = f"the state ({state}) is the one evaluated at {since}" if since else "the state is unknown"
    new = [conditions.condition("Evaluated", False, reason, f"{message}; {kept}", generation, now)]
    others = [c for c in old_status.get("conditions") or () if c.get("type") != "Evaluated"]
    return {
        "state": state,
        "conditions": [*others, *conditions.settled(old_status.get("conditions") or (), new)],
    }


def _blocking_condition(
    budget: Budget, blocking: bool, until: datetime.datetime, now: datetime.datetime
) -> dict[str, Any]:
    who = f"workloads {', '.join(budget.workloads)}" if budget.workloads else "every workload"
    if blocking:
        message = f"LLM calls of {who} in namespace {budget.namespace} are answered with HTTP 429 until "
        message += conditions.timestamp(until)
        return conditions.condition("Blocking", True, "LimitExceeded", message, budget.generation, now)
    message = f"the limit is not used up: LLM calls of {who} pass"
    return conditions.condition("Blocking", False, "WithinLimit", message, budget.generation, now)
