"""The gate's per-label checks that need no baseline: the record of a check, a side's runs and figures,
the absolute limits, and the reasons to refuse runs as evidence (reports/gate.py puts them together)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from reports import evidence as ev
from reports.gate_config import AbsoluteGates, GateConfig
from runfolder.frame import RunData

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Check:
    label: str
    gate: str
    value: float | None
    limit: float | None
    unit: str
    verdict: Verdict
    detail: str = ""
    more_repeats: int | None = None  # inconclusive relative checks: more runs per side that would decide
    # An advisory check fails the gate when it fails, but its "inconclusive" does not hold the gate up
    # (a figure too noisy on the runner to demand a decision: relative.ttft_must_decide).
    advisory: bool = False


@dataclass(frozen=True, slots=True)
class Side:
    """The runs of one label on one side, with their gated figures."""

    label: str
    runs: list[RunData]
    figures: list[ev.RunFigures] = field(default_factory=list)


# gate key -> (metric, display scale, unit, "min" or "max")
_ABSOLUTE = {
    "min_success_rate": ("success_rate", 100.0, "%", "min"),
    "max_rejection_rate": ("rejection_rate", 100.0, "%", "max"),
    "max_timeout_rate": ("timeout_rate", 100.0, "%", "max"),
    "max_error_rate": ("error_rate", 100.0, "%", "max"),
    "min_output_tokens_per_s": ("output_tokens_per_s", 1.0, "tok/s", "min"),
    "max_ttft_p95_ms": ("ttft_p95_s", 1000.0, "ms", "max"),
    "max_wrong_output_rate": ("wrong_output_rate", 100.0, "%", "max"),
}


def side_of(runs: list[RunData], label: str) -> Side:
    chosen = [r for r in runs if r.label == label]
    return Side(label, chosen, [ev.run_figures(r) for r in chosen])


def _rate(figures: ev.RunFigures, run: RunData, metric: str) -> float:
    outcome = run.records["outcome"].astype(str)
    name = {"success_rate": "success", "rejection_rate": "rejected", "timeout_rate": "timeout"}.get(metric)
    if name is not None:
        return float((outcome == name).sum() / figures.requests)
    return float((outcome == "error").sum() / figures.requests)


def absolute_checks(side: Side, gates: AbsoluteGates) -> list[Check]:
    checks = []
    for gate, limit in gates.model_dump().items():
        if limit is None:
            continue
        metric, scale, unit, kind = _ABSOLUTE[gate]
        if metric == "output_tokens_per_s":
            values = [f.output_tokens_per_s for f in side.figures]
        elif metric == "ttft_p95_s":
            values = [f.ttft_p95_s for f in side.figures]
        elif metric == "wrong_output_rate":
            values = [f.wrong_output_rate for f in side.figures]
        else:
            values = [_rate(f, r, metric) for f, r in zip(side.figures, side.runs, strict=True)]
        shown_limit = limit * (100.0 if unit == "%" else 1.0)
        measured = [v for v in values if v is not None]
        if len(measured) < len(values):
            checks.append(Check(side.label, gate, None, shown_limit, unit, "fail", "not measured"))
            continue
        value = float(np.mean(measured)) * scale
        detail = ""
        if metric == "ttft_p95_s" and math.isinf(value):
            worst = max(f.failed_share for f in side.figures)
            detail = (
                f"{100 * worst:.1f} % of requests did not succeed; TTFT p95 counts them as beyond any limit"
            )
        ok = value >= shown_limit - 1e-9 if kind == "min" else value <= shown_limit + 1e-9
        checks.append(Check(side.label, gate, value, shown_limit, unit, "pass" if ok else "fail", detail))
    return checks


def check_evidence(config: GateConfig, sides: list[Side]) -> list[str]:
    """Every reason to refuse: per run (cuts, generator, workers, request count) and per side (repeats)."""
    problems = []
    rules = config.evidence
    for side in sides:
        for run, figures in zip(side.runs, side.figures, strict=True):
            for problem in ev.refusals(
                run,
                figures,
                min_requests=rules.min_requests,
                max_cut_rate=rules.max_cut_rate,
                refuse_generator_behind=rules.refuse_generator_behind,
                refuse_missing_worker_records=rules.refuse_missing_worker_records,
            ):
                problems.append(f"{run.path}: {problem}")
    return problems


def check_shapes(pairs: list[tuple[Side, list[RunData]]]) -> list[str]:
    """Runs compared with each other must have offered the same workload."""
    problems = []
    for cand, others in pairs:
        reference = ev.workload_shape(cand.runs[0])
        for run in [*cand.runs[1:], *others]:
            diffs = ev.shape_differences(reference, ev.workload_shape(run))
            if diffs:
                problems.append(
                    f"{run.path}: a different workload from the candidate {cand.runs[0].path} "
                    f"(candidate vs this run: {'; '.join(diffs)}): runs of different shape cannot be compared"
                )
    return problems


@dataclass(frozen=True, slots=True)
class Evaluation:
    checks: list[Check]
    diagnoses: list[str]

    @property
    def verdict(self) -> Verdict:
        if any(c.verdict == "fail" for c in self.checks):
            return "fail"
        if any(c.verdict == "inconclusive" and not c.advisory for c in self.checks):
            return "inconclusive"
        return "pass"
