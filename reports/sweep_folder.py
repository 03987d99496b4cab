"""The sweep folder's contract: what `python -m orchestrate.reproduce` writes and every sweep figure is read
from. Self-describing, so that reports/ needs nothing of orchestrate/:

- `sweep-plan.json`: the plan (profiles, grid rates, probed quantities and SLOs, knee thresholds, the
  guide's figures, the rules in words), written before the first run;
- `probe.json`: the capacity probe (orchestrate.probe), per profile and step;
- `points.json`: every sweep run as it finished, with why it was run (grid, knee, guide), appended;
- `runs/sweep/<profile>/<folder>/`: each run's folder (records.csv, summary.json, metadata.json).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from reports.intervals import CONFIDENCE
from runfolder.figures import Slo

log = logging.getLogger(__name__)

PLAN_FILE = "sweep-plan.json"
POINTS_FILE = "points.json"
PROBE_FILE = "probe.json"

# grid: the planned rates; knee: added between a profile's last holding and first breaking load;
# guide: v1.1.1's search for the guide's 70/12/18 mix, and the other profiles at the load it found.
Purpose = Literal["grid", "knee", "guide"]


@dataclass(frozen=True, slots=True)
class GuideMix:
    """What the migration guide printed for a profile (fractions; tok/s as text when approximate)."""

    success_rate: float | None = None
    rejection_rate: float | None = None
    timeout_rate: float | None = None
    output_tokens_per_s: float | None = None
    output_tokens_per_s_text: str | None = None


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """What the sweep set out to do: written before the first run, read back by the report."""

    campaign: str
    description: str
    profiles: list[str]
    rates: list[float]  # the grid's offered loads, req/s, ascending (exact: poisson-exact schedules)
    quantities: dict[str, float]  # probed, with the SLOs
    follow_share: float  # a point holds when served / attempted >= this...
    slo_attainment: float  # ...and the share within the SLO >= this, both with confidence
    comparison_rate: float  # the fallback headline load when no guide point was located
    # What each profile name stood for: {"url", "model"} for an external server (--url), {"profile"}.
    targets: dict[str, dict[str, str | None]] = field(default_factory=dict)
    guide: dict[str, GuideMix] = field(default_factory=dict)  # profile -> the guide's figures
    guide_profile: str | None = None  # whose mix is searched for (v1.1.1)
    guide_source: str | None = None
    rules: list[str] = field(default_factory=list)  # how loads, windows, limits and SLOs were derived
    budget_s: float | None = None
    confidence: float = CONFIDENCE
    target_half_width: float = 0.08  # the success share's interval half-width each point aims at

    @property
    def slo(self) -> Slo:
        return Slo(ttft_s=self.quantities["slo_ttft_s"], e2e_s=self.quantities["slo_e2e_s"])

    @property
    def external(self) -> dict[str, dict[str, str | None]]:
        return {name: t for name, t in self.targets.items() if t.get("url")}

    def guide_mix_text(self) -> str:
        mix = self.guide.get(self.guide_profile or "")
        if mix is None or mix.success_rate is None:
            return "mix"
        return (
            f"{100 * mix.success_rate:.0f} % success / {100 * (mix.rejection_rate or 0):.0f} % rejections / "
            f"{100 * (mix.timeout_rate or 0):.0f} % timeouts"
        )

    def write(self, folder: Path) -> None:
        (folder / PLAN_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> SweepPlan:
        data = json.loads((folder / PLAN_FILE).read_text(encoding="utf-8"))
        data["guide"] = {name: GuideMix(**mix) for name, mix in (data.get("guide") or {}).items()}
        return cls(**data)


@dataclass(frozen=True, slots=True)
class PointRun:
    """One run of the sweep: a profile under one exact offered load."""

    profile: str
    rate_per_s: float
    purpose: Purpose
    folder: str  # relative to the sweep folder
    window_s: float  # the planned run length (the steady window inside it is found afterwards)
    seed: int

    @staticmethod
    def folder_for(profile: str, rate_per_s: float, purpose: Purpose) -> str:
        return f"runs/sweep/{profile}/{purpose}-{rate_per_s:.3f}rps"


def read_points(folder: Path) -> list[PointRun]:
    path = folder / POINTS_FILE
    if not path.is_file():
        return []
    return [PointRun(**p) for p in json.loads(path.read_text(encoding="utf-8"))]


def append_point(folder: Path, point: PointRun) -> None:
    points = [*read_points(folder), point]
    (folder / POINTS_FILE).write_text(
        json.dumps([asdict(p) for p in points], indent=2) + "\n", encoding="utf-8"
    )


@dataclass(frozen=True, slots=True)
class ProbedProfile:
    """A profile's probe, as the report needs it (probe.json)."""

    name: str
    capacity_rps: float
    capacity_low_rps: float | None
    capacity_high_rps: float | None
    capacity_output_tokens_per_s: float
    saturated_at_concurrency: int | None
    single_ttft_s: float | None
    single_e2e_s: float | None
    steps: list[dict[str, Any]]


def read_probe(folder: Path) -> list[ProbedProfile]:
    data = json.loads((folder / PROBE_FILE).read_text(encoding="utf-8"))
    out = []
    for p in data["profiles"]:
        single: dict[str, Any] = next((s for s in p["steps"] if s["concurrency"] == 1), {})
        out.append(
            ProbedProfile(
                name=p["name"],
                capacity_rps=p["capacity_rps"],
                capacity_low_rps=p.get("capacity_low_rps"),
                capacity_high_rps=p.get("capacity_high_rps"),
                capacity_output_tokens_per_s=p["capacity_output_tokens_per_s"],
                saturated_at_concurrency=p.get("saturated_at_concurrency"),
                single_ttft_s=single.get("ttft_p50_s"),
                single_e2e_s=single.get("e2e_p50_s"),
                steps=p["steps"],
            )
        )
    return out
