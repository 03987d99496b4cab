"""A run's scraped server metrics (server_metrics.csv) as series: gauges per scrape, counter increases.

Counters are read as Prometheus does: an increase is the sum of the rises between consecutive scrapes, a
fall is a restart (the new value is the rise), and a series that first appears after the first scrape
started at 0 (prometheus_client creates a labelled child at its first increment).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runfolder.frame import RunData, read_server_metrics_frame

# Requests the server holds, by the names of the servers we know (ours, vLLM's).
IN_FLIGHT = ("mlxserving_requests_in_flight", "vllm:num_requests_running", "vllm:num_requests_waiting")


@dataclass(slots=True)
class ServerSeries:
    frame: pd.DataFrame  # ts_s, name, labels (JSON text), value
    scrape_ts_s: np.ndarray  # every scrape's time, ascending
    summary: dict[str, Any]  # summary.json `server_metrics`

    @classmethod
    def of(cls, run: RunData) -> ServerSeries | None:
        """The run's scraped metrics; None when it has none (scraping off, or an older run folder)."""
        info = run.summary.get("server_metrics") or {}
        frame = read_server_metrics_frame(run.path) if info.get("status") == "on" else None
        if frame is None or frame.empty:
            return None
        frame = frame.sort_values("ts_s", kind="stable").reset_index(drop=True)
        return cls(frame, np.unique(frame["ts_s"].to_numpy(dtype=float)), info)

    @property
    def complete(self) -> bool:
        """The last scrape came after the run (summary `last_ts_s`): counter deltas cover every request."""
        return self.summary.get("last_ts_s") is not None

    def exports(self, name: str) -> bool:
        return bool((self.frame["name"] == name).any())

    def select(self, names: Iterable[str], where: dict[str, str] | None = None) -> pd.DataFrame:
        rows = self.frame[self.frame["name"].isin(list(names))]
        if where:
            wanted = where.items()
            keep = {text: wanted <= _labels(text).items() for text in rows["labels"].unique()}
            rows = rows[rows["labels"].map(keep).astype(bool)]
        return rows

    def gauge(self, names: Iterable[str], where: dict[str, str] | None = None) -> np.ndarray:
        """Per scrape, the sum of the matching series (0 where none was exported at that scrape)."""
        rows = self.select(names, where)
        idx = np.searchsorted(self.scrape_ts_s, rows["ts_s"].to_numpy(dtype=float))
        return np.bincount(idx, weights=rows["value"].to_numpy(dtype=float), minlength=self.scrape_ts_s.size)

    def increments(self, name: str, where: dict[str, str] | None = None) -> np.ndarray:
        """Per scrape, how much the matching counters rose since the scrape before (0 at the first)."""
        out = np.zeros(self.scrape_ts_s.size)
        for _, series in self.select([name], where).groupby(["name", "labels"], sort=False):
            idx = np.searchsorted(self.scrape_ts_s, series["ts_s"].to_numpy(dtype=float))
            values = series["value"].to_numpy(dtype=float)
            baseline = values[0] if idx[0] == 0 else 0.0
            rises = values - np.concatenate([[baseline], values[:-1]])
            np.add.at(out, idx, np.where(rises < 0, values, rises))
        return out

    def increase(self, name: str, where: dict[str, str] | None = None) -> float:
        """How much the matching counters rose from the first scrape to the last."""
        return float(self.increments(name, where).sum())

    def rate(
        self, name: str, where: dict[str, str] | None = None, min_width_s: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, width, rise per second) of each interval between scrapes; scrapes closer than `min_width_s`
        to the one before are merged into the interval (the last scrape follows a periodic one closely,
        and a rise over a few milliseconds reads as a huge rate)."""
        kept = _spaced(self.scrape_ts_s, min_width_s)
        if kept.size < 2:
            return np.empty(0), np.empty(0), np.empty(0)
        total = np.cumsum(self.increments(name, where))[kept]
        starts, widths = self.scrape_ts_s[kept[:-1]], np.diff(self.scrape_ts_s[kept])
        return starts, widths, np.diff(total) / np.maximum(widths, 1e-9)

    def in_flight(self) -> np.ndarray:
        return self.gauge(IN_FLIGHT)


def _spaced(ts: np.ndarray, min_gap_s: float) -> np.ndarray:
    """Indices of scrapes at least `min_gap_s` apart, the first and the last always among them."""
    kept = [0] if ts.size else []
    for i in range(1, ts.size):
        if ts[i] - ts[kept[-1]] >= min_gap_s:
            kept.append(i)
    if ts.size > 1 and kept[-1] != ts.size - 1:
        if len(kept) > 1:
            kept[-1] = ts.size - 1  # the last scrape replaces the too-close one before it
        else:
            kept.append(ts.size - 1)
    return np.array(kept, dtype=int)


def _labels(text: str) -> dict[str, str]:
    return json.loads(text) if text else {}
