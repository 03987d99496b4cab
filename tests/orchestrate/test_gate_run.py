"""The gate's block runner (orchestrate/gate_run.py) without servers: the order of the blocks, the labels,
the CPU reading, the campaign file and the options (end to end: tests/orchestrate/test_perf_gate.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrate import gate_run


def test_blocks_alternate_so_that_neither_side_always_goes_first():
    order = gate_run.block_order(4)
    assert order == [(1, "base"), (1, "cand"), (2, "cand"), (2, "base"),
                     (3, "base"), (3, "cand"), (4, "cand"), (4, "base")]  # fmt: skip
    # Each pair is two consecutive blocks, one of each side: what the gate's pairing checks.
    assert all({order[i][1], order[i + 1][1]} == {"base", "cand"} for i in range(0, len(order), 2))


def test_a_testing_overlay_is_named_in_the_label():
    assert gate_run.side_label("default", None) == "default"
    assert gate_run.side_label("default", "config/testing/slowdown-10.yaml") == "default+slowdown-10"


def test_tree_cpu_counts_the_children_too():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"]
    )
    time.sleep(0.3)
    cpu_s, processes = gate_run.tree_cpu_s(os.getpid())
    child.wait()
    assert processes >= 2 and cpu_s > 0


def test_the_repository_campaign_loads():
    campaign = gate_run.load_gate_campaign(gate_run.GATE_CAMPAIGN)
    assert campaign.label == "default" and campaign.pairs >= 4 and campaign.load.users >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pairs", "1"], "--pairs must be at least 2"),
        (["--block-s", "0.5"], "--block-s must be at least 1 second"),
        (["--base-src", "/nonexistent"], "no server/ package there"),
        (["--cand-profile", "no-such.yaml"], "no such file"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, capsys, args: list[str], message: str):
    with pytest.raises(SystemExit) as exit_info:
        gate_run.main(["--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_campaign_exits_2_naming_the_key(tmp_path: Path, capsys):
    bad = tmp_path / "gate.yaml"
    bad.write_text("name: x\npairs: 1\nload: {users: 4, duration_s: 4}\n")
    assert gate_run.main(["--out", str(tmp_path / "out"), "--campaign", str(bad)]) == 2
    assert "pairs" in capsys.readouterr().err
