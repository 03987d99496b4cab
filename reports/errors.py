"""Exceptions carrying their own exit code (as click's ClickException); each command's main catches them."""

from __future__ import annotations


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
