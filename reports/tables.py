"""The report's tables as pandas DataFrames (numbers in display units, for CSV) and as Markdown.

Labels keep the order they were given; the first label is the baseline of the deltas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports import markdown as md
from reports.metrics import METRICS

log = logging.getLogger(__name__)

# (metric key, CSV column, Markdown header, decimals). Rates show as percentages, latencies in ms.
SUMMARY_COLUMNS = (
    ("output_tokens_per_s", "output_tok_per_s", "Output throughput (tok/s)", 1),
    ("success_rate", "success_pct", "Success", 1),
    ("rejection_rate", "rejected_pct", "Rejected", 1),
    ("timeout_rate", "timeout_pct", "Timed out", 1),
    ("error_rate", "error_pct", "Errors", 1),
    ("cut_rate", "cut_pct", "Cut at end", 1),
    ("requests_per_s", "requests_per_s", "Completed req/s", 2),
)
LATENCY_COLUMNS = (
    *(
        (f"{lat}_p{p}_s", f"{lat}_p{p}_ms", f"{lat.upper()} p{p} (ms)", 1)
        for lat in ("ttft", "e2e", "tpot")
        for p in (50, 90, 99)
    ),
    ("goodput_requests_per_s", "goodput_req_per_s", "Goodput (req/s)", 2),
    ("slo_attainment", "slo_attainment_pct", "SLO attainment", 1),
)
# Deltas: rates in percentage points, everything else relative to the baseline in %.
DELTA_METRICS = (
    "output_tokens_per_s",
    "success_rate",
    "rejection_rate",
    "timeout_rate",
    "error_rate",
    "cut_rate",
    "requests_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "tpot_p50_s",
)


def _is_rate(metric: str) -> bool:
    return METRICS[metric].unit == "%"


def _mean(stats: pd.DataFrame, metric: str, stat: str = "mean") -> pd.Series:
    if (metric, stat) not in stats:
        return pd.Series(float("nan"), index=stats.index)
    return stats[(metric, stat)] * METRICS[metric].scale


def summary_table(stats: pd.DataFrame, repeats: pd.Series) -> pd.DataFrame:
    """The guide's comparison per label: throughput (with its spread), outcome shares, completed req/s."""
    out = pd.DataFrame(index=stats.index)
    out["repeats"] = repeats.reindex(stats.index).astype(int)
    for metric, column, _, _ in SUMMARY_COLUMNS:
        out[column] = _mean(stats, metric)
        if metric == "output_tokens_per_s":
            out[f"{column}_min"] = _mean(stats, metric, "min")
            out[f"{column}_max"] = _mean(stats, metric, "max")
    return out


def latency_table(stats: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=stats.index)
    for metric, column, _, _ in LATENCY_COLUMNS:
        out[column] = _mean(stats, metric)
    return out


