"""SpendBudget logic without a cluster: windows (time zones, daylight-saving changes, month ends), states
and thresholds, the spend query, the status and the blocks file the sidecars read."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from spendmeter_operator import budgets
from spendmeter_proxy.blocking import active_block, parse_blocks
from spendmeter_proxy.identity import Identity

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
SANTIAGO = zoneinfo.ZoneInfo("America/Santiago")  # its clocks skip midnight when summer time starts
UTC_ZONE = zoneinfo.ZoneInfo("UTC")


def body(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {"window": "day", "limitUSD": 50}
    return {
        "metadata": {"namespace": "shop", "name": "team-daily", "generation": 3},
        "spec": {**base, **spec},
    }


def test_a_day_in_utc_runs_from_midnight_to_midnight() -> None:
    span = budgets.window_of(datetime(2026, 12, 4, 15, 30, tzinfo=UTC), "day", UTC_ZONE)
    assert span == budgets.Span(datetime(2026, 12, 4, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC))


def test_a_day_in_berlin_starts_at_its_local_midnight() -> None:
    span = budgets.window_of(datetime(2026, 12, 4, 23, 30, tzinfo=UTC), "day", BERLIN)  # 00:30 on the 5th
    assert span.start == datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
    assert span.end == datetime(2026, 12, 5, 23, 0, tzinfo=UTC)


def test_days_across_daylight_saving_changes_are_23_and_25_hours_long() -> None:
    spring = budgets.window_of(datetime(2026, 3, 29, 12, tzinfo=UTC), "day", BERLIN)
    autumn = budgets.window_of(datetime(2026, 10, 25, 12, tzinfo=UTC), "day", BERLIN)
    assert spring.end - spring.start == timedelta(hours=23)
    assert spring.start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert autumn.end - autumn.start == timedelta(hours=25)
    assert autumn.end == datetime(2026, 10, 25, 23, tzinfo=UTC)


def test_a_day_whose_midnight_is_skipped_starts_when_the_clock_jumps() -> None:
    # Chile's summer time began on 2026-09-06: clocks went from 00:00 (UTC-4) straight to 01:00 (UTC-3).
    span = budgets.window_of(datetime(2026, 9, 6, 15, tzinfo=UTC), "day", SANTIAGO)
    assert span.start == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert span.start.astimezone(SANTIAGO).hour == 1
    assert span.end - span.start == timedelta(hours=23)


@pytest.mark.parametrize(
    ("instant", "start", "end"),
    [
        (datetime(2026, 1, 31, 23, 59, tzinfo=UTC), datetime(2026, 1, 1), datetime(2026, 2, 1)),
        (datetime(2028, 2, 29, 12, tzinfo=UTC), datetime(2028, 2, 1), datetime(2028, 3, 1)),
        (datetime(2026, 12, 31, 12, tzinfo=UTC), datetime(2026, 12, 1), datetime(2027, 1, 1)),
        (datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC), datetime(2026, 4, 1), datetime(2026, 5, 1)),
    ],
)
def test_months_end_on_their_last_day(instant: datetime, start: datetime, end: datetime) -> None:
    span = budgets.window_of(instant, "month", UTC_ZONE)
    assert (span.start, span.end) == (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))


def test_a_month_in_new_york_spans_the_summer_time_change() -> None:
    span = budgets.window_of(datetime(2026, 3, 31, 12, tzinfo=UTC), "month", NEW_YORK)
    assert span.start == datetime(2026, 3, 1, 5, tzinfo=UTC)  # EST
    assert span.end == datetime(2026, 4, 1, 4, tzinfo=UTC)  # EDT
    first_of_april_early = datetime(2026, 4, 1, 3, tzinfo=UTC)  # still March 31st in New York
    assert budgets.window_of(first_of_april_early, "month", NEW_YORK) == span


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.sampled_from([UTC_ZONE, BERLIN, NEW_YORK, SANTIAGO, zoneinfo.ZoneInfo("Australia/Lord_Howe")]),
    st.sampled_from(budgets.WINDOWS),
)
def test_every_instant_lies_in_its_window_and_the_next_window_follows(
    instant: datetime, zone: zoneinfo.ZoneInfo, window: budgets.Window
) -> None:
    span = budgets.window_of(instant, window, zone)
    assert span.start <= instant < span.end
    assert budgets.window_of(span.end, window, zone).start == span.end
    assert budgets.window_of(span.start - timedelta(microseconds=1), window, zone).end == span.start


@pytest.mark.parametrize(
    ("spent", "state", "threshold"),
    [
        (0.0, "ok", None),
        (39.99, "ok", None),
        (40.0, "warning", 80.0),
        (49.99, "warning", 80.0),
        (50.0, "exceeded", 100.0),
        (75.0, "exceeded", 100.0),
    ],
)
def test_state_follows_spend_against_limit_and_thresholds(spent: float, state: str, threshold: float) -> None:
    result = budgets.evaluate(spent, 50.0, [80, 100])
    assert (result.state, result.threshold) == (state, threshold)
    assert result.percent == pytest.approx(spent * 2)


def test_each_threshold_below_the_limit_is_a_warning_and_the_highest_reached_is_named() -> None:
    assert budgets.evaluate(30, 100, [25, 50, 90]).threshold == 25
    assert budgets.evaluate(95, 100, [25, 50, 90]) == budgets.Evaluation("warning", 95.0, 90)
    assert budgets.evaluate(100, 100, []).state == "exceeded"
    assert budgets.evaluate(130, 100, [150]).state == "exceeded"


def test_a_budget_is_read_from_its_resource_with_defaults() -> None:
    budget = budgets.parse_budget(body())
    assert budget.key == "shop/team-daily"
    assert (budget.window, budget.limit_usd, budget.zone.key) == ("day", 50.0, "UTC")
    assert budget.thresholds == (80.0, 100.0) and budget.action == "alert" and budget.generation == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"timeZone": "Mars/Olympus"}, "spec.timeZone: unknown time zone 'Mars/Olympus'"),
        ({"window": "week"}, "spec.window must be one of day, month"),
        ({"limitUSD": 0}, "spec.limitUSD must be above 0"),
        ({"costLabels": {"namespace": "x"}}, "spec.costLabels: 'namespace' is not a cost label name"),
        ({"costLabels": {"cost-center": "x"}}, "'cost-center' is not a cost label name"),
    ],
)
def test_budgets_the_schema_cannot_catch_are_refused_with_the_field(
    spec: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as error:
        budgets.parse_budget(body(**spec))
    assert message in str(error.value)


def test_the_spend_query_selects_namespace_workloads_and_cost_labels() -> None:
    spec = {"workloads": [{"name": "chat.bot"}, {"name": "indexer"}], "costLabels": {"team": 'se"arch'}}
    query = budgets.spend_query(budgets.parse_budget(body(**spec)), 3600)
    assert query == (
        'sum(increase(spendmeter_cost_usd_total{namespace="shop", workload=~"chat\\\\.bot|indexer", '
        'team="se\\"arch"}[3600s]))'
    )
    assert "workload" not in budgets.spend_query(budgets.parse_budget(body()), 10)


def test_an_exceeded_blocking_budget_is_a_block_the_sidecar_applies_until_the_window_ends() -> None:
    budget = budgets.parse_budget(
        body(action="block", workloads=[{"name": "chatbot"}], timeZone="Europe/Berlin")
    )
    now = datetime(2026, 12, 4, 15, tzinfo=UTC)
    span = budgets.window_of(now, budget.window, budget.zone)
    text = budgets.render_blocks([budgets.block_entry(budget, 51.2, span.end)], now)
    (block,) = parse_blocks(yaml.safe_load(text), "budgets.yaml")
    chatbot = Identity("chatbot", "Deployment", "shop", "chatbot-1")
    assert active_block([block], chatbot, now) is block
    assert active_block([block], Identity("indexer", "Deployment", "shop", "i-1"), now) is None
    assert block.until == datetime(2026, 12, 4, 23, tzinfo=UTC)
    assert "shop/team-daily" in block.message() and "$51.20 of $50.00" in block.message()
    assert budgets.parse_rendered_blocks(text, "cm") == [budgets.block_entry(budget, 51.2, span.end)]


def test_blocks_over_are_left_out_of_the_file() -> None:
    budget = budgets.parse_budget(body(action="block"))
    entry = budgets.block_entry(budget, 60, datetime(2026, 12, 5, tzinfo=UTC))
    assert (
        parse_blocks(yaml.safe_load(budgets.render_blocks([entry], datetime(2026, 12, 5, tzinfo=UTC))), "b")
        == ()
    )
    assert (
        len(
            parse_blocks(
                yaml.safe_load(budgets.render_blocks([entry], datetime(2026, 12, 4, tzinfo=UTC))), "b"
            )
        )
        == 1
    )


def test_status_names_spend_share_state_and_window_and_keeps_transition_times() -> None:
    budget = budgets.parse_budget(body(action="block"))
    now = datetime(2026, 12, 4, 15, tzinfo=UTC)
    span = budgets.window_of(now, budget.window, budget.zone)
    first = budgets.status(budget, 45.0, budgets.evaluate(45.0, 50.0, budget.thresholds), span, now)
    assert first["state"] == "warning" and first["percent"] == 90.0 and first["spentUSD"] == 45.0
    assert (first["windowStart"], first["windowEnd"]) == ("2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z")
    evaluated, blocking = first["conditions"]
    assert evaluated["status"] == "True" and "$45.0000 of $50.0000 (90.0%)" in evaluated["message"]
    assert "threshold 80% reached" in evaluated["message"]
    assert blocking["status"] == "False"
    later = now + timedelta(minutes=5)
    second = budgets.status(
        budget, 55.0, budgets.evaluate(55.0, 50.0, budget.thresholds), span, later, first["conditions"]
    )
    evaluated, blocking = second["conditions"]
    assert evaluated["lastTransitionTime"] == "2026-12-04T15:00:00Z"  # still True
    assert blocking["status"] == "True" and blocking["lastTransitionTime"] == "2026-12-04T15:05:00Z"
    assert "answered with HTTP 429 until 2026-12-05T00:00:00Z" in blocking["message"]


def test_an_evaluation_that_fails_keeps_the_state_and_says_why() -> None:
    old = {"state": "warning", "lastEvaluated": "2026-12-04T14:59:00Z", "conditions": [
        {"type": "Evaluated", "status": "True", "lastTransitionTime": "2026-12-04T10:00:00Z"},
        {"type": "Blocking", "status": "False", "lastTransitionTime": "2026-12-04T10:00:00Z"}]}  # fmt: skip
    now = datetime(2026, 12, 4, 15, tzinfo=UTC)
    result = budgets.failed_status(
        "PrometheusUnreachable", "cannot reach Prometheus at http://p:9090", 3, now, old
    )
    assert result["state"] == "warning"
    (blocking, evaluated) = result["conditions"]
    assert blocking["type"] == "Blocking" and evaluated["status"] == "False"
    assert evaluated["reason"] == "PrometheusUnreachable"
    assert evaluated["message"] == (
        "cannot reach Prometheus at http://p:9090; the state (warning) is the one evaluated at 2026-12-04T14:59:00Z"
    )
    assert budgets.failed_status("NoPrometheus", "x", 1, now, {})["state"] == "unknown"
