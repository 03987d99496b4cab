"""CI performance gates: refuse runs that cannot be evidence, check absolute limits per label, and test the
candidate against a baseline with a statistical test that can say "inconclusive" (reports/stats.py).

Verdicts: pass (exit 0), fail (exit 1), inconclusive (exit 3: the repeats cannot tell; never a pass), and
refused (exit 2: broken evidence or bad input, with the reason). Outputs: a Markdown summary (for
$GITHUB_STEP_SUMMARY), the verdicts as JSON, and the figures in github-action-benchmark's
`customBiggerIsBetter` / `customSmallerIsBetter` format.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from configkit import Strict, read_yaml, validation_message
from reports import evidence as ev
from reports import markdown as md
from reports import stats
from reports.errors import BadInput, ReportError
from reports.metrics import METRICS
from runfolder.frame import RunData

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "inconclusive"]
Overall = Literal["pass", "fail", "inconclusive", "refused"]
ICONS = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "❔ inconclusive", "refused": "⛔ refused"}
HEADS = {
    "pass": "✅ **PASS**",
    "fail": "❌ **REGRESSION**",
    "inconclusive": "❔ **INCONCLUSIVE**",
    "refused": "⛔ **REFUSED**",
}
EXIT_CODES = {"pass": 0, "fail": 1, "refused": 2, "inconclusive": 3}


class Inconclusive(ReportError):
    """The repeats cannot tell a regression from noise: not a pass."""

    exit_code = 3


class Refused(BadInput):
    """The runs cannot be judged (cut requests, a generator behind, too few requests, ...): exit 2."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the gate refuses to judge these runs:\n  " + "\n  ".join(problems))


class EvidenceRules(Strict):
    """When a run is not evidence at all: the gate then exits 2 with the reason."""

    min_requests: int = Field(20, ge=1)  # per run
    max_cut_rate: float = Field(0.02, ge=0, le=1)  # requests still in flight when the run ended
    refuse_generator_behind: bool = True
    refuse_missing_worker_records: bool = True
    same_workload: bool = True  # baseline, candidate and their repeats offered the same load


