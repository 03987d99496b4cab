"""server_usage.json: what the server spent while a run's load was on it, measured from the OS by whoever
started the server (the CI gate's block runner), beside the run folder's records.

CPU time is a figure with far less noise than wall-clock throughput on a shared machine: a slow spell
(another process on the core) stretches wall time but not the CPU-seconds each token costs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

SERVER_USAGE_FILE = "server_usage.json"


@dataclass(frozen=True, slots=True)
class ServerUsage:
    """The server's processes (HTTP process and model workers) over one run, from start to end of Locust."""

    cpu_s: float  # user + system CPU seconds of the server's process tree
    wall_s: float  # the span those CPU seconds were counted over
    processes: int  # how many processes were counted (the HTTP process and its workers)
    output_tokens: int | None = None  # the server's own count over the span (its /metrics), if read


def write_server_usage(run_dir: Path, usage: ServerUsage) -> Path:
    path = Path(run_dir) / SERVER_USAGE_FILE
    path.write_text(json.dumps(asdict(usage), indent=2) + "\n", encoding="utf-8")
    return path


def read_server_usage(run_dir: Path) -> ServerUsage | None:
    """The run's server usage, or None when nobody measured it (a run made without the block runner)."""
    path = Path(run_dir) / SERVER_USAGE_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    return ServerUsage(
        cpu_s=float(raw["cpu_s"]),
        wall_s=float(raw["wall_s"]),
        processes=int(raw["processes"]),
        output_tokens=None if raw.get("output_tokens") is None else int(raw["output_tokens"]),
    )