def delta_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Each label against the first: percentage points for rates, relative change in % otherwise."""
    if len(stats) < 2:
        return pd.DataFrame()
    base = stats.iloc[0]
    rows = {}
    for label, row in stats.iloc[1:].iterrows():
        cells = {"baseline": stats.index[0]}
        for metric in DELTA_METRICS:
            if (metric, "mean") not in stats:
                continue
            b, c = base[(metric, "mean")], row[(metric, "mean")]
            if _is_rate(metric):
                cells[f"{metric.removesuffix('_rate')}_change_pp"] = (c - b) * 100
            else:
                cells[f"{metric}_change_pct"] = (c / b - 1) * 100 if b else float("nan")
        rows[label] = cells
    return pd.DataFrame.from_dict(rows, orient="index")


def labels_long(stats: pd.DataFrame) -> pd.DataFrame:
    """Every metric per label with mean/min/max/std/n, in display units (labels.csv)."""
    rows = []
    for label, row in stats.iterrows():
        for metric in dict.fromkeys(m for m, _ in stats.columns):
            spec = METRICS[metric]
            rows.append(
                {
                    "label": label,
                    "metric": metric,
                    "unit": spec.unit,
                    **{
                        s: row[(metric, s)] * (spec.scale if s != "count" else 1)
                        for s in ("mean", "min", "max", "std")
                    },
                    "repeats": int(row[(metric, "count")]),
                }
            )
    return pd.DataFrame(rows)


# ---- formatted cells (for Markdown and HTML) ----


def _with_spread(mean: float, low: float, high: float, repeats: int, decimals: int) -> str:
    if repeats > 1 and pd.notna(low):
        return f"{md.fmt(mean, decimals)} ({md.fmt(low, decimals)}-{md.fmt(high, decimals)})"
    return md.fmt(mean, decimals)


def summary_cells(summary: pd.DataFrame) -> pd.DataFrame:
    cells = pd.DataFrame({"Label": summary.index, "Repeats": summary["repeats"].astype(int).to_numpy()})
    for metric, column, header, decimals in SUMMARY_COLUMNS:
        if metric == "output_tokens_per_s":
            cells[header] = [
                _with_spread(r[column], r[f"{column}_min"], r[f"{column}_max"], int(r["repeats"]), decimals)
                for _, r in summary.iterrows()
            ]
        else:
            suffix = " %" if _is_rate(metric) else ""
            cells[header] = [md.fmt(v, decimals, suffix) for v in summary[column]]
    return cells


def latency_cells(latency: pd.DataFrame) -> pd.DataFrame:
    cells = pd.DataFrame({"Label": latency.index})
    for metric, column, header, decimals in LATENCY_COLUMNS:
        if latency[column].notna().any():
            suffix = " %" if _is_rate(metric) else ""
            cells[header] = [md.fmt(v, decimals, suffix) for v in latency[column]]
    return cells


def delta_cells(deltas: pd.DataFrame) -> pd.DataFrame:
    cells = pd.DataFrame({"Label": deltas.index, "vs": deltas["baseline"].to_numpy()})
    for column in deltas.columns.drop("baseline"):
        if column.endswith("_change_pp"):
            name = METRICS[f"{column.removesuffix('_change_pp')}_rate"].title
            cells[f"{name} (pp)"] = [md.signed(v, 1) for v in deltas[column]]
        else:
            name = METRICS[column.removesuffix("_change_pct")].title
            cells[f"{name} (%)"] = [md.signed(v, 1) for v in deltas[column]]
    return cells


def runs_cells(runs: pd.DataFrame) -> pd.DataFrame:
    def ms(values: pd.Series) -> list[str]:
        return [md.fmt(v * 1000 if v is not None and pd.notna(v) else None, 1) for v in values]

    return pd.DataFrame(
        {
            "Label": runs["label"],
            "Run folder": [Path(p).name for p in runs["run"]],
            "Load": [_load_text(k, v) for k, v in zip(runs["load_kind"], runs["load"], strict=True)],
            "Requests": runs["requests"],
            "Success": runs["successes"],
            "Rejected": runs["rejections"],
            "Timed out": runs["timeouts"],
            "Errors": runs["errors"],
            "Cut": runs["cuts"],
            "Output tok/s": [md.fmt(v, 1) for v in runs["output_tokens_per_s"]],
            "TTFT p50 (ms)": ms(runs["ttft_p50_s"]),
            "E2E p50 (ms)": ms(runs["e2e_p50_s"]),
        }
    )


def _load_text(kind: str | None, value: float | None) -> str:
    if kind == "users" and value is not None:
        return f"{value:g} users"
    if kind == "rate" and value is not None:
        return f"{value:g} req/s"
    return "—"


@dataclass(slots=True)
class Tables:
    runs: pd.DataFrame
    stats: pd.DataFrame
    summary: pd.DataFrame
    latency: pd.DataFrame
    deltas: pd.DataFrame

    @classmethod
    def build(cls, runs: pd.DataFrame, stats: pd.DataFrame) -> Tables:
        repeats = runs.groupby("label", sort=False).size()
        return cls(runs, stats, summary_table(stats, repeats), latency_table(stats), delta_table(stats))

    def sections(self) -> list[tuple[str, str, pd.DataFrame]]:
        """(title, one-line explanation, formatted cells) of each table, in report order."""
        out = [
            (
                "Summary",
                "The migration guide's figures per label: mean over repeats (min-max when repeated). "
                "Outcomes partition every attempted request.",
                summary_cells(self.summary),
            ),
            (
                "Latency",
                "Successful requests; each run's percentile, averaged over repeats. TPOT = (E2E - TTFT) / "
                "(output tokens - 1), vLLM's name.",
                latency_cells(self.latency),
            ),
        ]
        if not self.deltas.empty:
            out.append(
                (
                    f"Change against {self.deltas['baseline'].iloc[0]}",
                    "Rates in percentage points (pp); everything else relative, in %.",
                    delta_cells(self.deltas),
                )
            )
        out.append(("Runs", "Every run folder read.", runs_cells(self.runs)))
        return out

    def write_csv(self, folder: Path) -> list[Path]:
        written = []
        for name, frame, index in (
            ("runs.csv", self.runs, False),
            ("labels.csv", labels_long(self.stats), False),
            ("summary.csv", self.summary, True),
            ("latency.csv", self.latency, True),
            ("deltas.csv", self.deltas, True),
        ):
            if frame.empty:
                continue
            path = folder / name
            frame.to_csv(path, index=index, index_label="label" if index else None, float_format="%.6g")
            written.append(path)
        return written
