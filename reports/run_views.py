"""The per-request timeline and the server's metrics for a set of runs, each as PNG/SVG (report.md) and as
an interactive chart (report.html); used by the comparison report and, at its headline load, the sweep's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from reports import interactive as ia
from reports import interactive_server, server_plots, timeline
from reports.interactive_timeline import timeline_chart
from reports.server_series import ServerSeries
from runfolder.frame import RunData

log = logging.getLogger(__name__)

Figures = list[tuple[Path, str]]  # (PNG, caption)
Section = tuple[str, str, pd.DataFrame]


def write_views(
    runs: Sequence[RunData], folder: Path, caption_suffix: str = ""
) -> tuple[Figures, dict[Path, str]]:
    """timeline.png (8 panels a file) and server_metrics_<label>.png per run that scraped the server, with
    their interactive charts (PNG path -> chart div)."""
    stems = timeline.write_timelines(runs, folder)
    charts = {
        png: ia.to_div(
            timeline_chart(runs[i * timeline.PANELS_PER_FIGURE : (i + 1) * timeline.PANELS_PER_FIGURE]),
            png.stem,
        )
        for i, (png, _) in enumerate(stems)
    }
    server = server_plots.write_server_metrics_plots(runs, folder)
    charts |= interactive_server.charts(runs, [png for png, _ in server])
    return [(png, caption + caption_suffix) for png, caption in stems + server], charts


def server_metrics_status(run: RunData) -> str:
    """What the report can show of the server's side of a run, in words."""
    info = run.summary.get("server_metrics")
    if not info:
        return "absent: no server_metrics.csv (the load test predates server-metrics scraping)"
    series = ServerSeries.of(run)
    if series is None or series.scrape_ts_s.size < 2:
        return f"absent: {info.get('note') or 'scraping was off or got fewer than two scrapes'}"
    every = info.get("interval_s")
    return f"{series.scrape_ts_s.size} scrapes" + (f", every {every:g} s" if every else "")


def headline_views(
    runs: Sequence[RunData], folders: Mapping[str, str], rate: float, plots: Path
) -> tuple[Section, Figures, dict[Path, str]]:
    """At the sweep's headline load: every profile's timeline on one time axis, each one's server metrics,
    and a table naming the runs and whether they hold server metrics (older sweep folders do not)."""
    title = "At the headline load: per-request timeline and the server's metrics"
    if not folders:  # no profile ran at that load (a sweep stopped early)
        return (title, f"No run at the headline load ({rate:.2f} req/s).", pd.DataFrame()), [], {}
    figures, charts = write_views(runs, plots, f" At the headline load, {rate:.2f} req/s offered.")
    cells = pd.DataFrame(
        {
            "profile": list(folders),
            "run folder": list(folders.values()),
            "requests": [str(len(r.records)) for r in runs],
            "server metrics": [server_metrics_status(r) for r in runs],
        }
    )
    shown = sum(png.stem.startswith("server_metrics") for png, _ in figures)
    note = (
        f"The runs at the headline load ({rate:.2f} req/s): their per-request timeline, one panel per "
        "profile on one time axis (how each profile scheduled the same arrivals), and "
        + (
            f"the server's metrics over the run for the {shown} that scraped them (figures below)."
            if shown
            else "no server-metrics figure: none of these runs scraped the server's metrics."
        )
    )
    return (title, note, cells), figures, charts
