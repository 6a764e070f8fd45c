"""``spendmeter report``: spend over a period, asked from Prometheus, as a table, CSV, JSON or FOCUS.

The numbers are Prometheus's ``increase()`` of the sidecars' counters over the period, summed per
namespace, workload, provider and model, so they survive sidecar restarts (counter resets).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from spendmeter_proxy.cli import argument_type

from spendmeter_operator.querying import Prometheus, QueryError, Sample
from spendmeter_operator.reports import build_rows, render_csv, render_focus, render_json, render_table

GROUP = "namespace, workload, provider, model"
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m``."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"a period is a positive number and a unit (m, h, d, w), like 30d; got {text!r}")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 date or time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_month(text: str) -> tuple[datetime, datetime]:
    """``2026-11`` -> the first instants of that month and the next (UTC)."""
    try:
        start = datetime.strptime(text.strip(), "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"a month is YYYY-MM, got {text!r}") from None
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus's base URL")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--last", type=argument_type(parse_duration), metavar="PERIOD", help="up to now, e.g. 30d (default)"
    )
    when.add_argument(
        "--month", type=argument_type(parse_month), metavar="YYYY-MM", help="a calendar month (UTC)"
    )
    when.add_argument(
        "--start", type=argument_type(parse_time), metavar="TIME", help="start (ISO 8601; with --end)"
    )
    parser.add_argument(
        "--end", type=argument_type(parse_time), metavar="TIME", help="end (ISO 8601; default now)"
    )
    parser.add_argument("--namespace", help="only this namespace")
    parser.add_argument("--format", choices=("table", "csv", "json", "focus"), default="table")
    parser.add_argument("--output", "-o", type=Path, help="write here instead of standard output")
    parser.add_argument("--billing-account", default="spendmeter", help="BillingAccountId of FOCUS rows")


def period(args: argparse.Namespace, now: datetime) -> tuple[datetime, datetime]:
    if args.month:
        start, end = args.month
        return start, min(end, now)
    end = args.end or now
    start = args.start or end - (args.last or timedelta(days=30))
    if start >= end:
        raise ValueError("the period's start must be before its end")
    return start, end


def queries(seconds: int, namespace: str | None) -> dict[str, str]:
    sel = f'{{namespace="{namespace}"}}' if namespace else ""
    return {
        "cost": f"sum by ({GROUP}) (increase(spendmeter_cost_usd_total{sel}[{seconds}s]))",
        "calls": f"sum by ({GROUP}) (increase(spendmeter_requests_total{sel}[{seconds}s]))",
        "tokens": f"sum by ({GROUP}, type) (increase(spendmeter_tokens_total{sel}[{seconds}s]))",
        "wasted": f"sum by ({GROUP}) (increase(spendmeter_wasted_cost_usd_total{sel}[{seconds}s]))",
    }


def ask(prom: Prometheus, named: dict[str, str], at: datetime, progress: TextIO) -> dict[str, list[Sample]]:
    """Runs the queries one by one, showing which one is under way."""
    results: dict[str, list[Sample]] = {}
    live = progress.isatty()
    for i, (name, promql) in enumerate(named.items(), 1):
        line = f"querying Prometheus [{i}/{len(named)}] {name} ..."
        progress.write(f"\r{line}" if live else f"{line}\n")
        progress.flush()
        results[name] = prom.query(promql, at)
    progress.write(f"\rqueried Prometheus: {len(named)} queries, done.{' ' * 10}\n")
    return results


def run(args: argparse.Namespace) -> int:
    try:
        start, end = period(args, datetime.now(UTC))
        prom = Prometheus(args.prometheus)
        seconds = int((end - start).total_seconds())
        found = ask(prom, queries(seconds, args.namespace), end, sys.stderr)
    except (ValueError, QueryError) as e:
        print(f"spendmeter report: {e}", file=sys.stderr)
        return 1

    def pairs(name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in found[name]]

    rows = build_rows(pairs("cost"), pairs("calls"), pairs("tokens"), pairs("wasted"))
    if args.format == "csv":
        text = render_csv(rows)
    elif args.format == "json":
        text = render_json(rows, start, end)
    elif args.format == "focus":
        text = render_focus(rows, start, end, args.billing_account)
    else:
        text = f"LLM spend {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC\n" + render_table(rows)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
