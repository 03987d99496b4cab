"""scripts/perf-gate, the script .github/workflows/perf-gate.yml runs: the real server and Locust, a
baseline checked out beside this one (git worktree of HEAD: an A/A comparison), then the gate."""

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
        (["--repeats", "0"], "--repeats must be a whole number >= 1"),
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
    """One interleaved pair of short runs of HEAD against HEAD: the gate must not call it a regression."""
    # The repository's gates, except the per-run request minimum: a 10 s window on a busy 2-core machine
    # may hold only a handful of requests, and this test checks the pipeline, not the machine.
    gates = yaml.safe_load((REPO_ROOT / "config" / "gates.yaml").read_text())
    gates["evidence"]["min_requests"] = 1
    gates_path = tmp_path / "gates.yaml"
    gates_path.write_text(yaml.safe_dump(gates))
    out = tmp_path / "out"
    summary = tmp_path / "step-summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    # No warm-up: the users' first requests are measured, so a run holds at least one per user however
    # slow the machine is at the moment (a loaded one took longer than a 10 s window for one request).
    args = ["--base-ref", "HEAD", "--repeats", "1", "--duration-s", "10", "--warmup-s", "0"]
    args += ["--gates", str(gates_path)]
    result = perf_gate(*args, "--out", str(out), env=env)
    # A/A with one run per side: a pass, or inconclusive (the noise prior is wide); never a regression.
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]
    verdict = json.loads((out / "gate" / "gate.json").read_text())
    assert verdict["exit_code"] == result.returncode
    relative = {c["gate"]: c for c in verdict["checks"] if c["gate"].startswith("max_throughput")}
    assert relative["max_throughput_drop_pct"]["verdict"] in ("pass", "inconclusive")
    bigger = json.loads((out / "gate" / "benchmark-bigger.json").read_text())
    assert any(e["name"] == "v1.2.0 output throughput" and e["value"] > 0 for e in bigger)
    assert "## Performance gate" in summary.read_text()
    assert (out / "gate" / "report" / "report.html").is_file()
    assert (out / "cand" / "rep1" / "runs" / "v1.2.0" / "rep1" / "summary.json").is_file()
    assert (out / "base" / "rep1" / "runs" / "v1.2.0" / "rep1" / "summary.json").is_file()
    assert not (out / "base-src").exists()  # the baseline's worktree is removed
    # The servers and Locust runs wrote their logs to files, out of pytest's capture: search them here.
    logs = sorted(out.rglob("*.log"))
    assert any(p.name.endswith(".server.log") for p in logs)
    for path in logs:
        assert not server_logs.problems(path.read_text(errors="replace")), path
