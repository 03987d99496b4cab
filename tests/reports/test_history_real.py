"""History mode on a series of real runs with the slowdown switched on partway.

tests/data/history-real.tar.gz: 13 points, each the candidate side's blocks 2-6 of one real gate job of
benchmarks/gate_error_rates.py (2026-12-06, the 2-core machine): 8 jobs of the unchanged server, then 5 of
the server with config/testing/slowdown-20.yaml (each worker cycle 20 % longer). The points are in that
order, so the change starts at the ninth point (index 8)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from configkit import REPO_ROOT
from reports.compare import main

SERIES = REPO_ROOT / "tests" / "data" / "history-real.tar.gz"
SLOWDOWN_STARTS = 8


def points(tmp_path: Path) -> list[str]:
    with tarfile.open(SERIES) as archive:
        archive.extractall(tmp_path / "series", filter="data")
    return [str(p) for p in sorted((tmp_path / "series").iterdir()) if p.is_dir()]


def change_points(tmp_path: Path, *options: str) -> dict[str, list[dict]]:
    out = tmp_path / "out"
    assert main(["--history", *points(tmp_path), "--out", str(out), *options]) == 0
    return json.loads((out / "history.json").read_text())["change_points"]


def test_the_injected_slowdown_is_found_where_it_starts(tmp_path: Path) -> None:
    found = change_points(tmp_path)
    # TTFT p95 rose with the slowdown (every first token waits for slower steps): found at p < 0.01.
    (ttft,) = found["ttft_p95_s"]
    assert ttft["index"] == SLOWDOWN_STARTS and ttft["change_pct"] > 10 and ttft["p_value"] < 0.01
    assert found["success_rate"] == []  # nothing failed, before or after


def test_throughput_shows_it_at_a_looser_significance(tmp_path: Path) -> None:
    """Throughput fell 13 % across jobs whose machine drifted by up to 8 % between them: p 0.025 here,
    found with --alpha 0.05 and at the right point."""
    found = change_points(tmp_path, "--alpha", "0.05", "--permutations", "999")
    (throughput,) = found["output_tokens_per_s"]
    assert throughput["index"] == SLOWDOWN_STARTS and throughput["change_pct"] < -10
