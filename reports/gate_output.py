"""The gate's outputs: gate.md (the verdict a reviewer reads; the workflow posts it as the job summary),
gate.json, and the figures in github-action-benchmark's customBiggerIsBetter / customSmallerIsBetter
format."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from reports import markdown as md
from reports.gate_checks import Check, Evaluation
from reports.gate_relative import RELATIVE_GATES
from reports.metrics import METRICS

Overall = Literal["pass", "fail", "inconclusive", "refused"]
ICONS = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "❔ inconclusive", "refused": "⛔ refused"}
HEADS = {
    "pass": "✅ **PASS**",
    "fail": "❌ **REGRESSION**",
    "inconclusive": "❔ **INCONCLUSIVE**",
    "refused": "⛔ **REFUSED**",
}
EXIT_CODES = {"pass": 0, "fail": 1, "refused": 2, "inconclusive": 3}


def _value_text(check: Check) -> str:
    if check.gate in RELATIVE_GATES:
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
    advisory = sum(c.verdict == "inconclusive" and c.advisory for c in checks)
    lines = [
        f"## Performance gate: {HEADS[verdict]}",
        "",
        f"Gates `{config_path}`; candidate `{candidate}`"
        + (f"; baseline `{baseline}`." if baseline else "."),
        f"{sum(c.verdict == 'fail' for c in checks)} failed, "
        f"{sum(c.verdict == 'inconclusive' and not c.advisory for c in checks)} inconclusive"
        + (f" (and {advisory} advisory), " if advisory else ", ")
        + f"{sum(c.verdict == 'pass' for c in checks)} passed.",
        "",
    ]
    if verdict == "inconclusive":
        more = [c.more_repeats for c in checks if c.verdict == "inconclusive" and not c.advisory]
        known = [m for m in more if m is not None]
        if known and len(known) == len(more) and max(known) == 0:
            advice = "wall-clock and CPU figures disagree (see the detail): run the gate again"
        elif known and len(known) == len(more):
            advice = f"about {max(known)} more pair(s) of runs would decide it (scripts/perf-gate --pairs)"
        else:
            advice = (
                "more runs than are practical would be needed: "
                "lower the noise (a quieter runner, longer blocks) or widen the threshold"
            )
        lines += [f"The runs cannot tell a change from noise (not a pass): {advice}.", ""]
    cells = pd.DataFrame(
        {
            "Label": [c.label for c in checks],
            "Gate": [c.gate for c in checks],
            "Measured": [_value_text(c) for c in checks],
            "Limit": [_limit_text(c) for c in checks],
            "Verdict": [ICONS[c.verdict] + (" (advisory)" if c.advisory else "") for c in checks],
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


def benchmark_entries(stats_frame: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(bigger-is-better, smaller-is-better) entries: {name, unit, value, range?, extra}."""
    bigger: list[dict[str, Any]] = []
    smaller: list[dict[str, Any]] = []
    for label in stats_frame.index:
        for metric, name, unit, is_bigger in BENCHMARK_METRICS:
            value = _stat(stats_frame, label, metric, "mean")
            if value is None:
                continue
            scale = METRICS[metric].scale
            entry: dict[str, Any] = {
                "name": f"{label} {name}",
                "unit": unit,
                "value": round(value * scale, 4),
            }
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
