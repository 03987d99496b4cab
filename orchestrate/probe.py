"""The capacity probe: what this machine does for this model and request shape, before any comparison.

Per profile, a closed loop at concurrency 1, 2, 4, ... (Locust runs, as the sweep's): the one-stream step
gives the single-stream latency; the doubling stops when the served throughput stops rising. The
figures become the quantities that the campaign's rules turn into loads, windows, limits and SLOs.
Written to `probe.json` in the reproduction folder.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrate import campaign as camp

log = logging.getLogger(__name__)

PROBE_FILE = "probe.json"
MAX_FIRST_STEP_TRIES = 3


@dataclass(frozen=True, slots=True)
class StepResult:
    """One closed-loop step's figures (from its run folder)."""

    concurrency: int
    requests: int
    successes: int
    requests_per_s: float  # successful requests per second
    output_tokens_per_s: float
    ttft_p50_s: float | None
    e2e_p50_s: float | None
    window_s: float
    run_dir: str


@dataclass(slots=True)
class ProfileProbe:
    name: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def single(self) -> StepResult | None:
        return next((s for s in self.steps if s.concurrency == 1), None)

    @property
    def best(self) -> StepResult | None:
        return max(self.steps, key=lambda s: s.requests_per_s, default=None)

    @property
    def capacity_rps(self) -> float:
        return self.best.requests_per_s if self.best else 0.0

    @property
    def capacity_tokens_per_s(self) -> float:
        return self.best.output_tokens_per_s if self.best else 0.0


@dataclass(slots=True)
class ProbeResult:
    profiles: list[ProfileProbe]

    def quantities(self) -> dict[str, float]:
        """The figures a campaign rule may use (single-stream: the median over the profiles)."""
        singles = [p.single for p in self.profiles if p.single and p.single.e2e_p50_s]
        if not singles:
            raise ValueError("the probe completed no single-stream request")
        capacities = [p.capacity_rps for p in self.profiles if p.capacity_rps > 0]
        if not capacities:
            raise ValueError("the probe measured no throughput")
        e2e = statistics.median(s.e2e_p50_s for s in singles)
        ttft = statistics.median(s.ttft_p50_s for s in singles if s.ttft_p50_s is not None)
        return {
            "single_ttft_s": ttft,
            "single_e2e_s": e2e,
            "single_e2e_ms": 1000 * e2e,
            "min_capacity_rps": min(capacities),
            "max_capacity_rps": max(capacities),
        }

    def capacity_of(self, name: str) -> float | None:
        return next((p.capacity_rps for p in self.profiles if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "profiles": [
                {
                    "name": p.name,
                    "capacity_rps": p.capacity_rps,
                    "capacity_output_tokens_per_s": p.capacity_tokens_per_s,
                    "saturated_at_concurrency": p.best.concurrency if p.best else None,
                    "steps": [asdict(s) for s in p.steps],
                }
                for p in self.profiles
            ],
            "quantities": self.quantities(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        return cls([ProfileProbe(p["name"], [StepResult(**s) for s in p["steps"]]) for p in data["profiles"]])

    def write(self, folder: Path) -> Path:
        path = folder / PROBE_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


def read_probe(folder: Path) -> ProbeResult:
    return ProbeResult.from_json(json.loads((folder / PROBE_FILE).read_text(encoding="utf-8")))


# Runs one closed-loop step: (profile name, concurrency, warm-up s, window s) -> its figures.
StepRunner = Callable[[str, int, float, float], StepResult]


def probe_profile(
    name: str,
    spec: camp.ProbeSpec,
    run_step: StepRunner,
    progress: Callable[[str], None],
    e2e_hint_s: float | None = None,
) -> ProfileProbe:
    """Concurrency 1, then doubling until `patience` doublings in a row raise the served throughput by less
    than `rise_below` over the best so far.
    `e2e_hint_s` (a warm-up reply's duration) lengthens the first step to fit the wanted replies."""
    result = ProfileProbe(name)
    window_s = spec.first_step_s
    if e2e_hint_s:
        window_s = max(window_s, 1.5 * spec.min_first_step_requests * e2e_hint_s)
    for _ in range(MAX_FIRST_STEP_TRIES):
        first = run_step(name, 1, spec.first_warmup_s, window_s)
        if first.successes >= spec.min_first_step_requests and first.e2e_p50_s:
            break
        # Long enough for the wanted replies at the latency just seen (and at least twice as long).
        seen_e2e_s = first.e2e_p50_s or window_s
        window_s = max(2 * window_s, 1.5 * spec.min_first_step_requests * seen_e2e_s)
        progress(f"  {name}: only {first.successes} one-stream replies; again for {window_s:.0f} s")
    result.steps.append(first)
    if not first.e2e_p50_s:
        return result  # nothing completed: the caller reports it
    single = {"single_e2e_s": first.e2e_p50_s, "single_ttft_s": first.ttft_p50_s or first.e2e_p50_s}
    single["single_e2e_ms"] = 1000 * single["single_e2e_s"]
    best = first.requests_per_s
    concurrency = 2
    previous_e2e_s = first.e2e_p50_s
    flat = 0  # doublings in a row that did not raise the throughput enough
    while concurrency <= spec.max_concurrency:
        # A doubling at most doubles a reply's latency (throughput does not fall), so this many rounds fit.
        window_s = max(spec.step_s.value(single), spec.rounds_per_step * 2 * previous_e2e_s)
        step = run_step(name, concurrency, 0.0, window_s)
        result.steps.append(step)
        progress(
            f"  {name}: concurrency {concurrency}: {step.requests_per_s:.2f} req/s, "
            f"{step.output_tokens_per_s:.0f} tok/s (best so far {best:.2f} req/s)"
        )
        if not step.e2e_p50_s:
            break  # nothing completed at this concurrency
        if step.requests_per_s < best * (1 + spec.rise_below):
            flat += 1
            if flat >= spec.patience:
                break  # saturated: doublings no longer pay
        else:
            flat = 0
        best = max(best, step.requests_per_s)
        if step.e2e_p50_s > spec.max_e2e_multiple * first.e2e_p50_s:
            break  # queueing: replies take many times a lone reply's time
        previous_e2e_s = step.e2e_p50_s
        concurrency *= 2
    return result


def estimated_probe_s(spec: camp.ProbeSpec, steps_per_profile: int, profiles: int) -> float:
    """A rough duration for the first ETA, before anything is measured (step windows at their cap)."""
    step_s = spec.step_s.at_most or spec.first_step_s
    return profiles * (spec.first_warmup_s + spec.first_step_s + (steps_per_profile - 1) * step_s)


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
