"""Shared core of the load test and the reports: the request record, the summary, the run folder.

Locust-free: `benchcore.loadgen` holds the Locust integration and is imported only by `loadtest/`.
"""

from benchcore.records import OUTCOMES, RequestRecord
from benchcore.rundir import (
    Run,
    RunFolderError,
    read_metadata,
    read_records,
    read_records_frame,
    read_run,
    read_summary,
    write_run,
)
from benchcore.summary import SCHEMA_VERSION, Slo, summarize

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "RequestRecord",
    "Run",
    "RunFolderError",
    "Slo",
    "read_metadata",
    "read_records",
    "read_records_frame",
    "read_run",
    "read_summary",
    "summarize",
    "write_run",
]
