"""Exceptions carrying their own exit code (as click's ClickException); each command's main catches them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ReportError(Exception):
    """A problem the command line reports as `error: MESSAGE` and exits with `exit_code`."""

    exit_code = 2


class BadInput(ReportError):
    """A run folder, gates file or campaign file that cannot be used; the message names the file."""

    exit_code = 2


class RegressionFound(ReportError):
    """A performance gate failed: the candidate is worse than the thresholds allow."""

    exit_code = 1


class RunFailed(ReportError):
    """A reproduction step failed (the server did not start, Locust wrote no run folder)."""

    exit_code = 1


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping ({} when empty); BadInput naming the file otherwise."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"{path}: cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput(
            f"{path}: the top level of a {what} must be a mapping "
            f"(expected a mapping of sections, not a {type(raw).__name__})"
        )
    return raw
