"""CI performance gates: refuse runs that cannot be evidence, check absolute limits per label, and test the
candidate against a baseline with a statistical test that can say "inconclusive" (reports/stats.py).

Verdicts: pass (exit 0), fail (exit 1), inconclusive (exit 3: the repeats cannot tell; never a pass), and
refused (exit 2: broken evidence or bad input, with the reason). Outputs: a Markdown summary (for
$GITHUB_STEP_SUMMARY), the verdicts as JSON, and the figures in github-action-benchmark's
`customBiggerIsBetter` / `customSmallerIsBetter` format.
"""

from __future__ import annotations

import logging

from reports import evidence as ev
from reports.errors import BadInput, ReportError
from reports.gate_checks import (
    Check,
    Evaluation,
    Side,
    absolute_checks,
    check_evidence,
    check_shapes,
    side_of,
)
from reports.gate_config import GateConfig, load_config
from reports.gate_output import EXIT_CODES, refused_markdown, to_markdown, write_outputs
from reports.gate_relative import RELATIVE_GATES, relative_checks
from runfolder.frame import RunData

__all__ = ["EXIT_CODES", "load_config", "refused_markdown", "to_markdown", "write_outputs"]
log = logging.getLogger(__name__)


class Inconclusive(ReportError):
    """The repeats cannot tell a regression from noise: not a pass."""

    exit_code = 3


class Refused(BadInput):
    """The runs cannot be judged (cut requests, a generator behind, too few requests, ...): exit 2."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the gate refuses to judge these runs:\n  " + "\n  ".join(problems))


def baseline_label(base_labels: list[str], label: str) -> str | None:
    """The same label in the baseline, or its only label."""
    if label in base_labels:
        return label
    return base_labels[0] if len(base_labels) == 1 else None


def _labels(runs: list[RunData]) -> list[str]:
    return list(dict.fromkeys(r.label for r in runs))


def evaluate(
    config: GateConfig,
    cand_runs: list[RunData],
    base_runs: list[RunData] | None,
    shape_reference: list[RunData] | None = None,
) -> Evaluation:
    """The checks of every gated candidate label; raises Refused (exit 2) when the runs are not evidence."""
    cand_labels = _labels(cand_runs)
    base_labels = _labels(base_runs) if base_runs else []
    relative_set = any(getattr(config.relative, g) is not None for g in RELATIVE_GATES)
    problems: list[str] = []
    if config.labels is not None:
        missing = [label for label in config.labels if label not in cand_labels]
        problems += [
            f"the gates file names label {label!r}, absent from the candidate {cand_labels}"
            for label in missing
        ]
        if base_runs and relative_set:
            problems += [
                f"the gates file names label {label!r}, absent from the baseline {base_labels}"
                for label in config.labels
                if baseline_label(base_labels, label) is None
            ]
    labels = [label for label in cand_labels if config.labels is None or label in config.labels]
    sides = [side_of(cand_runs, label) for label in labels]
    pairs: list[tuple[Side, Side | None]] = []
    for side in sides:
        base: Side | None = None
        if base_runs and relative_set:
            base_label = baseline_label(base_labels, side.label)
            if base_label is None:
                problems.append(f"candidate label {side.label!r} is absent from the baseline {base_labels}")
            else:
                base = side_of(base_runs, base_label)
        pairs.append((side, base))
    all_sides = sides + [b for _, b in pairs if b is not None]
    problems += check_evidence(config, all_sides)
    if relative_set and base_runs:
        for side in all_sides:
            if len(side.runs) < config.relative.min_repeats:
                problems.append(
                    f"label {side.label!r} has {len(side.runs)} run(s) on one side; relative.min_repeats "
                    f"is {config.relative.min_repeats} per side"
                )
    if config.evidence.same_workload:
        reference = shape_reference or []
        shape_pairs = []
        for side, base in pairs:
            ref_label = baseline_label(_labels(reference), side.label) if reference else None
            others = (base.runs if base else []) + [r for r in reference if r.label == ref_label]
            shape_pairs.append((side, others))
        problems += check_shapes(shape_pairs)
    if problems:
        raise Refused(problems)
    checks: list[Check] = []
    diagnoses: list[str] = []
    for side, base in pairs:
        label_checks = absolute_checks(side, config.absolute)
        if base is not None:
            label_checks += relative_checks(base, side, config)
        checks += label_checks
        if any(c.verdict == "fail" for c in label_checks):
            diagnoses += diagnose(side, base)
    return Evaluation(checks, diagnoses)


def diagnose(cand: Side, base: Side | None) -> list[str]:
    """Saturated runs: the offered load, not the code, may explain a failure."""
    found = []
    for which, side in (("candidate", cand), ("baseline", base)):
        if side is None:
            continue
        for run, figures in zip(side.runs, side.figures, strict=True):
            sat = ev.saturation(run, figures)
            if sat.saturated:
                found.append(
                    f"{which} run {run.path} ({side.label}) was saturated: {sat.reason}. The server was at "
                    "capacity for the offered load, so the offered load, not the code, may be the cause: "
                    "gate at a load the server can carry (below the knee of a sweep), or on a faster machine"
                )
    return found
