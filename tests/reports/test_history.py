"""History mode: E-divisive change points (reports/change_points.py) on known series, and
`python -m reports.compare --history` over run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reports.change_points import energy_statistic, find_change_points
from reports.compare import main
from runfolder.server_usage import ServerUsage, write_server_usage
from tests.support.reports_factory import outcome_mix, write_synthetic_run


def test_energy_statistic_is_larger_at_the_true_split() -> None:
    values = np.array([1.0] * 8 + [2.0] * 8) + np.random.default_rng(0).normal(0, 0.05, 16)
    scores = {tau: energy_statistic(values, tau) for tau in range(3, 14)}
    assert max(scores, key=lambda tau: scores[tau]) == 8


def test_a_single_shift_is_found_where_it_starts() -> None:
    rng = np.random.default_rng(1)
    series = np.concatenate([rng.normal(100, 2, 12), rng.normal(90, 2, 8)])  # a 10 % drop at index 12
    (cp,) = find_change_points(series)
    assert cp.index == 12 and cp.p_value < 0.05
    assert cp.change_pct == pytest.approx(-10, abs=2)


def test_two_shifts_are_both_found() -> None:
    rng = np.random.default_rng(2)
    series = np.concatenate([rng.normal(100, 1.5, 10), rng.normal(110, 1.5, 10), rng.normal(95, 1.5, 10)])
    assert [cp.index for cp in find_change_points(series)] == [10, 20]


def test_a_slow_drift_in_steps_is_found_though_each_step_is_small() -> None:
    """3 % a week never trips a 10 % gate; the series shows where the level moved."""
    rng = np.random.default_rng(4)
    series = np.concatenate([rng.normal(100, 1, 8), rng.normal(97, 1, 8), rng.normal(94, 1, 8)])
    found = [cp.index for cp in find_change_points(series)]
    assert found and all(abs(i - j) <= 1 for i, j in zip(found, [8, 16][: len(found)], strict=False))


@pytest.mark.parametrize("seed", [5, 6, 7, 8, 9])
def test_noise_alone_has_no_change_point(seed: int) -> None:
    series = np.random.default_rng(seed).normal(100, 3, 24)
    assert find_change_points(series, seed=seed) == []


def test_too_short_a_series_has_no_change_point() -> None:
    assert find_change_points([1.0, 1.0, 5.0, 5.0, 5.0]) == []


def point(root: Path, tokens: int, cpu_per_token: float, start_s: float) -> Path:
    folder = write_synthetic_run(
        root, outcome_mix(10, output_tokens=tokens), label="default", start_s=start_s
    )
    usage = ServerUsage(cpu_s=cpu_per_token * 10 * tokens, wall_s=12, processes=2, output_tokens=10 * tokens)
    write_server_usage(folder, usage)
    return folder


def test_history_over_a_folder_of_dated_runs(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(3)
    nightly = tmp_path / "nightly"
    for night in range(12):
        slower = night >= 8  # the change lands on the ninth night
        tokens = int(rng.normal(90 if slower else 100, 1.5))
        cpu = rng.normal(0.0044 if slower else 0.0040, 0.00004)
        point(nightly / f"2026-11-{night + 1:02d}" / "block01", tokens, cpu, start_s=86400 * night)
    out = tmp_path / "out"
    assert main(["--history", str(nightly), "--out", str(out), "--permutations", "199"]) == 0
    found = json.loads((out / "history.json").read_text())["change_points"]
    assert [cp["index"] for cp in found["output_tokens_per_s"]] == [8]
    assert [cp["index"] for cp in found["server_cpu_s_per_output_token"]] == [8]
    assert found["success_rate"] == []
    assert "2026-11-09" in capsys.readouterr().out  # the run where the shift starts, by name
    assert (out / "history.png").stat().st_size > 10_000


def test_history_refuses_too_few_points_and_missing_folders(tmp_path: Path, capsys) -> None:
    for i in range(3):
        point(tmp_path / f"p{i}", 100, 0.004, start_s=100 * i)
    assert (
        main(["--history", *[str(tmp_path / f"p{i}") for i in range(3)], "--out", str(tmp_path / "o")]) == 2
    )
    assert "needs at least 6 points" in capsys.readouterr().err
    assert main(["--history", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
