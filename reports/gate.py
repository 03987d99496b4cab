"""CI performance gates: absolute thresholds per label, and relative ones against a baseline that only
flag a change lying beyond the spread of the repeats.

Outputs: a Markdown summary (for $GITHUB_STEP_SUMMARY), the verdicts as JSON, and the figures in
github-action-benchmark's `customBiggerIsBetter` / `customSmallerIsBetter` format.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reports import markdown as md
from reports.errors import BadInput, read_yaml
from reports.metrics import METRICS

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "noise", "skipped"]
ICONS = {"pass": "✅ pass", "fail": "❌ fail", "noise": "⚠️ within noise", "skipped": "skipped"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AbsoluteGates(_Strict):
    """Each label of the candidate, on its mean over repeats. Rates are fractions of attempted requests."""

    min_success_rate: float | None = Field(None, ge=0, le=1)
    max_rejection_rate: float | None = Field(None, ge=0, le=1)
    max_timeout_rate: float | None = Field(None, ge=0, le=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_output_tokens_per_s: float | None = Field(None, ge=0)
    max_ttft_p95_ms: float | None = Field(None, gt=0)


class RelativeGates(_Strict):
    """Candidate against baseline, label by label."""

    max_throughput_drop_pct: float | None = Field(None, ge=0)
    max_ttft_p95_rise_pct: float | None = Field(None, ge=0)
    # With repeats, a change past the threshold counts only when the repeats' min..max ranges do not overlap.
    noise_aware: bool = True


class GateConfig(_Strict):
    schema_version: Literal[1] = 1
    absolute: AbsoluteGates = AbsoluteGates()
    relative: RelativeGates = RelativeGates()
    labels: list[str] | None = None  # gate only these labels of the candidate (default: all)


def load_config(path: Path) -> GateConfig:
    raw = read_yaml(path, "gates file")
    if not raw:  # an empty file would gate nothing and pass: refuse it
        raise BadInput(f"{path}: expected a mapping with 'absolute' and/or 'relative' sections")
    try:
        return GateConfig.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(f"{path}: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    problems = []
    for item in exc.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)


@dataclass(frozen=True, slots=True)
class Check:
    label: str
    gate: str
    value: float | None
    limit: float | None
    unit: str
    verdict: Verdict
    detail: str = ""


# gate key -> (metric, display scale, unit, "min" or "max")
_ABSOLUTE = {
    "min_success_rate": ("success_rate", 100.0, "%", "min"),
    "max_rejection_rate": ("rejection_rate", 100.0, "%", "max"),
    "max_timeout_rate": ("timeout_rate", 100.0, "%", "max"),
    "max_error_rate": ("error_rate", 100.0, "%", "max"),
    "min_output_tokens_per_s": ("output_tokens_per_s", 1.0, "tok/s", "min"),
    "max_ttft_p95_ms": ("ttft_p95_s", 1000.0, "ms", "max"),
}
_RELATIVE = {"max_throughput_drop_pct": "output_tokens_per_s", "max_ttft_p95_rise_pct": "ttft_p95_s"}


def _stat(stats: pd.DataFrame, label: str, metric: str, stat: str) -> float | None:
    if (metric, stat) not in stats:
        return None
    value = stats.loc[label, (metric, stat)]
    return None if pd.isna(value) else float(value)


def absolute_checks(stats: pd.DataFrame, label: str, gates: AbsoluteGates) -> list[Check]:
    checks = []
    for gate, limit in gates.model_dump().items():
        if limit is None:
            continue
        metric, scale, unit, kind = _ABSOLUTE[gate]
        value = _stat(stats, label, metric, "mean")
        shown_limit = limit * (100.0 if unit == "%" else 1.0)
        if value is None:
            # No successful request means no latency: the gate cannot hold.
            checks.append(
                Check(label, gate, None, shown_limit, unit, "fail", "not measured (no successful request)")
            )
            continue
        shown = value * scale
        ok = shown >= shown_limit - 1e-9 if kind == "min" else shown <= shown_limit + 1e-9
        checks.append(Check(label, gate, shown, shown_limit, unit, "pass" if ok else "fail"))
    return checks


def relative_checks(
    base: pd.DataFrame, base_label: str, cand: pd.DataFrame, label: str, gates: RelativeGates
) -> list[Check]:
    checks = []
    for gate, metric in _RELATIVE.items():
        limit = getattr(gates, gate)
        if limit is None:
            continue
        b, c = _stat(base, base_label, metric, "mean"), _stat(cand, label, metric, "mean")
        if b is None or c is None or b == 0:
            checks.append(Check(label, gate, None, limit, "%", "fail", f"not measured against {base_label}"))
            continue
        higher_better = METRICS[metric].higher_is_better
        worse_pct = (b - c) / b * 100 if higher_better else (c - b) / b * 100
        detail = f"vs {base_label}: {_fmt_metric(metric, b)} -> {_fmt_metric(metric, c)}"
        verdict: Verdict = "pass"
        if worse_pct > limit:
            verdict = "fail"
            repeats = _stat(base, base_label, metric, "count") or 1, _stat(cand, label, metric, "count") or 1
            if (
                gates.noise_aware
                and max(repeats) > 1
                and not _separated(base, base_label, cand, label, metric)
            ):
                verdict = "noise"
                detail += "; the repeats' ranges overlap"
        checks.append(Check(label, gate, worse_pct, limit, "%", verdict, detail))
    return checks


def _separated(base: pd.DataFrame, base_label: str, cand: pd.DataFrame, label: str, metric: str) -> bool:
    """The candidate's best repeat is still worse than the baseline's worst one."""
    if METRICS[metric].higher_is_better:
        return _stat(cand, label, metric, "max") < _stat(base, base_label, metric, "min")
    return _stat(cand, label, metric, "min") > _stat(base, base_label, metric, "max")


def _fmt_metric(metric: str, value: float) -> str:
    spec = METRICS[metric]
    return f"{value * spec.scale:.1f} {spec.unit}"


def baseline_label(base: pd.DataFrame, label: str) -> str | None:
    """The same label in the baseline, or its only label."""
    if label in base.index:
        return label
    return str(base.index[0]) if len(base.index) == 1 else None


def evaluate(config: GateConfig, cand: pd.DataFrame, base: pd.DataFrame | None) -> list[Check]:
    labels = [str(label) for label in cand.index if config.labels is None or label in config.labels]
    if not labels:
        raise BadInput(
            f"none of the gated labels {config.labels} is among the candidate's {list(cand.index)}"
        )
    checks: list[Check] = []
    for label in labels:
        checks += absolute_checks(cand, label, config.absolute)
        relative_set = any(getattr(config.relative, g) is not None for g in _RELATIVE)
        if base is None or not relative_set:
            continue
        base_label = baseline_label(base, label)
        if base_label is None:
            checks.append(Check(label, "relative", None, None, "", "skipped", "no baseline with this label"))
            continue
        checks += relative_checks(base, base_label, cand, label, config.relative)
    return checks


def passed(checks: list[Check]) -> bool:
    return all(c.verdict != "fail" for c in checks)


# ---- outputs ----


def _value_text(check: Check) -> str:
    if check.gate.startswith(("max_throughput", "max_ttft_p95_rise")):
        if check.value is None:
            return "—"
        return f"{check.value:.1f} % worse" if check.value > 0 else f"{-check.value:.1f} % better"
    return md.fmt(check.value, 2 if check.unit == "tok/s" else 1, f" {check.unit}")


def _limit_text(check: Check) -> str:
    if check.limit is None:
        return "—"
    if check.gate.startswith("min_"):
        return f"≥ {md.fmt(check.limit, 1)} {check.unit}"
    return f"≤ {md.fmt(check.limit, 1)} {check.unit}"


def to_markdown(checks: list[Check], config_path: Path, candidate: str, baseline: str | None) -> str:
    ok = passed(checks)
    noise = sum(c.verdict == "noise" for c in checks)
    head = "✅ **PASS**" if ok else "❌ **REGRESSION**"
    lines = [
        f"## Performance gate: {head}",
        "",
        f"Gates `{config_path}`; candidate `{candidate}`"
        + (f"; baseline `{baseline}`." if baseline else "."),
        f"{sum(c.verdict == 'fail' for c in checks)} failed, "
        f"{sum(c.verdict == 'pass' for c in checks)} passed"
        + (f", {noise} past the threshold but within the repeats' noise" if noise else "")
        + ".",
        "",
    ]
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
    return "\n".join([*lines, md.table(cells), ""])


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


def benchmark_entries(stats: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """(bigger-is-better, smaller-is-better) entries: {name, unit, value, range?, extra}."""
    bigger, smaller = [], []
    for label in stats.index:
        for metric, name, unit, is_bigger in BENCHMARK_METRICS:
            value = _stat(stats, label, metric, "mean")
            if value is None:
                continue
            scale = METRICS[metric].scale
            entry: dict = {"name": f"{label} {name}", "unit": unit, "value": round(value * scale, 4)}
            std, n = _stat(stats, label, metric, "std"), int(_stat(stats, label, metric, "count") or 1)
            if std is not None and n > 1:
                entry["range"] = f"± {std * scale:.4g}"
            entry["extra"] = f"mean of {n} run(s)"
            (bigger if is_bigger else smaller).append(entry)
    return bigger, smaller


def write_outputs(folder: Path, checks: list[Check], markdown: str, cand: pd.DataFrame) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bigger, smaller = benchmark_entries(cand)
    files = {
        "gate.md": markdown,
        "gate.json": json.dumps({"passed": passed(checks), "checks": [asdict(c) for c in checks]}, indent=2),
        "benchmark-bigger.json": json.dumps(bigger, indent=2, ensure_ascii=False),
        "benchmark-smaller.json": json.dumps(smaller, indent=2, ensure_ascii=False),
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8")
        paths.append(path)
    return paths
