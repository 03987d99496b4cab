"""Per-request timeline: one bar per request, one panel per run, on a shared time axis.

A bar runs from the request's send time (a dotted lead-in from its scheduled time when it left late)
through its first token to its end: grey while waiting for the first token, then in its outcome's colour;
a black tick marks the first token, small ticks every later chunk's arrival. Serialized generation shows as
a staircase of coloured segments that never overlap, a stream cap as bands of at most N, continuous batching
as long overlapping bars. Above `max_requests` a run's requests are sampled evenly by send time (the caption
says so). For a sweep, give the comparison point of every profile: `timeline_figure(runs)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from reports import plots
from runfolder.frame import RunData, chunk_gaps

log = logging.getLogger(__name__)

MAX_REQUESTS = 400  # bars per panel: above, sampled evenly (a bar keeps about a point of height)
MAX_TOKEN_MARKS = 40_000  # chunk ticks per panel: above, every k-th chunk of each request
PANELS_PER_FIGURE = 8
WAITING_COLOR = "#b0bec5"  # sent -> first token, whatever the outcome
LAG_COLOR = "#90a4ae"
CHUNK_TICKS_MIN_LW = 1.5


@dataclass(frozen=True, slots=True)
class Timeline:
    """One run's bars; times in seconds from the start of the measured window, NaN where unknown."""

    label: str
    total: int  # requests in the run
    rows: np.ndarray  # which records the bars show (positions in run.records), in send order
    ranks: np.ndarray  # each bar's place in the send order (0 = the first request sent)
    scheduled_s: np.ndarray
    sent_s: np.ndarray
    first_s: np.ndarray  # first token; NaN for requests without one (failures, non-streamed replies)
    end_s: np.ndarray
    outcome: np.ndarray
    token_s: np.ndarray  # chunk arrivals after the first
    token_bar: np.ndarray  # the bar each chunk belongs to
    token_stride: int  # 1: every chunk drawn
    window_s: float  # the measured window's length

    @property
    def sampled(self) -> bool:
        return self.rows.size < self.total


def sample_rows(n: int, max_requests: int = MAX_REQUESTS) -> np.ndarray:
    """Positions 0..n-1, or `max_requests` of them spread evenly (first and last kept)."""
    if n <= max_requests:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_requests).round().astype(int))


def timeline_data(
    run: RunData, max_requests: int = MAX_REQUESTS, max_token_marks: int = MAX_TOKEN_MARKS
) -> Timeline:
    rec = run.records
    order = np.argsort(rec["scheduled_ts_s"].to_numpy(dtype=float), kind="stable")
    ranks = sample_rows(len(rec), max_requests)
    rows = order[ranks]
    start = run.window_start_s

    def column(name: str) -> np.ndarray:
        values: np.ndarray = rec[name].to_numpy(dtype=float, na_value=np.nan)[rows]
        return values

    scheduled = column("scheduled_ts_s") - start
    sent = scheduled + np.nan_to_num(column("schedule_lag_s"))
    first = scheduled + column("ttft_s")
    token_s, token_bar, stride = _chunk_marks(run, rows, first, max_token_marks)
    return Timeline(
        label=run.label,
        total=len(rec),
        rows=rows,
        ranks=ranks,
        scheduled_s=scheduled,
        sent_s=sent,
        first_s=first,
        end_s=column("end_ts_s") - start,
        outcome=rec["outcome"].astype(str).to_numpy()[rows],
        token_s=token_s,
        token_bar=token_bar,
        token_stride=stride,
        window_s=run.duration_s,
    )


