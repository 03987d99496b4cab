"""What a run folder records about its context: server identity, code version, tools and machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from importlib import metadata as importlib_metadata
from typing import Any

log = logging.getLogger(__name__)

TOOLS = ("mlx-serving-bench", "locust", "gevent", "geventhttpclient", "numpy", "mlx", "mlx-lm")


def get_json(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> Any:
    """GET a small JSON document; None when it is unreachable or not JSON (mlx_lm.server may send '')."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read() or b"null")
        except ValueError:
            return None
    except (OSError, ValueError) as exc:
        log.debug("GET %s failed: %s", url, exc)
        return None


def model_ids(models_doc: Any) -> list[str]:
    data = models_doc.get("data") if isinstance(models_doc, dict) else None
    return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]


def server_info(base_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The models and profile a server reports (GET /v1/models and /health)."""
    base = base_url.rstrip("/")
    models_doc = get_json(f"{base}/v1/models", headers=headers)
    health = get_json(f"{base}/health", headers=headers)
    profile = health.get("profile") if isinstance(health, dict) else None
    return {"models": model_ids(models_doc), "profile": profile, "health": health}


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
