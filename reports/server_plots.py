"""The server's metrics over a run, on the same time axis as the client's view of it.

Panels: requests in flight as the client saw them against what the server held (in flight, limiter slots
and queue); the engine (sequences decoding and waiting, batch size); arrivals and refusals per second,
client and server; output tokens per second, client by token arrival and server by its counter. Drawn
for runs whose load test scraped the server (server_metrics.csv).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports import plots
from reports.metrics import bin_width, token_arrivals
from reports.server_series import ServerSeries
from runfolder.frame import RunData

log = logging.getLogger(__name__)

IN_FLIGHT = ("mlxserving_requests_in_flight",)
LIMITER_ACTIVE, LIMITER_QUEUED = ("mlxserving_limiter_active",), ("mlxserving_limiter_queued",)
RUNNING = ("mlxserving_sequences_running", "vllm:num_requests_running")
WAITING = ("mlxserving_sequences_waiting", "vllm:num_requests_waiting")
BATCH = ("mlxserving_batch_size",)
REQUESTS = "mlxserving_requests_total"
OUTPUT_TOKENS = "mlxserving_output_tokens_total"
CLIENT_COLOR = "black"


def client_in_flight(run: RunData, edges: np.ndarray) -> np.ndarray:
    """Requests out, averaged over each bin (exact: the step function integrated). Instantaneous values
    flicker to 0 and back whenever a closed-loop user's next request follows its last."""
    rec = run.records
    sent = rec["scheduled_ts_s"].to_numpy(dtype=float) + np.nan_to_num(
        rec["schedule_lag_s"].to_numpy(dtype=float, na_value=np.nan)
    )
    start, end = sent - run.window_start_s, rec["end_ts_s"].to_numpy(dtype=float) - run.window_start_s
    lo, hi = edges[:-1, None], edges[1:, None]
    overlap = np.clip(np.minimum(end[None, :], hi) - np.maximum(start[None, :], lo), 0.0, None)
    share: np.ndarray = overlap.sum(axis=1) / np.diff(edges)
    return share


