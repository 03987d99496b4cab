"""The run folder: records.csv, summary.json, metadata.json. Format documented in docs/loadtest.md.

Readers check `schema_version` and raise RunFolderError naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runfolder.records import FIELD_NAMES, RequestRecord
from runfolder.summary import SCHEMA_VERSION

log = logging.getLogger(__name__)

RECORDS_FILE = "records.csv"
SUMMARY_FILE = "summary.json"
METADATA_FILE = "metadata.json"
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})

_INT_FIELDS = frozenset(
    {
        "prompt_tokens",
        "prompt_tokens_target",
        "max_tokens",
        "output_tokens",
        "output_tokens_counted",
        "output_chunks",
        "http_status",
        "response_bytes",
        "user_id",
        "turn_index",
        "shared_prefix_id",
        "cached_tokens",
        "output_check_prompt",
        "output_first_diff_chars",
        "output_first_diff_tokens",
    }
)
_FLOAT_FIELDS = frozenset(
    {"scheduled_ts_s", "sent_ts_s", "end_ts_s", "schedule_lag_s", "e2e_s", "ttft_s", "tpot_s", "ttfb_s"}
)


class RunFolderError(Exception):
    """A run folder that cannot be read: missing, empty, malformed, or of an unknown schema."""


@dataclass(slots=True)
class Run:
    path: Path
    records: list[RequestRecord]
    summary: dict[str, Any]
    metadata: dict[str, Any]


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name == "itl_s":
        return json.dumps([round(v, 6) for v in value], separators=(",", ":"))
    if isinstance(value, float):
        return round(value, 6)
    return value


def _parse(name: str, text: str) -> Any:
    if name == "itl_s":
        return json.loads(text) if text else []
    if name == "stream":
        return text == "True"
    if text == "":
        return None
    if name in _INT_FIELDS:
        return int(text)
    if name in _FLOAT_FIELDS:
        return float(text)
    return text


def write_records(path: Path, records: Iterable[RequestRecord]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELD_NAMES)
        for rec in records:
            writer.writerow([_cell(name, getattr(rec, name)) for name in FIELD_NAMES])
            count += 1
    return count


def iter_records(path: Path) -> Iterator[RequestRecord]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise RunFolderError(f"{path}: empty file (no header row)")
        missing = [n for n in ("scenario", "outcome", "e2e_s") if n not in header]
        if missing:
            raise RunFolderError(f"{path}: not a records file, missing columns {missing}")
        known = [(i, n) for i, n in enumerate(header) if n in FIELD_NAMES]
        for line_no, row in enumerate(reader, start=2):
            try:
                yield RequestRecord(**{n: _parse(n, row[i]) for i, n in known})
            except (ValueError, IndexError, TypeError) as exc:
                raise RunFolderError(f"{path}:{line_no}: malformed record ({exc})") from None


def read_records(path: Path) -> list[RequestRecord]:
    return list(iter_records(path))


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # readers never see half a file


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunFolderError(f"{path}: missing")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    version = obj.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise RunFolderError(
            f"{path}: schema_version {version!r} is not supported "
            f"(known: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    return obj


def write_run(
    path: Path, records: Iterable[RequestRecord], summary: dict[str, Any], metadata: dict[str, Any]
) -> Path:
    """Write a run folder; summary.json goes last so its presence means the folder is complete."""
    path.mkdir(parents=True, exist_ok=True)
    write_records(path / RECORDS_FILE, records)
    _write_json(path / METADATA_FILE, {"schema_version": SCHEMA_VERSION, **metadata})
    _write_json(path / SUMMARY_FILE, {**summary, "schema_version": SCHEMA_VERSION})
    log.info("run folder written: %s", path)
    return path


def read_summary(path: Path) -> dict[str, Any]:
    return _read_json(Path(path) / SUMMARY_FILE)


def read_metadata(path: Path) -> dict[str, Any]:
    return _read_json(Path(path) / METADATA_FILE)


def read_run(path: Path | str, *, with_records: bool = True) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path}: not a run folder (no such directory)")
    summary = read_summary(path)
    metadata = read_metadata(path)
    records_path = path / RECORDS_FILE
    if with_records and not records_path.is_file():
        raise RunFolderError(f"{records_path}: missing")
    records = read_records(records_path) if with_records else []
    return Run(path, records, summary, metadata)
