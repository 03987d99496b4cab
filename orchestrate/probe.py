"""The capacity probe: what this machine does for this model and request shape, before any comparison.

Per profile, a closed loop at concurrency 1, then x`growth` (2: 1, 2, 4, ...; --quick: 4), as Locust runs
like the sweep's: the one-stream step gives the single-stream latency; the steps stop when the served
throughput stops rising, when replies queue, or when the server refuses requests (an admission limit).
Throughput is counted by token arrival inside each step's window (runfolder.summary), so a short window
still measures it: completed requests per window are whole numbers, and a 4 s window at 1.5 req/s cannot
tell 1.25 from 1.5. The capacity in req/s is that token rate over the tokens of one reply.
The figures become the quantities that the campaign's rules turn into loads, windows, limits and SLOs.
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

import numpy as np

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
    requests_per_s: float  # successful requests per second (whole replies: coarse in a short window)
    output_tokens_per_s: float  # by token arrival inside the window, from its first token on
    ttft_p50_s: float | None
    e2e_p50_s: float | None
    window_s: float
    run_dir: str
    rejections: int = 0  # refused by the server (429/503): its admission limit was reached
    output_tokens_per_reply: float | None = None  # mean over the successes
    # 95 % interval of output_tokens_per_s: batch means over the window (reports.intervals)
    output_tokens_per_s_low: float | None = None
    output_tokens_per_s_high: float | None = None


@dataclass(slots=True)
class ProfileProbe:
    name: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def single(self) -> StepResult | None:
        return next((s for s in self.steps if s.concurrency == 1), None)

    @property
    def best(self) -> StepResult | None:
        return max(self.steps, key=lambda s: s.output_tokens_per_s, default=None)

    @property
    def capacity_rps(self) -> float:
        """The best step's token rate in replies per second (its own reply length)."""
        best = self.best
        if best is None:
            return 0.0
        if best.output_tokens_per_reply:
            return best.output_tokens_per_s / best.output_tokens_per_reply
        return best.requests_per_s  # no token counts (a server without usage or tokenizer)

    @property
    def capacity_tokens_per_s(self) -> float:
        return self.best.output_tokens_per_s if self.best else 0.0

    def capacity_interval_rps(self) -> tuple[float | None, float | None]:
        """The best step's tok/s interval in replies per second."""
        best = self.best
        if best is None or not best.output_tokens_per_reply or best.output_tokens_per_s_low is None:
            return None, None
        per = best.output_tokens_per_reply
        return best.output_tokens_per_s_low / per, (best.output_tokens_per_s_high or 0.0) / per


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
        e2e = statistics.median(s.e2e_p50_s for s in singles if s.e2e_p50_s is not None)
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
                    "capacity_low_rps": p.capacity_interval_rps()[0],
                    "capacity_high_rps": p.capacity_interval_rps()[1],
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


def steady_tokens_per_s(times_s: np.ndarray, tokens: np.ndarray, start_s: float, end_s: float) -> float:
    """Output tokens per second inside [start_s, end_s), counted from the step's first token on.

    In a closed loop every user sends at the start, and a batching server prefills them all before the
    first token: at 16 streams on a 2-core CPU that ramp took 1.4 s of a 4 s window, which counted from
    the start would read 140 tok/s for a server decoding at over 200. A serialized server's first token
    comes a lone TTFT after the start, so its ramp is short either way."""
    inside = (times_s >= start_s) & (times_s < end_s)
    if not inside.any():
        return 0.0
    first_s = max(start_s, float(times_s[inside].min()))
    # The first arrival opens the interval, so its own tokens are not part of the rate over it.
    counted = float(tokens[inside].sum() - tokens[inside][times_s[inside].argmin()])
    span_s = end_s - first_s
    return counted / span_s if span_s > 0 else 0.0


# Runs one closed-loop step: (profile name, concurrency, warm-up s, window s) -> its figures.
StepRunner = Callable[[str, int, float, float], StepResult]


def probe_profile(
    name: str,
    spec: camp.ProbeSpec,
    run_step: StepRunner,
    progress: Callable[[str], None],
    e2e_hint_s: float | None = None,
) -> ProfileProbe:
    """Concurrency 1, then x`growth` per step until `patience` steps in a row do not raise the served token
    rate: a step rises only when it beats the best so far by `rise_below` and its interval's low end is
    above the best's estimate (saturation is a plateau within the noise, not a latency threshold; E2E
    grows with concurrency in any closed loop), or (`stop_on_refusals`) the server refused requests.
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
    step_window_s = spec.step_s.value(single)
    best = first.output_tokens_per_s
    concurrency = spec.growth
    flat = 0  # steps in a row that did not raise the throughput enough
    while concurrency <= spec.max_concurrency:
        # Tokens are counted as they arrive, so the window needs no whole replies. No warm-up: the first
        # replies, sent at the start, are the ones measured (at high concurrency they end after the window;
        # their tokens inside it count). The ramp to the first token stays in, a slight underestimate.
        step = run_step(name, concurrency, 0.0, step_window_s)
        result.steps.append(step)
        refused = f", {step.rejections} refused" if step.rejections else ""
        progress(
            f"  {name}: concurrency {concurrency}: {step.output_tokens_per_s:.0f} tok/s "
            f"({step.requests_per_s:.2f} replies/s{refused}; best so far {best:.0f} tok/s)"
        )
        if not step.e2e_p50_s:
            break  # nothing completed at this concurrency
        if spec.stop_on_refusals and step.rejections:
            break  # the server's admission limit: more users only add refusals
        low = step.output_tokens_per_s_low
        rises = step.output_tokens_per_s >= best * (1 + spec.rise_below) and (low is None or low > best)
        if not rises:
            flat += 1
            if flat >= spec.patience:
                break  # saturated: more streams no longer pay
        else:
            flat = 0
        best = max(best, step.output_tokens_per_s)
        concurrency *= spec.growth
    return result


def planned_steps(spec: camp.ProbeSpec) -> int:
    """Steps of a profile that saturates at once (the serialized ones): the one-stream step plus `patience`
    flat ones. A batching profile adds a step or two."""
    return 1 + spec.patience


def estimated_probe_s(spec: camp.ProbeSpec, profiles: int, run_overhead_s: float = 3.0) -> float:
    """A rough duration for the first ETA, before anything is measured: the planned windows plus, per
    step, Locust's start and the in-flight replies it waits for (a guess of one more window's worth)."""
    step_s = spec.step_s.at_most or spec.first_step_s
    steps = planned_steps(spec) + 1  # one profile in three batching: about one step more on average
    per_profile = spec.first_warmup_s + spec.first_step_s + run_overhead_s
    per_profile += (steps - 1) * (2 * step_s + run_overhead_s)
    return profiles * per_profile


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
