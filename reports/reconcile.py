"""Client and server reconciled: what the load generator counted against the server's counters.

From the run folder only. The client's side is records.csv plus the requests it left out of the measured
window (warm-up, after the stop: summary.json `server_metrics.client_outside_window`), counted with
runfolder.server_metrics.client_counts; the server's side is each counter's increase from the scrape before
the first request to the one after the last (server_metrics.csv). Only figures the server exports are
compared. A difference is expected only from requests in flight at the scrape edges: cut by the end of the
run (the server may still finish them) or held by the server at either edge scrape; beyond that tolerance it
is a report warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports import markdown as md
from reports.server_series import ServerSeries
from runfolder.frame import RunData
from runfolder.server_metrics import CLIENT_FIGURES, client_counts

# figure -> (our server's counter sample, label filter); the client's side is runfolder's client_counts.
SERVER_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "requests": ("mlxserving_requests_total", {}),
    "successes": ("mlxserving_requests_total", {"outcome": "success"}),
    "rejections": ("mlxserving_requests_total", {"outcome": "rejected"}),
    "timeouts": ("mlxserving_requests_total", {"outcome": "timeout"}),
    "queue_timeouts": ("mlxserving_limiter_queue_timeouts_total", {}),
    "output_tokens": ("mlxserving_output_tokens_total", {}),
}
FIGURE_NAMES = {
    "requests": "requests",
    "successes": "successes",
    "rejections": "rejections (refused: 429 or an overload code)",
    "timeouts": "timeouts (the server's, not the client's deadline)",
    "queue_timeouts": "queue timeouts (the limiter's)",
    "output_tokens": "output tokens (of successes)",
}
# What a difference most likely means, by figure and sign (client minus server).
HINTS = {
    ("requests", 1): "requests the server never counted (refused before counting, or never reached it)",
    ("requests", -1): "requests the server counted that this client did not send (another client?)",
    ("rejections", 1): "requests the client counted as refused that the server counted otherwise",
    ("rejections", -1): "requests the server refused that the client counted otherwise (e.g. as errors)",
    ("successes", -1): "requests the server finished that the client did not count as successes",
}


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    client: float
    server: float
    tolerance: float

    @property
    def difference(self) -> float:
        return self.client - self.server

    @property
    def beyond(self) -> bool:
        return abs(self.difference) > self.tolerance


@dataclass(slots=True)
class Reconciliation:
    run: RunData
    rows: list[Row] = field(default_factory=list)  # every figure compared
    note: str | None = None  # why nothing (or not everything) could be compared

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.difference != 0]

    def warnings(self) -> list[str]:
        name = f"{self.run.path.name} ({self.run.label})"
        out = []
        for row in self.rows:
            if not row.beyond:
                continue
            hint = HINTS.get((row.figure, int(np.sign(row.difference))))
            out.append(
                f"{name}: client and server disagree on {FIGURE_NAMES[row.figure]}: client {row.client:g}, "
                f"server {row.server:g} (difference {row.difference:+g}, beyond the {row.tolerance:g} that "
                f"requests in flight at the scrape edges explain)" + (f": {hint}" if hint else "")
            )
        return out


def client_side(run: RunData) -> dict[str, float]:
    """The client's counts over every request of the run: records.csv and those outside the window."""
    rec = run.records
    inside = client_counts(
        rec["outcome"].astype(str), rec["outcome_detail"].fillna("").astype(str), rec["output_tokens"]
    )
    outside = (run.summary.get("server_metrics") or {}).get("client_outside_window") or {}
    return {k: inside[k] + float(outside.get(k) or 0) for k in CLIENT_FIGURES}


def edge_requests(run: RunData, series: ServerSeries) -> float:
    """Requests whose count may fall on either side of the edge scrapes: cut by the end of the run, and those
    the server held at the first and the last scrape."""
    cuts = float((run.records["outcome"] == "cut").sum())
    held = series.in_flight()
    return cuts + float(held[0] + held[-1])


def reconcile(run: RunData) -> Reconciliation:
    """The figures the server exports, client against server; a note when there is nothing to compare."""
    series = ServerSeries.of(run)
    info = run.summary.get("server_metrics")
    if series is None:
        note = (info or {}).get("note") or "the run has no server metrics (scraped by newer load tests)"
        return Reconciliation(run, note=note)
    if not series.complete:
        return Reconciliation(run, note=series.summary.get("note") or "no scrape after the run")
    client = client_side(run)
    edge = edge_requests(run, series)
    max_tokens = float(((run.metadata.get("options") or {}).get("max_tokens")) or 0)
    rows = [
        Row(
            figure,
            client[figure],
            series.increase(name, where),
            edge * max_tokens if figure == "output_tokens" else edge,
        )
        for figure, (name, where) in SERVER_COUNTERS.items()
        if series.exports(name)
    ]
    note = None if rows else "the server exports none of the counters compared (mlxserving_* names)"
    return Reconciliation(run, rows, note)


def reconcile_runs(runs: Sequence[RunData]) -> list[Reconciliation]:
    """Runs that scraped, or tried to (summary.json `server_metrics`); older run folders are left out."""
    return [reconcile(r) for r in runs if r.summary.get("server_metrics")]


def section(found: Sequence[Reconciliation]) -> tuple[str, str, pd.DataFrame] | None:
    """The report's table: one row per figure on which client and server differ (none: empty)."""
    if not found:
        return None
    rows = [
        {
            "Run": f"{r.run.path.name} ({r.run.label})",
            "Figure": FIGURE_NAMES[row.figure],
            "Client": md.fmt(row.client, 0),
            "Server": md.fmt(row.server, 0),
            "Difference": md.signed(row.difference, 0),
            "Tolerance": md.fmt(row.tolerance, 0),
        }
        for r in found
        for row in r.differences
    ]
    cells = pd.DataFrame(rows, columns=["Run", "Figure", "Client", "Server", "Difference", "Tolerance"])
    return "Client and server counts", _note(found, cells.empty), cells


def _note(found: Sequence[Reconciliation], agree: bool) -> str:
    compared = sorted({row.figure for r in found for row in r.rows}, key=CLIENT_FIGURES.index)
    parts = [
        "The client's counts (records.csv with the warm-up requests) against the rise of the server's "
        "counters from the scrape before the first request to the one after the last. Tolerance: requests "
        "in flight at those scrapes (cut by the end of the run, or still held by the server); beyond it, a "
        "difference is a warning."
    ]
    if compared:
        listed = ", ".join(FIGURE_NAMES[f].split(" (")[0] for f in compared)
        parts.append(
            f"Compared: {listed}. " + ("Every figure agrees." if agree else "Listed: the differences.")
        )
    parts += [f"{r.run.path.name}: {r.note}." for r in found if r.note]
    return " ".join(parts)
