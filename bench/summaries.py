"""What the benchmark reports, computed from raw samples: percentiles, added costs, targets, the table.

Pure functions only (no clock, no I/O), so the numbers a run prints follow from the samples it saved.
Latencies are in seconds in the samples and in milliseconds in every report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

MIB = 1024 * 1024
BASELINE = "direct"


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linearly interpolated between ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Latency:
    """Percentiles of one set of timings, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> Latency:
        return cls(len(samples_s), percentile(samples_s, 50) * 1000, percentile(samples_s, 99) * 1000)


@dataclass
class SetupResult:
    """Everything measured for one way of reaching the stand-in."""

    name: str
    latency: Latency | None = None
    requests_per_s: float | None = None
    first_chunk: Latency | None = None
    errors: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Memory:
    """The spendmeter proxy's resident memory, in bytes, at the points it was read."""

    idle: int
    before_soak: int
    after_soak: int
    soak_requests: int

    @property
    def growth(self) -> float:
        """Growth over the soak run, as a fraction of the resident size just before it."""
        return (self.after_soak - self.before_soak) / self.before_soak

    @property
    def growth_since_start(self) -> float:
        return (self.after_soak - self.idle) / self.idle

    def report(self) -> dict[str, object]:
        return {**asdict(self), "growth": self.growth, "growth_since_start": self.growth_since_start}


@dataclass(frozen=True)
class Added:
    """A setup's cost over the direct path: its percentiles minus direct's, in milliseconds."""

    p50_ms: float
    p99_ms: float


def added(result: Latency | None, baseline: Latency | None) -> Added | None:
    if result is None or baseline is None:
        return None
    return Added(result.p50_ms - baseline.p50_ms, result.p99_ms - baseline.p99_ms)


@dataclass(frozen=True)
class Goal:
    """One goal the run is judged against; ``passed`` is None when the run could not tell."""

    name: str
    goal: str
    measured: str
    passed: bool | None


def _ratio_target(name: str, mine: Added | None, theirs: Added | None, bound: float) -> Goal:
    goal = f"<= {bound:g}x"
    if mine is None or theirs is None:
        return Goal(name, goal, "not measured", None)
    if theirs.p50_ms <= 0:
        return Goal(name, goal, f"{mine.p50_ms:.3f} ms vs {theirs.p50_ms:.3f} ms", None)
    ratio = mine.p50_ms / theirs.p50_ms
    return Goal(name, goal, f"{ratio:.2f}x ({mine.p50_ms:.3f} / {theirs.p50_ms:.3f} ms)", ratio <= bound)


def targets(results: Mapping[str, SetupResult], memory: Memory | None) -> list[Goal]:
    """The spendmeter targets: added p50 against bare mitmdump and LiteLLM, first chunk, memory."""
    base = results.get(BASELINE)

    def latency_added(name: str) -> Added | None:
        r = results.get(name)
        return added(r.latency if r else None, base.latency if base else None)

    def chunk_added(name: str) -> Added | None:
        r = results.get(name)
        return added(r.first_chunk if r else None, base.first_chunk if base else None)

    mine = latency_added("spendmeter")
    chunk = chunk_added("spendmeter")
    found = [
        _ratio_target("added p50 vs bare mitmdump", mine, latency_added("mitmdump"), 1.15),
        _ratio_target("added p50 vs LiteLLM", mine, latency_added("litellm"), 0.5),
        Goal(
            "first chunk added, p50",
            "<= 2 ms",
            f"{chunk.p50_ms:.3f} ms" if chunk else "not measured",
            chunk.p50_ms <= 2.0 if chunk else None,
        ),
    ]
    if memory is None:
        found.append(Goal("RSS idle", "<= 90 MiB", "not measured", None))
        found.append(Goal("RSS growth", "<= 5%", "not measured", None))
    else:
        found.append(Goal("RSS idle", "<= 90 MiB", f"{memory.idle / MIB:.1f} MiB", memory.idle <= 90 * MIB))
        found.append(
            Goal(
                f"RSS growth over {memory.soak_requests:,} requests",
                "<= 5%",
                f"{memory.growth * 100:+.2f}% ({memory.before_soak / MIB:.1f} -> {memory.after_soak / MIB:.1f} MiB)",
                memory.growth <= 0.05,
            )
        )
    return found


def _cell(value: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def table(results: Mapping[str, SetupResult]) -> str:
    """The per-setup numbers as a Markdown table (added columns are relative to the direct path)."""
    base = results.get(BASELINE)
    head = (
        "| setup | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s "
        "| first chunk p50 ms | added first chunk ms | errors |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results.values():
        lat = added(r.latency, base.latency if base else None)
        chunk = added(r.first_chunk, base.first_chunk if base else None)
        lines.append(
            "| "
            + " | ".join(
                [
                    r.name,
                    _cell(r.latency.p50_ms if r.latency else None),
                    _cell(r.latency.p99_ms if r.latency else None),
                    _cell(lat.p50_ms if lat else None),
                    _cell(lat.p99_ms if lat else None),
                    _cell(r.requests_per_s, "{:.0f}"),
                    _cell(r.first_chunk.p50_ms if r.first_chunk else None),
                    _cell(chunk.p50_ms if chunk else None),
                    str(r.errors),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def targets_table(found: Sequence[Goal]) -> str:
    lines = ["| target | goal | measured | result |", "|---|---|---|---|"]
    verdicts = {True: "pass", False: "FAIL", None: "n/a"}
    lines += [f"| {t.name} | {t.goal} | {t.measured} | {verdicts[t.passed]} |" for t in found]
    return "\n".join(lines)


def as_json(value: object) -> object:
    """A dataclass tree as plain JSON-ready data."""
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return as_json(asdict(value))  # type: ignore[call-overload]
    return value


def parse_requests_total(metrics_text: str) -> int:
    """The sum of ``spendmeter_requests_total`` over its series, from a Prometheus text scrape."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("spendmeter_requests_total{") or line.startswith("spendmeter_requests_total "):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError) as e:
                raise ValueError(f"unreadable metrics line {line!r}") from e
    return int(total)