class AbsoluteGates(Strict):
    """Each label of the candidate, on its mean over repeats. Rates are fractions of attempted requests."""

    min_success_rate: float | None = Field(None, ge=0, le=1)
    max_rejection_rate: float | None = Field(None, ge=0, le=1)
    max_timeout_rate: float | None = Field(None, ge=0, le=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_output_tokens_per_s: float | None = Field(None, ge=0)
    # Over attempted requests, failures counted as beyond any threshold (reports/evidence.py).
    max_ttft_p95_ms: float | None = Field(None, gt=0)
    # --check-outputs runs only (else "not measured"): a fraction of the checked replies, not of attempts.
    max_wrong_output_rate: float | None = Field(None, ge=0, le=1)


class RelativeGates(Strict):
    """Candidate against baseline, label by label, with the test of reports/stats.py."""

    max_throughput_drop_pct: float | None = Field(None, gt=0, lt=100)
    max_ttft_p95_rise_pct: float | None = Field(None, gt=0)
    confidence: float = Field(0.95, ge=0.5, lt=1)  # one-sided
    min_repeats: int = Field(1, ge=1)  # per side; fewer is refused
    pairing: Literal["auto", "off"] = "auto"  # auto: pair interleaved runs of equal count


class FigureNoise(Strict):
    cv: float = Field(gt=0, lt=1)  # run-to-run, log scale
    pair_cv: float | None = Field(None, gt=0, lt=1)  # between consecutive runs


class NoisePriors(Strict):
    """The run-to-run noise expected before any repeat is seen (benchmarks/gate_noise.py measures it)."""

    prior_df: float = Field(4.0, ge=0)  # worth this many repeats; 0 ignores the priors
    output_tokens_per_s: FigureNoise | None = None
    ttft_p95_s: FigureNoise | None = None


class GateConfig(Strict):
    schema_version: Literal[1] = 1
    evidence: EvidenceRules = EvidenceRules()
    absolute: AbsoluteGates = AbsoluteGates()
    relative: RelativeGates = RelativeGates()
    noise: NoisePriors = NoisePriors()
    labels: list[str] | None = None  # gate only these labels of the candidate (default: all)


def load_config(path: Path) -> GateConfig:
    raw = read_yaml(path, "gates file", BadInput)
    if not raw:  # an empty file would gate nothing and pass: refuse it
        raise BadInput(f"{path}: expected a mapping with 'absolute' and/or 'relative' sections")
    try:
        return GateConfig.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(f"{path}: {validation_message(exc)}") from None


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
# relative gate key -> figure of RunFigures
_RELATIVE = {"max_throughput_drop_pct": "output_tokens_per_s", "max_ttft_p95_rise_pct": "ttft_p95_s"}


def _side(runs: list[RunData], label: str) -> Side:
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
        if any(v is None for v in values):
            checks.append(Check(side.label, gate, None, shown_limit, unit, "fail", "not measured"))
            continue
        value = float(np.mean(values)) * scale
        detail = ""
        if metric == "ttft_p95_s" and math.isinf(value):
            worst = max(f.failed_share for f in side.figures)
            detail = (
                f"{100 * worst:.1f} % of requests did not succeed; TTFT p95 counts them as beyond any limit"
            )
        ok = value >= shown_limit - 1e-9 if kind == "min" else value <= shown_limit + 1e-9
        checks.append(Check(side.label, gate, value, shown_limit, unit, "pass" if ok else "fail", detail))
    return checks


def interleaved(base: Side, cand: Side) -> bool:
    """Equal counts, and in time order each consecutive two runs hold one of each side (A B A B or
    A B B A, as scripts/perf-gate makes them): run i of one side ran next to run i of the other."""
    if len(base.figures) != len(cand.figures) or len(base.figures) < 2:
        return False
    order = sorted(
        [(f.started_ts_s, "b") for f in base.figures] + [(f.started_ts_s, "c") for f in cand.figures]
    )
    sides = [s for _, s in order]
    return all({sides[i], sides[i + 1]} == {"b", "c"} for i in range(0, len(sides), 2))


def _prior(config: GateConfig, figure: str) -> stats.NoisePrior | None:
    noise = getattr(config.noise, figure)
    if noise is None or config.noise.prior_df <= 0:
        return None
    return stats.NoisePrior(cv=noise.cv, pair_cv=noise.pair_cv, df=config.noise.prior_df)


def relative_checks(base: Side, cand: Side, config: GateConfig) -> list[Check]:
    gates = config.relative
    checks = []
    paired = gates.pairing == "auto" and interleaved(base, cand)
    for gate, figure in _RELATIVE.items():
        limit = getattr(gates, gate)
        if limit is None:
            continue
        metric = "output_tokens_per_s" if figure == "output_tokens_per_s" else "ttft_p95_s"
        higher = METRICS[metric].higher_is_better
        # Paired runs in time order; the figures' order is the runs' (chronological within a folder).
        key = (lambda f: f.started_ts_s) if paired else (lambda f: 0.0)
        b = [getattr(f, figure) for f in sorted(base.figures, key=key)]
        c = [getattr(f, figure) for f in sorted(cand.figures, key=key)]
        vs = f"vs {base.label}"
        if any(v is None or not v > 0 for v in b + c if not (isinstance(v, float) and math.isinf(v))):
            checks.append(Check(cand.label, gate, None, limit, "%", "fail", f"not measured {vs}"))
            continue
        inf_b, inf_c = sum(math.isinf(v) for v in b), sum(math.isinf(v) for v in c)
        if inf_b or inf_c:
            # More than 5 % of requests failed in some run: TTFT p95 is beyond any threshold there.
            if inf_c > inf_b:
                checks.append(
                    Check(cand.label, gate, math.inf, limit, "%", "fail",
                          f"{vs}: {inf_c} candidate run(s) with more than 5 % failed requests "
                          f"(TTFT p95 beyond any threshold) against {inf_b} in the baseline")
                )  # fmt: skip
            else:
                checks.append(
                    Check(cand.label, gate, None, limit, "%", "inconclusive",
                          f"{vs}: the baseline has {inf_b} run(s) with more than 5 % failed requests; "
                          "TTFT cannot be compared (the absolute gates judge the candidate)")
                )  # fmt: skip
            continue
        result = stats.compare(
            b,
            c,
            higher_is_better=higher,
            threshold_pct=limit,
            alpha=1 - gates.confidence,
            prior=_prior(config, figure),
            paired=paired,
        )
        detail = f"{vs}: {_fmt_metric(metric, float(np.exp(np.mean(np.log(b)))))} -> "
        detail += f"{_fmt_metric(metric, float(np.exp(np.mean(np.log(c)))))}; {result.describe()}"
        if result.verdict == "inconclusive":
            detail += "; " + _more_text(result.more_repeats)
        checks.append(
            Check(cand.label, gate, result.worse_pct, limit, "%", result.verdict, detail, result.more_repeats)
        )
    return checks


def _more_text(more: int | None) -> str:
    if more is None:
        return (
            f"more than {stats.MAX_EXTRA_REPEATS} more repeats per side would be needed: "
            "the noise is too large for this threshold"
        )
    return f"about {more} more repeat(s) per side would decide it"


def _fmt_metric(metric: str, value: float) -> str:
    spec = METRICS[metric]
    return f"{value * spec.scale:.1f} {spec.unit}"


def baseline_label(base_labels: list[str], label: str) -> str | None:
    """The same label in the baseline, or its only label."""
    if label in base_labels:
        return label
    return base_labels[0] if len(base_labels) == 1 else None


def _labels(runs: list[RunData]) -> list[str]:
    return list(dict.fromkeys(r.label for r in runs))


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
        if any(c.verdict == "inconclusive" for c in self.checks):
            return "inconclusive"
        return "pass"


def evaluate(
    config: GateConfig,
    cand_runs: list[RunData],
    base_runs: list[RunData] | None,
    shape_reference: list[RunData] | None = None,
) -> Evaluation:
    """The checks of every gated candidate label; raises Refused (exit 2) when the runs are not evidence."""
    cand_labels = _labels(cand_runs)
    base_labels = _labels(base_runs) if base_runs else []
    relative_set = any(getattr(config.relative, g) is not None for g in _RELATIVE)
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
    sides = [_side(cand_runs, label) for label in labels]
    pairs: list[tuple[Side, Side | None]] = []
    for side in sides:
        base: Side | None = None
        if base_runs and relative_set:
            base_label = baseline_label(base_labels, side.label)
            if base_label is None:
                problems.append(f"candidate label {side.label!r} is absent from the baseline {base_labels}")
            else:
                base = _side(base_runs, base_label)
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


# ---- outputs ----


def _value_text(check: Check) -> str:
    if check.gate in _RELATIVE:
        if check.value is None:
            return "—"
        if math.isinf(check.value):
            return "beyond any limit"
        return f"{check.value:.1f} % worse" if check.value > 0 else f"{-check.value:.1f} % better"
    if check.value is not None and math.isinf(check.value):
        return "beyond any limit"
    return md.fmt(check.value, 2 if check.unit == "tok/s" else 1, f" {check.unit}")


def _limit_text(check: Check) -> str:
    if check.limit is None:
        return "—"
    if check.gate.startswith("min_"):
        return f"≥ {md.fmt(check.limit, 1)} {check.unit}"
    return f"≤ {md.fmt(check.limit, 1)} {check.unit}"


def to_markdown(result: Evaluation, config_path: Path, candidate: str, baseline: str | None) -> str:
    checks = result.checks
    verdict = result.verdict
    lines = [
        f"## Performance gate: {HEADS[verdict]}",
        "",
        f"Gates `{config_path}`; candidate `{candidate}`"
        + (f"; baseline `{baseline}`." if baseline else "."),
        f"{sum(c.verdict == 'fail' for c in checks)} failed, "
        f"{sum(c.verdict == 'inconclusive' for c in checks)} inconclusive, "
        f"{sum(c.verdict == 'pass' for c in checks)} passed.",
        "",
    ]
    if verdict == "inconclusive":
        more = [c.more_repeats for c in checks if c.verdict == "inconclusive"]
        known = [m for m in more if m is not None]
        advice = (
            f"about {max(known)} more repeat(s) per side would decide it"
            if known and len(known) == len(more)
            else "more repeats than are practical would be needed: "
            "lower the noise (longer runs) or widen the threshold"
        )
        lines += [f"The repeats cannot tell a change from noise (not a pass): {advice}.", ""]
    cells = pd.DataFrame(
        {
            "Label": [c.label for c in checks],
            "Gate": [c.gate for c in checks],
            "Measured": [_value_text(c) for c in checks],
            "Limit": [_limit_text(c) for c in checks],
            "Verdict": [ICONS[c.verdict] for c in checks],
            "Detail": [c.detail for c in checks],
        }
    )
    lines += [md.table(cells), ""]
    if result.diagnoses:
        lines += ["**Diagnosis.**", "", *[f"- {d}" for d in result.diagnoses], ""]
    return "\n".join(lines)


def refused_markdown(problems: list[str], config_path: Path, candidate: str, baseline: str | None) -> str:
    return "\n".join(
        [
            f"## Performance gate: {HEADS['refused']}",
            "",
            f"Gates `{config_path}`; candidate `{candidate}`"
            + (f"; baseline `{baseline}`." if baseline else "."),
            "These runs cannot be judged (exit 2):",
            "",
            *[f"- {p}" for p in problems],
            "",
        ]
    )


# (metric, name, unit, bigger is better) for github-action-benchmark.
BENCHMARK_METRICS = (
    ("output_tokens_per_s", "output throughput", "tok/s", True),
    ("success_rate", "success rate", "%", True),
    ("requests_per_s", "completed requests", "req/s", True),
    ("ttft_p95_s", "TTFT p95", "ms", False),
    ("e2e_p95_s", "E2E p95", "ms", False),
    ("rejection_rate", "rejection rate", "%", False),
    ("timeout_rate", "timeout rate", "%", False),
    ("error_rate", "error rate", "%", False),
)


def _stat(stats_frame: pd.DataFrame, label: str, metric: str, stat: str) -> float | None:
    if (metric, stat) not in stats_frame:
        return None
    value = stats_frame.loc[label, (metric, stat)]
    return None if pd.isna(value) else float(value)


def benchmark_entries(stats_frame: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """(bigger-is-better, smaller-is-better) entries: {name, unit, value, range?, extra}."""
    bigger, smaller = [], []
    for label in stats_frame.index:
        for metric, name, unit, is_bigger in BENCHMARK_METRICS:
            value = _stat(stats_frame, label, metric, "mean")
            if value is None:
                continue
            scale = METRICS[metric].scale
            entry: dict = {"name": f"{label} {name}", "unit": unit, "value": round(value * scale, 4)}
            std, n = (
                _stat(stats_frame, label, metric, "std"),
                int(_stat(stats_frame, label, metric, "count") or 1),
            )
            if std is not None and n > 1:
                entry["range"] = f"± {std * scale:.4g}"
            entry["extra"] = f"mean of {n} run(s)"
            (bigger if is_bigger else smaller).append(entry)
    return bigger, smaller


def _json_safe(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_outputs(
    folder: Path, verdict: Overall, checks: list[Check], markdown: str, cand: pd.DataFrame | None,
    problems: list[str] | None = None, diagnoses: list[str] | None = None,
) -> list[Path]:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    bigger, smaller = benchmark_entries(cand) if cand is not None else ([], [])
    verdicts = {
        "verdict": verdict,
        "exit_code": EXIT_CODES[verdict],
        "passed": verdict == "pass",
        "checks": [{k: _json_safe(v) for k, v in asdict(c).items()} for c in checks],
        "refusals": problems or [],
        "diagnoses": diagnoses or [],
    }
    files = {
        "gate.md": markdown,
        "gate.json": json.dumps(verdicts, indent=2, ensure_ascii=False),
        "benchmark-bigger.json": json.dumps(bigger, indent=2, ensure_ascii=False),
        "benchmark-smaller.json": json.dumps(smaller, indent=2, ensure_ascii=False),
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8")
        paths.append(path)
    return paths