def _chunk_marks(
    run: RunData, rows: np.ndarray, first: np.ndarray, max_marks: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Arrival times of every chunk after the first (first token + running sum of the gaps), thinned to at
    most `max_marks` by keeping every k-th chunk of each request."""
    streamed = np.flatnonzero(~np.isnan(first))
    if streamed.size == 0:
        return np.empty(0), np.empty(0, dtype=int), 1
    counts, gaps = chunk_gaps(run, rows[streamed])
    bar = np.repeat(streamed, counts)
    offsets = np.cumsum(counts) - counts  # where each request's gaps begin in `gaps`
    cum = np.cumsum(gaps)
    before = np.concatenate([[0.0], cum])[offsets]
    times = first[bar] + cum - np.repeat(before, counts)
    stride = max(int(np.ceil(times.size / max_marks)), 1)
    position = np.arange(times.size) - np.repeat(offsets, counts)  # chunk number within its request
    keep = position % stride == stride - 1
    return times[keep], bar[keep], stride


def panel_height_in(bars: int) -> float:
    # Taller panels for more bars: at 400 a bar keeps about half a point of height.
    return float(np.clip(1.4 + bars * 0.009, 2.2, 5.0))


def line_width(bars: int) -> float:
    """A bar's thickness in points: about 70 % of its share of the panel's plotting height."""
    return float(np.clip(0.7 * 0.8 * 72 * panel_height_in(bars) / max(bars, 1), 0.4, 9.0))


def draws_chunk_ticks(bars: int) -> bool:
    # Thinner bars than this (about 120 a panel) would blur the ticks into a grey smear.
    return line_width(bars) >= CHUNK_TICKS_MIN_LW


def _segments(x0: np.ndarray, x1: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """One ((x0, y), (x1, y)) pair a bar, as LineCollection takes them."""
    return list(np.stack([np.column_stack([x0, y]), np.column_stack([x1, y])], axis=1))


def draw(ax: Axes, t: Timeline) -> None:
    """One run's bars on `ax`; rasterized in the SVG too (thousands of marks would make it megabytes)."""
    y = np.arange(t.rows.size, dtype=float)
    lw = line_width(t.rows.size)
    has_first = ~np.isnan(t.first_s)
    late = t.sent_s - t.scheduled_s > 1e-3
    wait_end = np.where(has_first, t.first_s, t.end_s)
    lag = _segments(t.scheduled_s[late], t.sent_s[late], y[late])
    ax.add_collection(LineCollection(lag, colors=LAG_COLOR, lw=lw / 2, ls=":", rasterized=True))
    waiting = _segments(t.sent_s[has_first], wait_end[has_first], y[has_first])
    ax.add_collection(LineCollection(waiting, colors=WAITING_COLOR, lw=lw, rasterized=True))
    colors = np.array([plots.OUTCOME_COLORS.get(o, "black") for o in t.outcome])
    start = np.where(has_first, t.first_s, t.sent_s)  # no first token: the whole bar in the outcome's colour
    ax.add_collection(LineCollection(_segments(start, t.end_s, y), colors=colors, lw=lw, rasterized=True))
    # A refusal lasts milliseconds: a dot at its end keeps it visible on a minutes-long axis.
    failed = t.outcome != "success"
    dot = max(lw * 1.4, 2.5)
    ax.scatter(t.end_s[failed], y[failed], s=dot**2, c=colors[failed], lw=0, zorder=3, rasterized=True)
    tick = float(np.clip(lw * 1.8, 1.2, 14.0))
    ax.plot(t.first_s[has_first], y[has_first], "|", color="black", ms=tick, mew=min(0.9, 0.4 + lw / 8),
            ls="none", rasterized=True)  # fmt: skip
    if draws_chunk_ticks(t.rows.size):
        ax.plot(t.token_s, y[t.token_bar], "|", color="#263238", ms=tick * 0.6, mew=0.5, alpha=0.6,
                ls="none", rasterized=True)  # fmt: skip
    ax.axvline(t.window_s, color="black", lw=0.8, ls="--", alpha=0.6)
    ax.autoscale_view()
    ax.set_ylim(t.rows.size - 0.5, -0.5)  # the first request at the top
    ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: _request_number(t, v)))
    ax.set_ylabel("request (by send)")
    ax.grid(axis="y", visible=False)


def _request_number(t: Timeline, position: float) -> str:
    """The y tick: the request's number in send order (sampled bars keep their true numbers)."""
    i = round(position)
    return f"{t.ranks[i] + 1}" if 0 <= i < t.ranks.size else ""


