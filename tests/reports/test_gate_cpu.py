"""The gate's low-noise stand-in: when wall-clock tok/s cannot tell, the server's CPU-seconds per output
token (server_usage.json) decides the throughput test, and the verdict says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reports.compare import main
from runfolder.server_usage import ServerUsage, write_server_usage
from tests.support.reports_factory import outcome_mix, write_synthetic_run

# Wall-clock throughput (10 requests x tokens / 10 s) swinging with the machine, pair by pair, but not in
# step: the tok/s test cannot tell a change from this noise.
BASE_TOKENS = [100, 60, 140, 90, 120]
CAND_TOKENS = [80, 75, 110, 100, 95]


def blocks(root: Path, tokens: list[int], offset_s: float, cpu_per_token: list[float] | None) -> Path:
    for i, per_request in enumerate(tokens):
        folder = write_synthetic_run(
            root / f"block{i}", outcome_mix(10, output_tokens=per_request), label="default",
            start_s=100 * i + offset_s,
        )  # fmt: skip
        if cpu_per_token is not None:
            produced = 10 * per_request
            usage = ServerUsage(
                cpu_s=cpu_per_token[i] * produced, wall_s=12, processes=2, output_tokens=produced
            )
            write_server_usage(folder, usage)
    return root


def run_gate(tmp_path: Path, base: Path, cand: Path, **relative) -> tuple[int, dict]:
    gates = tmp_path / "gates.yaml"
    rules = {"max_throughput_drop_pct": 10, **relative}
    gates.write_text(yaml.safe_dump({"evidence": {"min_requests": 10}, "relative": rules}))
    out = tmp_path / "out"
    code = main(["--no-report", "--gate", str(gates), str(base), str(cand), "--out", str(out)])
    (check,) = json.loads((out / "gate.json").read_text())["checks"]
    return code, check


STEADY = [0.0040, 0.0041, 0.0040, 0.0039, 0.0040]


@pytest.mark.parametrize(
    ("cand_cpu", "verdict", "code"),
    [
        (STEADY, "pass", 0),  # the same CPU per token: not worse, though tok/s could not tell
        ([v * 1.25 for v in STEADY], "fail", 1),  # 25 % more CPU per token: a 20 % drop, caught
    ],
)
def test_cpu_per_token_decides_what_tok_s_cannot(tmp_path, cand_cpu, verdict, code) -> None:
    base = blocks(tmp_path / "base", BASE_TOKENS, 0, STEADY)
    cand = blocks(tmp_path / "cand", CAND_TOKENS, 50, cand_cpu)
    got_code, check = run_gate(tmp_path, base, cand)
    assert (got_code, check["verdict"]) == (code, verdict)
    assert "CPU per output token decides" in check["detail"]
    assert "noise measured in this job" in check["detail"]


def test_without_cpu_figures_the_test_stays_inconclusive(tmp_path) -> None:
    base = blocks(tmp_path / "base", BASE_TOKENS, 0, None)
    cand = blocks(tmp_path / "cand", CAND_TOKENS, 50, None)
    code, check = run_gate(tmp_path, base, cand)
    assert (code, check["verdict"]) == (3, "inconclusive")
    assert "more pair(s) of runs would decide it" in check["detail"]


def test_the_stand_in_can_be_turned_off(tmp_path) -> None:
    base = blocks(tmp_path / "base", BASE_TOKENS, 0, STEADY)
    cand = blocks(tmp_path / "cand", CAND_TOKENS, 50, STEADY)
    code, check = run_gate(tmp_path, base, cand, cpu_per_token_decides=False)
    assert (code, check["verdict"]) == (3, "inconclusive")
    assert "CPU" not in check["detail"]


def test_a_tok_s_drop_without_a_cpu_rise_is_not_called_a_regression(tmp_path) -> None:
    """Contention bursts can hit several blocks of one side: wall-clock tok/s then drops while the CPU each
    token costs does not move. The gate says it cannot tell (exit 3), not "regression" and not "pass"."""
    tight = [100, 101, 99, 100, 100]
    base = blocks(tmp_path / "base", tight, 0, STEADY)
    cand = blocks(tmp_path / "cand", [80, 81, 79, 80, 80], 50, STEADY)
    code, check = run_gate(tmp_path, base, cand)
    assert (code, check["verdict"]) == (3, "inconclusive")
    assert "CPU per output token did not rise" in check["detail"] and "run the gate again" in check["detail"]
    # The same drop with the CPU per token rising to match it: a regression.
    slower = blocks(tmp_path / "slower", [80, 81, 79, 80, 80], 50, [v * 1.25 for v in STEADY])
    code, check = run_gate(tmp_path, base, slower)
    assert (code, check["verdict"]) == (1, "fail")
