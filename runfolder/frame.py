"""The run folder read as columns: records.csv as a pandas DataFrame, with summary and metadata (RunData).

The other view of the same folder as runfolder.folder.read_run (typed RequestRecords, for the load
generator's checks and small runs): the reports read columns, because a million records load in about a
second with pyarrow's CSV reader, where building a RequestRecord per row would take most of the 10 s budget.
Imports pandas, so runfolder/__init__ does not import this module (the Locust side never needs it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from runfolder.folder import (
    METADATA_FILE,
    RECORDS_FILE,
    SUMMARY_FILE,
    RunFolderError,
    read_metadata,
    read_summary,
)
from runfolder.records import OUTCOMES
from runfolder.server_metrics import COLUMNS as SERVER_METRICS_COLUMNS
from runfolder.server_metrics import SERVER_METRICS_FILE

log = logging.getLogger(__name__)

# The record fields the reports use; the per-chunk gaps (itl_s) are the bulk of the file and are read
# apart, only when a figure needs them (chunk_gaps).
REQUIRED_COLUMNS = ("scheduled_ts_s", "end_ts_s", "e2e_s", "outcome")
# The workload columns (turn, shared prefix, cached tokens) feed reports/workload_tables.py.
WORKLOAD_COLUMNS = ("turn_index", "shared_prefix_id", "cached_tokens", "prompt_tokens")
OPTIONAL_COLUMNS = (
    "outcome_detail",
    "ttft_s",
    "tpot_s",
    "output_tokens",
    "schedule_lag_s",
    *WORKLOAD_COLUMNS,
    "output_check",  # the verdict of --check-outputs on a reply (text; empty when not checked)
)
_FLOAT_COLUMNS = (
    "scheduled_ts_s",
    "end_ts_s",
    "e2e_s",
    "ttft_s",
    "tpot_s",
    "output_tokens",
    "schedule_lag_s",
    *WORKLOAD_COLUMNS,  # integers with gaps: floats, NaN for none
)

LoadKind = Literal["users", "rate"]

try:  # pyarrow's multi-threaded reader; it comes with mlx-lm's dependencies, pandas' C reader otherwise
    import pyarrow  # noqa: F401

    CSV_ENGINE = "pyarrow"
except ImportError:  # pragma: no cover - depends on the environment
    CSV_ENGINE = "c"


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """How hard a run pushed: closed-loop users, or an open-loop arrival rate in requests/s."""

    kind: LoadKind | None
    value: float | None

    def describe(self) -> str:
        if self.kind == "users":
            return f"{self.value:g} users"
        if self.kind == "rate":
            return f"{self.value:g} req/s"
        return "unknown load"


@dataclass(slots=True)
class RunData:
    path: Path
    label: str
    summary: dict[str, Any]
    metadata: dict[str, Any]
    records: pd.DataFrame

    @property
    def window_start_s(self) -> float:
        value = self.summary.get("window_start_ts_s")
        return float(value) if value is not None else float(self.records["scheduled_ts_s"].min())

    @property
    def duration_s(self) -> float:
        value = self.summary.get("duration_s")
        if value:
            return float(value)
        # Older or hand-made summaries: the span of the records themselves.
        return float(self.records["end_ts_s"].max() - self.records["scheduled_ts_s"].min())

    @property
    def profile(self) -> str | None:
        server = self.metadata.get("server") or {}
        return server.get("profile") if isinstance(server, dict) else None

    @property
    def load(self) -> LoadPoint:
        load = self.metadata.get("load") or {}
        if load.get("arrival") in ("constant", "poisson", "poisson-exact") and load.get("rate_per_s"):
            return LoadPoint("rate", float(load["rate_per_s"]))
        if load.get("users"):
            return LoadPoint("users", float(load["users"]))
        return LoadPoint(None, None)


def read_records_frame(path: Path | str) -> pd.DataFrame:
    """The columns of a run folder's records.csv the reports need; checks the header and the outcomes."""
    records_path = Path(path) / RECORDS_FILE
    if not records_path.is_file():
        raise RunFolderError(f"{records_path}: missing")
    with records_path.open(encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    if header == [""]:
        raise RunFolderError(f"{records_path}: empty file (no header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RunFolderError(f"{records_path}: not a records file, missing columns {missing}")
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in header]
    dtypes = {c: "float64" for c in _FLOAT_COLUMNS if c in columns}
    try:
        frame = _read_csv(records_path, columns, dtypes)
    except (ValueError, pd.errors.ParserError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise RunFolderError(f"{records_path}: malformed ({exc})") from None
    for name in OPTIONAL_COLUMNS:
        if name not in frame:
            frame[name] = float("nan") if name in _FLOAT_COLUMNS else ""
    unknown = set(frame["outcome"].dropna().unique()) - set(OUTCOMES)
    if unknown or frame["outcome"].isna().any():
        raise RunFolderError(f"{records_path}: unknown outcome(s) {sorted(map(str, unknown)) or ['(empty)']}")
    frame["outcome"] = pd.Categorical(frame["outcome"], categories=OUTCOMES)
    return frame


def _read_csv(path: Path, columns: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    """The chosen columns of a records file.

    Values may span lines (an error message holding a proxy's HTML page): pyarrow's reader needs
    `newlines_in_values`, else it fails ("parser got out of sync with chunker") whenever a block boundary
    falls inside such a value; pandas' read_csv does not pass that option through, so pyarrow is called
    directly. Its speed is the same on records files (3 million rows in about 0.3 s here).
    """
    if CSV_ENGINE != "pyarrow":
        return pd.read_csv(path, usecols=columns, dtype=dtypes)
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    table = pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.float64() for c in dtypes},
            strings_can_be_null=True,
        ),
    )
    return table.to_pandas()


