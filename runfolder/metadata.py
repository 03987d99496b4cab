"""What a run folder records about its context: server identity, code version, tools and machine."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata as importlib_metadata
from typing import Any, TypedDict

TOOLS = ("mlx-serving-bench", "locust", "gevent", "geventhttpclient", "numpy", "mlx", "mlx-lm")


class SideRequestRow(TypedDict):
    """Requests the load generator sent besides the measured ones (loadgen/side_requests.py), one row per
    purpose, method, path and outcome ('http_200', 'no_answer', or a request outcome such as 'success')."""

    purpose: str
    method: str
    path: str
    outcome: str
    count: int


def side_requests_section(rows: list[SideRequestRow]) -> dict[str, Any]:
    """metadata.json `side_requests`: the total, the count per purpose, and every row."""
    by_purpose: dict[str, int] = {}
    for row in rows:
        by_purpose[row["purpose"]] = by_purpose.get(row["purpose"], 0) + row["count"]
    return {"total": sum(by_purpose.values()), "by_purpose": by_purpose, "rows": rows}


def side_requests_of(metadata: dict[str, Any]) -> list[SideRequestRow]:
    """The rows of a run folder's metadata; [] for runs recorded before they were counted."""
    section = metadata.get("side_requests")
    return list(section.get("rows") or []) if isinstance(section, dict) else []


def model_ids(models_doc: Any) -> list[str]:
    data = models_doc.get("data") if isinstance(models_doc, dict) else None
    return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]


def git_info(cwd: str | None = None) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python_executable": sys.executable,
    }
