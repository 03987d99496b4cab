"""Fail a test whose servers, workers or Locust runs logged an ERROR or a traceback it did not expect.

What a test's own process logs reaches pytest's capture ("Captured log"). What child processes print
goes to a file: the launcher (orchestrate.processes) appends every line of its servers, workers and Locust
runs to the file MLXBENCH_CHILD_LOG names, which this plugin sets per session (processes a test starts
itself inherit it, and so do their own children). Not to our stderr: a session-scoped server answers the
last request of a test while pytest reports between tests, and its access-log line would land on the
terminal. After each phase, that phase's captured text and what the children wrote to the file since the
last phase are searched; the children's lines are also added to the report ("Captured children's output"),
where a failed test shows them. A test that provokes errors on purpose declares them:
`@pytest.mark.expected_errors(r"regex", ...)`; a problem is allowed when one of the patterns is found in it.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

# The launchers (orchestrate/processes.py) append every line their children print to this file as well:
# pytest's capture misses what a long-lived (session) server prints while pytest reports between tests.
CHILD_LOG_ENV = "MLXBENCH_CHILD_LOG"

# Our formats ("... server.worker_handle ERROR ...", "... worker ERROR ..."), pytest's captured log
# ("ERROR    name:file.py:12 ..."), Locust's ("[time] host/ERROR/locust.runners: ...") and tracebacks.
PROBLEM = re.compile(r"(?:^|[\s/])(?:ERROR|CRITICAL)(?:[\s/:]|$)|^Traceback \(most recent call last\)")
# A line that starts a new log record ends the problem before it.
NEW_RECORD = re.compile(r"^(?:\d{4}-\d\d-\d\d[ T]|\[\d{4}-\d\d-\d\d|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) )")


def problems(text: str) -> list[str]:
    """Each ERROR/CRITICAL record or traceback in `text`, with the lines that belong to it."""
    found: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if PROBLEM.search(line):
            # A traceback right after its "ERROR ... failed" line belongs to that record.
            if current is not None and line.startswith("Traceback"):
                current.append(line)
                continue
            current = [line]
            found.append(current)
        elif current is not None and line.strip() and not NEW_RECORD.match(line):
            current.append(line)
        else:
            current = None
    return ["\n".join(block) for block in found]


def unexpected(text: str, allowed: list[str]) -> list[str]:
    return [p for p in problems(text) if not any(re.search(pattern, p) for pattern in allowed)]


class ChildLog:
    """The children's output file of this session, read on from where the last phase stopped."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="mlxbench-children-", suffix=".log")
        os.close(handle)
        self.path, self.offset = Path(name), 0

    def read_new(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")


def pytest_configure(config):
    config._child_log = ChildLog()
    config._child_log_before = os.environ.get(CHILD_LOG_ENV)
    os.environ[CHILD_LOG_ENV] = str(config._child_log.path)


def pytest_unconfigure(config):
    # pytester runs inner sessions in this process: give the outer session its file back
    before = getattr(config, "_child_log_before", None)
    if before is None:
        os.environ.pop(CHILD_LOG_ENV, None)
    else:
        os.environ[CHILD_LOG_ENV] = before
    if child_log := getattr(config, "_child_log", None):
        child_log.path.unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # Everything children printed up to now belongs to this phase: also what came between phases.
    child_log = getattr(item.config, "_child_log", None)
    children = child_log.read_new() if child_log else ""
    captured = [content for name, content in report.sections if name.endswith(f" {report.when}")]
    if children:
        report.sections.append((f"Captured children's output {report.when}", children))
    if not report.passed:
        return
    text = "\n".join([*captured, children])
    allowed = [p for mark in item.iter_markers("expected_errors") for p in mark.args]
    bad = list(dict.fromkeys(unexpected(text, allowed)))  # a child's line is in the capture and the file
    if bad:
        report.outcome = "failed"
        shown = "\n\n".join(bad[:5])
        report.longrepr = (
            f"{len(bad)} unexpected ERROR record(s) or traceback(s) were logged during {report.when} "
            f"(declare expected ones with @pytest.mark.expected_errors):\n\n{shown}"
        )