def panel_title(run: RunData, t: Timeline) -> str:
    shown = (
        f"{t.rows.size:,} of {t.total:,} requests (evenly sampled)" if t.sampled else f"{t.total:,} requests"
    )
    profile = f", profile {run.profile}" if run.profile else ""
    return f"{run.label}: {shown}, {run.load.describe()}{profile}"


def _legend_handles(outcomes: set[str]) -> list[Line2D]:
    handles = [
        Line2D([], [], color=LAG_COLOR, lw=1.2, ls=":", label="due -> sent (late)"),
        Line2D([], [], color=WAITING_COLOR, lw=5, label="waiting for the first token"),
        Line2D([], [], color="black", marker="|", ls="none", ms=9, label="first token"),
        Line2D([], [], color="#263238", marker="|", ls="none", ms=6, label="later chunks"),
        Line2D([], [], color="black", lw=0.8, ls="--", label="end of the measured window"),
    ]
    handles += [
        Line2D([], [], color=plots.OUTCOME_COLORS[o], lw=5, label=plots.OUTCOME_NAMES[o])
        for o in plots.OUTCOME_COLORS
        if o in outcomes
    ]
    return handles


def timeline_figure(
    runs: Sequence[RunData], *, max_requests: int = MAX_REQUESTS, titles: Sequence[str] | None = None
) -> Figure:
    """One panel per run, stacked on a shared time axis (seconds from each run's measured window start)."""
    data = [timeline_data(r, max_requests) for r in runs]
    heights = [panel_height_in(t.rows.size) for t in data]
    fig = Figure(figsize=(11, 1.0 + sum(heights)))
    axes = fig.subplots(len(data), 1, sharex=True, squeeze=False, height_ratios=heights)[:, 0]
    for i, (ax, run, t) in enumerate(zip(axes, runs, data, strict=True)):
        draw(ax, t)
        ax.set_title(titles[i] if titles else panel_title(run, t), fontsize=9, loc="left")
    axes[-1].set_xlabel("Time since the start of the measured window (s)")
    axes[0].set_xlim(left=min(0.0, *(float(np.nanmin(t.scheduled_s, initial=0.0)) for t in data)))
    outcomes = {o for t in data for o in t.outcome}
    axes[0].legend(
        handles=_legend_handles(outcomes), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0)
    )
    fig.tight_layout()
    return fig


def timeline_caption(runs: Sequence[RunData], max_requests: int = MAX_REQUESTS) -> str:
    shown = []
    for run in runs:
        n = len(run.records)
        text = (
            f"{run.label}: {min(n, max_requests):,} of {n:,} requests, sampled evenly by send time"
            if n > max_requests
            else f"{run.label}: all {n:,} requests"
        )
        shown.append(
            text if draws_chunk_ticks(min(n, max_requests)) else f"{text} (too dense for chunk ticks)"
        )
    return (
        "Per-request timeline, one panel per run on a shared time axis: each bar runs from the request's "
        "send (dotted from its due time when it left late) through its first token (black tick; grey before "
        "it) to its end, in its outcome's colour (a dot at the end of each failure); small ticks mark later "
        "token chunks. " + "; ".join(shown) + "."
    )


def write_timelines(
    runs: Sequence[RunData], folder: Path, *, name: str = "timeline", max_requests: int = MAX_REQUESTS
) -> list[tuple[Path, str]]:
    """timeline.png (and .svg), PANELS_PER_FIGURE runs per file (timeline_2.png...); (PNG, caption) each."""
    out = []
    for i in range(0, len(runs), PANELS_PER_FIGURE):
        part = list(runs[i : i + PANELS_PER_FIGURE])
        stem = name if i == 0 else f"{name}_{i // PANELS_PER_FIGURE + 1}"
        fig = timeline_figure(part, max_requests=max_requests)
        out.append((plots.save(fig, folder, stem), timeline_caption(part, max_requests)))
    return out
