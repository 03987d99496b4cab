"""Fail a test whose servers, workers or Locust runs logged an ERROR or a traceback it did not expect.

What a test's processes print reaches pytest's capture: in-process log records ("Captured log"), and
child processes' output on stderr (the launcher, orchestrate.processes, echoes what it collects when
MLXBENCH_ECHO_CHILD_OUTPUT is set; processes a test starts itself inherit it). After each phase, that
phase's captured text is searched.
A test that provokes errors on purpose declares them: `@pytest.mark.expected_errors(r"regex", ...)`;
a problem is allowed when one of the patterns is found in it. With `-s` nothing is captured, so
nothing is checked.
"""

from __future__ import annotations

import re

import pytest

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.passed:
        return
    text = "\n".join(content for name, content in report.sections if name.endswith(f" {report.when}"))
    allowed = [p for mark in item.iter_markers("expected_errors") for p in mark.args]
    bad = unexpected(text, allowed)
    if bad:
        report.outcome = "failed"
        shown = "\n\n".join(bad[:5])
        report.longrepr = (
            f"{len(bad)} unexpected ERROR record(s) or traceback(s) were logged during {report.when} "
            f"(declare expected ones with @pytest.mark.expected_errors):\n\n{shown}"
        )
