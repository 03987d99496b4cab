"""Find the run folders a command names and read them (runfolder.frame) as the reports' input errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from reports.errors import BadInput
from runfolder.folder import RECORDS_FILE, SUMMARY_FILE, RunFolderError
from runfolder.frame import RunData, read_run_frame


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


def _read(path: Path) -> RunData:
    try:
        run = read_run_frame(path)
    except RunFolderError as exc:
        raise BadInput(str(exc)) from None
    if len(run.records) == 0 or run.summary.get("requests") == 0:
        raise BadInput(f"{path / RECORDS_FILE}: the run has zero requests (nothing to compare)")
    return run


def load_runs(paths: Sequence[Path | str]) -> list[RunData]:
    """Every run under `paths`, in the order given; runs sharing a label are repeats."""
    return [_read(p) for p in discover(paths)]
