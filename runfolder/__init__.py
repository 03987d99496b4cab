"""The run-folder contract shared by the load generator and the reports: the request record and its columns,
metadata, the folder's writer and its one reader (records as RequestRecords here; as columns in
runfolder.frame, which imports pandas and so is not imported here), and the run figures (summary.json).

Imports none of our other packages (tests/loadgen/test_core.py checks it stays free of Locust).
"""

from runfolder.figures import Slo
from runfolder.folder import (
    Run,
    RunFolderError,
    read_metadata,
    read_records,
    read_run,
    read_summary,
    write_run,
)
from runfolder.records import OUTCOMES, RequestRecord
from runfolder.server_metrics import SERVER_METRICS_FILE, Sample, read_server_metrics, write_server_metrics
from runfolder.summary import SCHEMA_VERSION, summarize

__all__ = [
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SERVER_METRICS_FILE",
    "RequestRecord",
    "Run",
    "RunFolderError",
    "Sample",
    "Slo",
    "read_metadata",
    "read_records",
    "read_run",
    "read_server_metrics",
    "read_summary",
    "summarize",
    "write_run",
    "write_server_metrics",
]
