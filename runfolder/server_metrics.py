"""server_metrics.csv: the server's Prometheus samples scraped during a run, one row per sample.

Columns: `ts_s` (epoch seconds, the load generator's clock, when the scrape's reply was read), `name` (the
sample's name as exported, counters with their `_total`), `labels` (a JSON object with sorted keys, empty
for none: label values may hold commas and quotes), `value`. Written by the load generator
(loadgen/server_scrape.py) before summary.json; read here as samples, or as columns by
runfolder.frame.read_server_metrics_frame. The scrapes that open and close the run are named in
summary.json `server_metrics` (`first_ts_s`, `last_ts_s`).

Also the client's side of the reconciliation (`client_counts`): which requests the server can know about,
one definition for the load generator (warm-up requests, not in records.csv) and the reports (records.csv).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from runfolder.folder import RunFolderError

SERVER_METRICS_FILE = "server_metrics.csv"
COLUMNS = ("ts_s", "name", "labels", "value")

# A client deadline is the client giving up: the server never sees it as a timeout of its own.
CLIENT_ONLY_TIMEOUTS = frozenset({"client_deadline"})
# The limiter's queue timeout, as an HTTP code (503 queue_timeout) or v1.1.1's in-stream code.
QUEUE_TIMEOUT_DETAILS = frozenset({"queue_timeout", "model_concurrency_error"})
# Figures both sides can count, in report order (runfolder.summary names for the outcomes).
CLIENT_FIGURES = ("requests", "successes", "rejections", "timeouts", "queue_timeouts", "output_tokens")


@dataclass(frozen=True, slots=True)
class Sample:
    ts_s: float
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def labels_text(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels else ""


def write_server_metrics(path: Path, samples: Iterable[Sample]) -> int:
    """Write the samples (the folder is made if needed); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for s in samples:
            writer.writerow([round(s.ts_s, 6), s.name, labels_text(s.labels), repr(float(s.value))])
            count += 1
    return count


def read_server_metrics(path: Path) -> list[Sample]:
    """The samples of a server_metrics.csv; RunFolderError names the file and line of a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: missing")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if next(reader, None) != list(COLUMNS):
            raise RunFolderError(f"{path}: not a server metrics file (header is not {','.join(COLUMNS)})")
        out = []
        for line_no, row in enumerate(reader, start=2):
            try:
                ts, name, labels, value = row
                out.append(Sample(float(ts), name, float(value), json.loads(labels) if labels else {}))
            except ValueError as exc:
                raise RunFolderError(f"{path}:{line_no}: malformed sample ({exc})") from None
    return out


def client_counts(
    outcomes: Iterable[str], details: Iterable[str], output_tokens: Iterable[float | None]
) -> dict[str, float]:
    """The client's counts of CLIENT_FIGURES over some requests (one value of each column per request).

    `timeouts` leaves out the client's own deadline; `output_tokens` sums successful requests only, as the
    server's counter does (it counts a reply's tokens when it completes).
    """
    counts = dict.fromkeys(CLIENT_FIGURES, 0.0)
    for outcome, detail, tokens in zip(outcomes, details, output_tokens, strict=True):
        counts["requests"] += 1
        if outcome == "success":
            counts["successes"] += 1
            if tokens is not None and not math.isnan(tokens):
                counts["output_tokens"] += tokens
        elif outcome == "rejected":
            counts["rejections"] += 1
        elif outcome == "timeout" and detail not in CLIENT_ONLY_TIMEOUTS:
            counts["timeouts"] += 1
            counts["queue_timeouts"] += detail in QUEUE_TIMEOUT_DETAILS
    return counts
