"""Find and read run folders (the format of runfolder.folder) into typed runs with a records DataFrame.

Records are read column by column with pyarrow's CSV reader: a million records load in about a second,
where building a RequestRecord per row would take most of the 10 s budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from reports.errors import BadInput
from runfolder.folder import (
    METADATA_FILE,
    RECORDS_FILE,
    SUMMARY_FILE,
    RunFolderError,
    read_metadata,
    read_summary,
)
from runfolder.records import OUTCOMES

log = logging.getLogger(__name__)

# The record fields the reports use; the per-chunk gaps (itl_s) are the bulk of the file and are skipped.
REQUIRED_COLUMNS = ("scheduled_ts_s", "end_ts_s", "e2e_s", "outcome")
OPTIONAL_COLUMNS = ("outcome_detail", "ttft_s", "tpot_s", "output_tokens", "schedule_lag_s")
_FLOAT_COLUMNS = (
    "scheduled_ts_s",
    "end_ts_s",
    "e2e_s",
    "ttft_s",
    "tpot_s",
    "output_tokens",
    "schedule_lag_s",
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
        if load.get("arrival") in ("constant", "poisson") and load.get("rate_per_s"):
            return LoadPoint("rate", float(load["rate_per_s"]))
        if load.get("users"):
            return LoadPoint("users", float(load["users"]))
        return LoadPoint(None, None)


def discover(paths: Iterable[Path | str]) -> list[Path]:
    """Run folders named by `paths`: each a run folder, or a folder holding run folders (its repeats)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BadInput(f"{path}: no such run folder")
        if not path.is_dir():
            raise BadInput(f"{path}: not a folder (give a run folder or a folder of run folders)")
        if (path / SUMMARY_FILE).exists() or (path / RECORDS_FILE).exists():
            found.append(path)
            continue
        nested = sorted((p.parent for p in path.rglob(SUMMARY_FILE)), key=_chronological)
        if not nested:
            what = "empty folder" if not any(path.iterdir()) else f"no run folder inside (no {SUMMARY_FILE})"
            raise BadInput(f"{path}: {what}")
        found.extend(nested)
    if not found:
        raise BadInput("no run folders given")
    return found


def _chronological(path: Path) -> tuple[float, str]:
    """Runs inside a folder are taken in the order they ran (then by name): the first is the baseline."""
    try:
        started = float(json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))["window_start_ts_s"])
    except (OSError, ValueError, KeyError, TypeError):
        started = float("inf")
    return started, str(path)


def read_records(path: Path) -> pd.DataFrame:
    """The columns of records.csv the reports need; checks the header and the outcome vocabulary."""
    records_path = path / RECORDS_FILE
    if not records_path.is_file():
        raise BadInput(f"{records_path}: missing")
    with records_path.open(encoding="utf-8") as fh:
        header = fh.readline().strip().split(",")
    if header == [""]:
        raise BadInput(f"{records_path}: empty file (no header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise BadInput(f"{records_path}: not a records file, missing columns {missing}")
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in header]
    dtypes = {c: "float64" for c in _FLOAT_COLUMNS if c in columns}
    try:
        frame = _read_csv(records_path, columns, dtypes)
    except (ValueError, pd.errors.ParserError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise BadInput(f"{records_path}: malformed ({exc})") from None
    for name in OPTIONAL_COLUMNS:
        if name not in frame:
            frame[name] = float("nan") if name in _FLOAT_COLUMNS else ""
    unknown = set(frame["outcome"].dropna().unique()) - set(OUTCOMES)
    if unknown or frame["outcome"].isna().any():
        raise BadInput(f"{records_path}: unknown outcome(s) {sorted(map(str, unknown)) or ['(empty)']}")
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


def read_run(path: Path) -> RunData:
    try:
        summary = read_summary(path)
        metadata = read_metadata(path)
    except RunFolderError as exc:
        raise BadInput(_explain_missing(path, str(exc))) from None
    records = read_records(path)
    if len(records) == 0 or summary.get("requests") == 0:
        raise BadInput(f"{path / RECORDS_FILE}: the run has zero requests (nothing to compare)")
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


def _explain_missing(path: Path, message: str) -> str:
    if path.is_dir() and not any(path.iterdir()):
        return f"{path}: empty run folder (expected {SUMMARY_FILE}, {METADATA_FILE}, {RECORDS_FILE})"
    return message


def load_runs(paths: Sequence[Path | str]) -> list[RunData]:
    """Every run under `paths`, in the order given; runs sharing a label are repeats."""
    return [read_run(p) for p in discover(paths)]
