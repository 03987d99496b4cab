"""scripts/perf-gate, the script .github/workflows/perf-gate.yml runs: two real servers kept warm side by
side (this checkout's, and HEAD's checked out beside it with git worktree: an A/A comparison), real Locust
blocks alternating between them, then the gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from configkit import REPO_ROOT
from tests.support import server_logs

SCRIPT = REPO_ROOT / "scripts" / "perf-gate"


def perf_gate(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, env=env
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--pairs", "1"], "--pairs must be a whole number >= 2"),
        (["--cand-profile", "no-such.yaml"], "no-such.yaml: no such profile file"),
        (["--bogus"], "unknown option '--bogus'"),
        (["--gates", "no-such.yaml"], "no-such.yaml: no such gates file"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], problem: str) -> None:
    result = perf_gate(*args, "--out", str(tmp_path / "out"), timeout_s=60)
    assert result.returncode == 2 and problem in result.stderr


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO_ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_perf_gate_script_end_to_end(tmp_path: Path) -> None:
    """Two pairs of 3-s blocks of HEAD against HEAD: the gate must not call it a regression."""
    # The repository's gates, except the minimums that two short pairs cannot meet: this test checks the
    # pipeline, not the machine.
    gates = yaml.safe_load((REPO_ROOT / "config" / "gates.yaml").read_text())
    gates["evidence"]["min_requests"] = 1
    gates["relative"]["min_repeats"] = 2
    gates_path = tmp_path / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    out = tmp_path / "out"
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    args = ["--base-ref", "HEAD", "--pairs", "2", "--block-s", "3", "--gates", str(gates_path)]
    result = perf_gate(*args, "--out", str(out), env=env)
    # A/A with two pairs: a pass, or inconclusive (one degree of freedom); never a regression.
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    verdict = json.loads((out / "gate" / "gate.json").read_text())
    assert verdict["exit_code"] == result.returncode
    relative = {c["gate"]: c for c in verdict["checks"] if c["gate"].startswith("max_throughput")}
    assert relative["max_throughput_drop_pct"]["verdict"] in ("pass", "inconclusive")
    assert "noise measured in this job" in relative["max_throughput_drop_pct"]["detail"]
    bigger = json.loads((out / "gate" / "benchmark-bigger.json").read_text())
    assert any(e["name"] == "default output throughput" and e["value"] > 0 for e in bigger)
    assert "## Performance gate" in summary.read_text()
    assert (out / "gate" / "report" / "report.html").is_file()
    for side in ("base", "cand"):
        for block in ("block01", "block02"):
            assert (out / side / block / "summary.json").is_file()
            usage = json.loads((out / side / block / "server_usage.json").read_text())
            assert usage["cpu_s"] > 0 and usage["output_tokens"] > 0
    assert not (out / "base-src").exists()  # the baseline's worktree is removed
    # The servers and Locust runs wrote their logs to files, out of pytest's capture: search them here.
    logs = sorted(out.rglob("*.log"))
    assert {p.name for p in logs} >= {"server-base.log", "server-cand.log"}
    for path in logs:
        assert not server_logs.problems(path.read_text(errors="replace")), path
