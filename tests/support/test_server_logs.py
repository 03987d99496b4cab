"""The check that fails a test on unexpected ERROR logs: what it finds, and that it really fails a test."""

import pytest

from configkit import REPO_ROOT
from orchestrate.processes import pass_on
from tests.support.server_logs import problems, unexpected

SERVER_LOG = """\
2026-12-02 01:53:19,109 server INFO ready
2026-12-02 01:53:20,001 server.app ERROR unhandled error in POST /v1/chat/completions
Traceback (most recent call last):
  File "server/app.py", line 1, in handler
AttributeError: 'ServerMetrics' object has no attribute 'sequences'
2026-12-02 01:53:20,002 aiohttp.access INFO 127.0.0.1 "POST /v1/chat/completions HTTP/1.1" 500
"""


def test_an_error_record_and_its_traceback_are_one_problem():
    (problem,) = problems(SERVER_LOG)
    assert "unhandled error" in problem and "AttributeError" in problem and "aiohttp.access" not in problem


@pytest.mark.parametrize(
    "line",
    [
        "2026-12-02 01:00:00,000 worker ERROR decode step failed",
        "[2026-12-02 01:21:24,121] vm/ERROR/loadgen.plugin: invalid option",
        "ERROR    server.worker_handle:worker_handle.py:170 model tiny-llama failed to start",
        "2026-12-02 01:00:00,000 server CRITICAL out of memory",
        "Traceback (most recent call last):",
    ],
)
def test_every_log_format_we_run_is_recognised(line):
    assert problems(line) == [line]


def test_info_and_warnings_are_not_problems():
    assert problems("2026-12-02 01:00:00,000 server WARNING slow client dropped\nan error_rate of 0") == []


def test_declared_patterns_allow_only_what_they_match():
    assert unexpected(SERVER_LOG, [r"no attribute 'sequences'"]) == []
    assert len(unexpected(SERVER_LOG, [r"worker exited"])) == 1


def with_the_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """An inner session (run in a subprocess) with this plugin and a children's file of its own."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.delenv("MLXBENCH_CHILD_LOG", raising=False)
    pytester.makeconftest('pytest_plugins = ["tests.support.server_logs"]')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


# The inner run's report (printed into this test's capture) is full of the errors it provoked.
@pytest.mark.expected_errors(r"unhandled error in GET /|failed on purpose|unexpected ERROR record")
def test_a_passing_test_that_logged_an_error_fails(pytester, monkeypatch):
    # In a subprocess: the inner tests' records must not reach this test's own capture.
    with_the_plugin(pytester, monkeypatch)
    pytester.makepyfile(
        """
        import logging
        import pytest

        def test_logs_an_error():
            logging.getLogger("server.app").error("unhandled error in GET /")

        @pytest.mark.expected_errors(r"on purpose")
        def test_declares_its_error():
            logging.getLogger("server.app").error("failed on purpose")

        def test_clean():
            logging.getLogger("server.app").warning("only a warning")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning"
    )
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*unexpected ERROR record*", "*unhandled error in GET /*"])


@pytest.mark.expected_errors(r"worker ERROR decode step failed|unexpected ERROR record")
def test_a_child_line_that_pytest_did_not_capture_still_fails_the_test(pytester, monkeypatch):
    # A session server's line written while pytest reports between tests reaches no capture, only the
    # children's file the launcher appends to; -s turns capture off altogether to show the file suffices.
    with_the_plugin(pytester, monkeypatch)
    pytester.makepyfile(
        """
        import os

        def test_a_child_logged_an_error_out_of_sight():
            with open(os.environ["MLXBENCH_CHILD_LOG"], "a") as f:
                f.write("2026-12-02 01:00:00,000 worker ERROR decode step failed\\n")

        def test_clean():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*unexpected ERROR record*", "*decode step failed*"])


def test_a_failed_test_shows_what_its_children_printed(pytester, monkeypatch):
    with_the_plugin(pytester, monkeypatch)
    pytester.makepyfile(
        """
        import os

        def test_fails_after_a_child_spoke():
            with open(os.environ["MLXBENCH_CHILD_LOG"], "a") as f:
                f.write("2026-12-02 01:00:00,000 aiohttp.access INFO GET /health 200\\n")
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured children's output call*", "*GET /health 200*"])


def test_the_launcher_writes_children_lines_to_the_file_and_echoes_only_when_asked(
    tmp_path, monkeypatch, capsys
):
    log = tmp_path / "children.log"
    monkeypatch.setenv("MLXBENCH_CHILD_LOG", str(log))
    pass_on("quiet line\n", echo=False)
    pass_on("echoed line\n", echo=True)
    assert capsys.readouterr().err == "echoed line\n"
    assert log.read_text() == "quiet line\nechoed line\n"