def read_run_frame(path: Path | str) -> RunData:
    """A run folder with its records as columns; RunFolderError names the file and the problem."""
    path = Path(path)
    if path.is_dir() and not any(path.iterdir()):
        raise RunFolderError(
            f"{path}: empty run folder (expected {SUMMARY_FILE}, {METADATA_FILE}, {RECORDS_FILE})"
        )
    summary = read_summary(path)
    metadata = read_metadata(path)
    records = read_records_frame(path)
    if summary.get("requests") not in (None, len(records)):
        log.warning(
            "%s: summary.json counts %s requests, records.csv holds %d",
            path,
            summary["requests"],
            len(records),
        )
    label = str(metadata.get("label") or summary.get("label") or path.name)
    log.debug("read %s: label %s, %d records", path, label, len(records))
    return RunData(path, label, summary, metadata, records)


def read_server_metrics_frame(path: Path | str) -> pd.DataFrame | None:
    """A run folder's server_metrics.csv as columns (ts_s, name, labels, value); None when it has none."""
    metrics_path = Path(path) / SERVER_METRICS_FILE
    if not metrics_path.is_file():
        return None
    try:
        frame = pd.read_csv(
            metrics_path,
            dtype={"ts_s": "float64", "name": "string", "labels": "string", "value": "float64"},
            keep_default_na=False,  # an empty labels cell is "no labels", not a missing value
            na_values={"ts_s": [""], "value": ["", "nan"]},
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{metrics_path}: malformed ({exc})") from None
    if tuple(frame.columns) != SERVER_METRICS_COLUMNS:
        raise RunFolderError(f"{metrics_path}: not a server metrics file (columns {list(frame.columns)})")
    return frame


def _itl_column(run: RunData) -> pd.Series:
    """records.csv's per-chunk gaps (JSON lists), row for row with run.records; read only when needed."""
    key = (str(run.path), (run.path / RECORDS_FILE).stat().st_mtime_ns)
    if key not in _ITL_CACHE:
        frame = pd.read_csv(run.path / RECORDS_FILE, usecols=lambda c: c == "itl_s", dtype="string")
        _ITL_CACHE.clear()  # one run at a time is enough: the figures read each run once
        _ITL_CACHE[key] = frame["itl_s"] if "itl_s" in frame else pd.Series(pd.NA, index=run.records.index)
    return _ITL_CACHE[key]


_ITL_CACHE: dict[tuple[str, int], pd.Series] = {}


def chunk_gaps(run: RunData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-chunk gaps of the chosen rows as columns: (gaps per row, every gap in row order, s).

    The shape runfolder.figures.token_arrivals takes; records.csv holds them as one JSON list a row.
    """
    texts = _itl_column(run)[rows].fillna("").str.strip("[]").to_numpy(dtype=object)
    counts = np.array([t.count(",") + 1 if t else 0 for t in texts], dtype=int)
    joined = ",".join(t for t in texts if t)
    gaps = np.array(joined.split(","), dtype=float) if joined else np.empty(0)
    return counts, gaps
