"""Runs -> tables, plots, Markdown and HTML in one folder: the output of `compare` and `reproduce`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from reports import html, interactive_runs, plots, reconcile, run_views
from reports import markdown as md
from reports.aliases import alias_frame
from reports.metrics import label_stats, runs_frame
from reports.tables import Tables
from reports.workload_tables import workload_sections
from runfolder.figures import Slo
from runfolder.frame import RunData

log = logging.getLogger(__name__)

Section = tuple[str, str, pd.DataFrame]  # (title, note, formatted cells)


@dataclass(slots=True)
class Report:
    folder: Path
    tables: Tables | None  # None: a sweep's report, whose tables are its own sections
    plots: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    charts: dict[Path, str] = field(default_factory=dict)  # PNG -> its interactive chart, for report.html

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"


def by_label(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    grouped: dict[str, list[RunData]] = {}
    for run in runs:
        grouped.setdefault(run.label, []).append(run)
    return grouped


def run_warnings(runs: Sequence[RunData]) -> list[str]:
    """What the load test itself flagged (generator behind, cut requests), per run."""
    out = []
    for run in runs:
        out += [f"{run.path.name} ({run.label}): {w}" for w in run.summary.get("warnings") or ()]
        if run.summary.get("requests") not in (None, len(run.records)):
            out.append(
                f"{run.path.name}: summary.json counts {run.summary['requests']} requests, "
                f"records.csv holds {len(run.records)}"
            )
    return out


def intro_lines(runs: Sequence[RunData]) -> list[str]:
    models = sorted({str(r.metadata.get("model")) for r in runs if r.metadata.get("model")})
    commits = sorted({(r.metadata.get("git") or {}).get("commit") or "" for r in runs} - {""})
    machines = sorted({(r.metadata.get("machine") or {}).get("platform") or "" for r in runs} - {""})
    lines = [
        f"{len(runs)} run(s), {len(by_label(runs))} label(s); runs sharing a label are repeats. "
        f"Generated {datetime.now(UTC).isoformat(timespec='seconds')}.",
    ]
    if models:
        lines.append(f"Model: {', '.join(models)}.")
    if commits:
        lines.append(f"Code: git {', '.join(c[:12] for c in commits)}.")
    if machines:
        lines.append(f"Machine: {', '.join(machines)}.")
    if methods := prompt_length_methods(runs):
        lines.append(f"Prompt lengths made by: {', '.join(methods)}.")
    return lines


# summary.json workload.prompt_length_method, as the report words it (older run folders lack it).
PROMPT_LENGTH_WORDS = {
    "tokenizer": "a local tokenizer (exact)",
    "server_tokenize": "the server's /tokenize (exact)",
    "calibrated": "a fit of the server's usage (approximate)",
    "words": "word counts (approximate)",
}


def prompt_length_methods(runs: Sequence[RunData]) -> list[str]:
    found = {(r.summary.get("workload") or {}).get("prompt_length_method") for r in runs} - {None}
    return sorted(PROMPT_LENGTH_WORDS.get(str(m), str(m)) for m in found)


def make_plots(
    runs: Sequence[RunData], tables: Tables, folder: Path
) -> tuple[list[tuple[Path, str]], dict[Path, str]]:
    """The figures as (PNG, caption), and the interactive charts of those that have one (PNG -> chart)."""
    grouped = by_label(runs)
    out = [
        (
            plots.save(plots.throughput(tables.runs, tables.stats), folder, "throughput"),
            "Output throughput per label: bars are the mean over repeats, whiskers min-max, dots each run.",
        ),
        (
            plots.save(plots.outcomes(tables.stats), folder, "outcomes"),
            "What happened to every attempted request: success, rejected, timed out, error.",
        ),
        (
            plots.save(plots.latency_cdfs(grouped), folder, "latency_cdf"),
            "TTFT and end-to-end latency CDFs of successful requests (all repeats pooled).",
        ),
        (
            plots.save(plots.over_time(grouped), folder, "over_time"),
            "Throughput and outcomes over the measured window (mean over repeats).",
        ),
    ]
    if plots.has_sweep(tables.runs):
        out.append(
            (
                plots.save(plots.sweep(tables.runs), folder, "sweep"),
                "Throughput and latency against the offered load: the knee is where throughput stops rising.",
            )
        )
    charts = interactive_runs.charts(tables.runs, tables.stats, grouped, folder)
    # The per-request timeline and the server's metrics over time, for the first run of each label.
    which = " The first run of each label is shown." if any(len(r) > 1 for r in grouped.values()) else ""
    figures, more = run_views.write_views([r[0] for r in grouped.values()], folder, which)
    return out + figures, charts | more


def to_markdown(
    title: str,
    intro: Sequence[str],
    sections: Sequence[Section],
    figures: Sequence[tuple[Path, str]],
    warnings: Sequence[str],
    warnings_at: int = 0,
) -> str:
    parts = [f"# {title}", ""]
    for line in intro:
        parts += [line, ""]  # one paragraph each
    for i, (heading, note, cells) in enumerate(sections):
        if i == warnings_at and warnings:
            parts += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
        parts += [f"## {heading}", "", note, "", md.table(cells), ""]
    if figures:
        parts += ["## Plots", ""]
        parts += [f"![{caption}](plots/{png.name})\n\n{caption}\n" for png, caption in figures]
    return "\n".join(parts)


def build(
    runs: Sequence[RunData],
    folder: Path,
    *,
    title: str = "Serving benchmark comparison",
    slo: Slo | None = None,
    lead_sections: Sequence[Section] = (),
    lead_intro: Sequence[str] = (),
) -> Report:
    """Write report.md, report.html, the CSV tables and plots/ into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = runs_frame(list(runs), slo)
    tables = Tables.build(frame, label_stats(frame))
    tables.write_csv(folder)
    reconciled = reconcile.reconcile_runs(runs)
    counts_warnings = [w for r in reconciled for w in r.warnings()]
    report = Report(folder, tables, warnings=run_warnings(runs) + counts_warnings)
    report.plots, report.charts = make_plots(runs, tables, folder / "plots")
    counts = reconcile.section(reconciled)
    sections = [
        *lead_sections,
        *tables.sections(),
        *workload_sections(runs),
        *([counts] if counts else []),
        (
            "Metric names",
            "The same figures under the names other tools use (vLLM bench serve first).",
            alias_frame(),
        ),
    ]
    intro = [*lead_intro, *intro_lines(runs)]
    # The headline (lead sections) first; then what the load test flagged; then the detail.
    at = len(lead_sections)
    report.markdown_path.write_text(
        to_markdown(title, intro, sections, report.plots, report.warnings, at), encoding="utf-8"
    )
    report.html_path.write_text(
        html.render(title, intro, sections, report.plots, report.warnings, at, report.charts),
        encoding="utf-8",
    )
    log.info("report written to %s", folder)
    return report
