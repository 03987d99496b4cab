"""End to end at small scale: `python -m reports.reproduce --campaign smoke` runs both profiles for real,
then the repository's CI gate holds on v1.2.0 and fails on v1.1.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from configkit import REPO_ROOT
from reports.compare import main as compare_main
from reports.metrics import run_metrics
from reports.runs import load_runs

GATES = REPO_ROOT / "config" / "gates.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reproduce") / "smoke"
    # A subprocess, as a user runs it; Locust is never imported into the test process.
    result = subprocess.run(
        [sys.executable, "-m", "reports.reproduce", "--campaign", "smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound against hangs, not a speed goal: the campaign takes ~30 s here
    )
    sys.stderr.write(result.stderr)  # checked for ERROR records (tests/support/server_logs.py)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "starting the server, profile v1.1.1" in result.stdout  # progress is visible
    assert "| Success rate |" in result.stdout
    return out


@pytest.mark.slow
def test_reproduce_measures_both_profiles(smoke: Path) -> None:
    old = run_metrics(load_runs([smoke / "runs" / "v1.1.1"])[0])
    new = run_metrics(load_runs([smoke / "runs" / "v1.2.0"])[0])
    # v1.1.1's squeezed limiter shows both of its failure modes; v1.2.0 answers everything.
    assert old["rejections"] > 0 and old["timeouts"] > 0, old
    assert new["success_rate"] == 1.0 and new["requests"] >= 6, new
    headline = (smoke / "headline.md").read_text()
    assert "| v1.1.1 measured | v1.1.1 guide | v1.2.0 measured | v1.2.0 guide |" in headline
    assert "| Timeouts |" in headline and "18.0 %" in headline
    html = (smoke / "report" / "report.html").read_text()
    assert "Headline" in html and html.count('class="plotly-graph-div"') >= 4  # interactive figures
    assert (smoke / "server" / "v1.1.1.yaml").is_file() and (
        smoke / "logs" / "v1.1.1-rep1.locust.log"
    ).is_file()


@pytest.mark.slow
def test_ci_gate_holds_on_v120_and_fails_on_v111(smoke: Path, tmp_path: Path) -> None:
    """This repository's CI gate: under concurrent load v1.2.0 keeps 100 % success and no rejections."""
    assert (
        compare_main(["--gate", str(GATES), str(smoke / "runs" / "v1.2.0"), "--out", str(tmp_path / "a")])
        == 0
    )
    assert (
        compare_main(["--gate", str(GATES), str(smoke / "runs" / "v1.1.1"), "--out", str(tmp_path / "b")])
        == 1
    )
