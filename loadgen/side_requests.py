"""Every request the load generator sends besides the measured ones, counted for metadata.json.

Before the clock: readiness probes, the server's description, the /tokenize probe, calibration requests
(without a tokenizer, a few short completions fit prompt lengths on the server's usage), output-check
references; during the run: /tokenize counts of replies without usage, scrapes of the server's metrics.
A server's own counters include them, so the run folder says how many went where and how each ended.
One ledger per process; a worker ships its rows to the master with its final records.
"""

from __future__ import annotations

import threading
from collections import Counter
from urllib.parse import urlsplit

from runfolder.metadata import SideRequestRow

READINESS, SERVER_INFO, TOKENIZE, CALIBRATION = "readiness", "server_info", "tokenize", "calibration"
OUTPUT_REFERENCE, SERVER_METRICS = "output_reference", "server_metrics"
NO_ANSWER = "no_answer"


def http_outcome(status: int) -> str:
    """An HTTP status as an outcome: 'http_200'; 0 (nothing answered) is 'no_answer'."""
    return f"http_{status}" if status else NO_ANSWER


class SideRequests:
    """Counts by (purpose, method, path, outcome); safe from threads and greenlets alike."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, purpose: str, method: str, url: str, outcome: str, count: int = 1) -> None:
        path = urlsplit(url).path or url  # the path alone: hosts and ports vary, a key never leaks
        with self._lock:
            self._counts[(purpose, method, path, outcome)] += count

    def merge(self, rows: list[SideRequestRow]) -> None:
        for row in rows:
            self.add(row["purpose"], row["method"], row["path"], row["outcome"], row["count"])

    def take(self) -> list[SideRequestRow]:
        """The rows counted so far, sorted; the ledger starts again at zero (the next test's)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return [
            {"purpose": p, "method": m, "path": path, "outcome": o, "count": n}
            for (p, m, path, o), n in sorted(counts.items())
        ]


LEDGER = SideRequests()