def per_s(times: np.ndarray, weights: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(times, bins=edges, weights=weights)
    return counts / np.diff(edges)


def _step(ax: Axes, starts: np.ndarray, values: np.ndarray, width: float | np.ndarray, **style: Any) -> None:
    """Values held over [start, start + width): a post step that also covers the last interval."""
    if starts.size == 0:
        return
    ends = starts + width
    ax.step(np.append(starts, ends[-1]), np.append(values, values[-1]), where="post", **style)


def _concurrency(ax: Axes, run: RunData, series: ServerSeries, t: np.ndarray, edges: np.ndarray) -> None:
    """The client's requests out against the server's in flight; a limiter's slots and queue stacked under
    it (their sum is the limiter's share of the in-flight requests)."""
    if series.exports(LIMITER_ACTIVE[0]):
        active, queued = series.gauge(LIMITER_ACTIVE), series.gauge(LIMITER_QUEUED)
        ax.fill_between(
            t, 0, active, step="post", color="#80cbc4", alpha=0.6, lw=0, label="server: limiter active"
        )
        ax.fill_between(t, active, active + queued, step="post", color="#ef9a9a", alpha=0.6, lw=0,
                        label="server: limiter queued (stacked)")  # fmt: skip
    if series.exports(IN_FLIGHT[0]):
        ax.step(t, series.gauge(IN_FLIGHT), where="post", color="#1565c0", lw=1.8, marker="o", ms=2.5,
                label="server: in flight")  # fmt: skip
    width = float(edges[1] - edges[0])
    _step(ax, edges[:-1], client_in_flight(run, edges), width, color=CLIENT_COLOR, lw=1.2,
          label="client: requests out (bin mean)")  # fmt: skip
    ax.set_ylabel("requests")
    ax.set_ylim(bottom=0)
    ax.set_title("Requests in flight: the client's (mean per bin), the server's (at each scrape)", fontsize=9)


def _engine(ax: Axes, series: ServerSeries, t: np.ndarray) -> None:
    """Sequences in the engine, stacked: decoding, then waiting (prefill, a batch slot, a hold); and the
    latest step's batch size. Stacked areas, because the lines would lie on top of each other."""
    running, waiting = series.gauge(RUNNING), series.gauge(WAITING)
    ax.fill_between(t, 0, running, step="post", color="#66bb6a", alpha=0.8, lw=0, label="server: decoding")
    ax.fill_between(t, running, running + waiting, step="post", color="#ffa726", alpha=0.8, lw=0,
                    label="server: waiting (stacked)")  # fmt: skip
    if any(series.exports(n) for n in BATCH):
        ax.step(t, series.gauge(BATCH), where="post", color="#6a1b9a", ls="--", marker="o", ms=2.5,
                label="server: batch size")  # fmt: skip
    ax.set_ylabel("sequences")
    ax.set_ylim(bottom=0)
    ax.set_title("The server's engine at each scrape", fontsize=9)


def _arrivals(ax: Axes, run: RunData, series: ServerSeries, edges: np.ndarray) -> None:
    rec = run.records
    start = run.window_start_s
    sent = rec["scheduled_ts_s"].to_numpy(dtype=float) - start
    rejected = (rec["outcome"] == "rejected").to_numpy()
    ends = rec["end_ts_s"].to_numpy(dtype=float) - start
    width = float(edges[1] - edges[0])
    _step(ax, edges[:-1], per_s(sent, None, edges), width, color=CLIENT_COLOR, label="client: sent")
    _step(ax, edges[:-1], per_s(ends[rejected], None, edges), width, color="#f9a825", lw=1.6,
          label="client: rejected")  # fmt: skip
    if series.exports(REQUESTS):
        starts, widths, refused = series.rate(REQUESTS, {"outcome": "rejected"}, min_width(series))
        _step(ax, starts - start, refused, widths, color="#e65100", ls="--", label="server: rejected")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Arrivals and refusals (client in bins of {width:g} s, server between scrapes)", fontsize=9)


def min_width(series: ServerSeries) -> float:
    return 0.5 * float(series.summary.get("interval_s") or 0)


def _tokens(ax: Axes, run: RunData, series: ServerSeries, edges: np.ndarray) -> None:
    times, tokens = token_arrivals(run)
    width = float(edges[1] - edges[0])
    _step(ax, edges[:-1], per_s(times - run.window_start_s, tokens, edges), width, color=CLIENT_COLOR,
          label="client: by token arrival")  # fmt: skip
    if series.exports(OUTPUT_TOKENS):
        starts, widths, rate = series.rate(OUTPUT_TOKENS, None, min_width(series))
        _step(ax, starts - run.window_start_s, rate, widths, color="#1565c0", ls="--",
              label="server: output tokens counter")  # fmt: skip
    ax.set_ylabel("output tokens/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Output token rate (the server counts a reply's tokens when it completes)", fontsize=9)


def time_grid(run: RunData, series: ServerSeries) -> tuple[np.ndarray, np.ndarray]:
    """Scrape times and the client's bin edges, in seconds from the window start; the bins are no narrower
    than a scrape interval, and start at the first scrape when it came before the window (warm-up)."""
    t = series.scrape_ts_s - run.window_start_s
    span = max(float(t[-1]), run.duration_s)
    width = max(bin_width(span, 60), float(series.summary.get("interval_s") or 0))
    return t, np.arange(min(float(t[0]), 0.0), span + width, width)


def server_metrics_figure(run: RunData, series: ServerSeries) -> Figure:
    """The panels for one run, on seconds from the start of its measured window."""
    t, edges = time_grid(run, series)
    left = float(edges[0])
    engine = any(series.exports(n) for n in (*RUNNING, *WAITING))
    fig = Figure(figsize=(11, 8.5 + 2.4 * engine))
    axes = list(fig.subplots(3 + engine, 1, sharex=True))
    _concurrency(axes[0], run, series, t, edges)
    if engine:
        _engine(axes[1], series, t)
    _arrivals(axes[-2], run, series, edges)
    _tokens(axes[-1], run, series, edges)
    for ax in axes:
        if left < 0:  # warm-up: the server's series run, the client's records do not (not in records.csv)
            ax.axvspan(left, 0, color="#eceff1", zorder=0, label="warm-up (no client records)")
        ax.axvline(run.duration_s, color="black", lw=0.8, ls="--", alpha=0.6)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("Time since the start of the measured window (s); dashed: its end")
    axes[-1].set_xlim(left, float(t[-1]))
    fig.suptitle(f"{run.label}: server metrics over the run ({run.path.name})", fontsize=10)
    fig.tight_layout()
    return fig


def _stem(label: str) -> str:
    return "server_metrics_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run")


def plotted(runs: Sequence[RunData]) -> list[tuple[RunData, ServerSeries]]:
    """The runs that get a figure: those with at least two scrapes of server metrics."""
    found = [(run, ServerSeries.of(run)) for run in runs]
    return [(run, s) for run, s in found if s is not None and s.scrape_ts_s.size >= 2]


def write_server_metrics_plots(runs: Sequence[RunData], folder: Path) -> list[tuple[Path, str]]:
    """One figure per run that has server metrics; (PNG, caption) each."""
    out: list[tuple[Path, str]] = []
    for run, series in plotted(runs):
        stem = _stem(run.label)
        if any(png.stem == stem for png, _ in out):  # repeats share a label: keep each run's file
            stem = f"{stem}_{len(out) + 1}"
        every = series.summary.get("interval_s")
        caption = (
            f"{run.label}: the server's metrics over the run (scraped every {every:g} s) beside the client's "
            "view: requests in flight, arrivals and refusals per second, output tokens per second. The "
            "client's series hold the measured requests only: warm-up requests (not in records.csv) still in "
            "flight early in the window show on the server's side alone."
        )
        out.append((plots.save(server_metrics_figure(run, series), folder, stem), caption))
    return out
