"""Steady state past capacity, for real: v1.2.0 as shipped (one generation at a time, at most 10 streams)
under twice the load it serves, measured over a run and over a run twice as long (10 s and 20 s of 24-token
replies: the cap fills in about a second). Once its stream cap is full, the outcome shares are the server's,
not the window's: doubling the run moves them by no more than their intervals. Real server, real tiny
model, real Locust; short replies keep the queue's time short."""

from __future__ import annotations

import math

import pytest

from configkit import RUNTIME_CONFIG
from orchestrate.processes import run_locust, running_server
from reports.point_figures import point_figures
from reports.runs import load_runs
from runfolder.figures import Slo

pytestmark = pytest.mark.slow
MAX_TOKENS = 24


def measure(url: str, run_dir, rate: float, run_s: int):
    args = [
        "-u", "60", "-r", "60", "-t", f"{run_s}s", "--stop-timeout", "20",
        "--arrival", "poisson-exact", "--rate", f"{rate:g}", "--seed", "7",
        "--max-tokens", str(MAX_TOKENS), "--ignore-eos", "--prompt-tokens", "16",
        "--request-timeout-s", "20", "ChatStreamUser",
    ]  # fmt: skip
    run_locust(url, run_dir, *args, timeout_s=run_s + 120)
    (run,) = load_runs([run_dir])
    return point_figures(run, Slo(ttft_s=1.0, e2e_s=2.0))


def test_doubling_the_run_past_capacity_keeps_the_shares_within_their_intervals(tmp_path):
    with running_server(RUNTIME_CONFIG, profile="v1.2.0") as url:
        # the serial service rate, from a short closed loop of one user
        lone = measure(url, tmp_path / "lone", 1.0, 5)
        service_s = max(lone.e2e_p50_s.estimate, 0.02)
        rate = round(2.0 / service_s, 2)
        # at 2x the cap fills in about 10 service times; 40 (at least 10 s) settle it and leave a window
        short_s = max(10, math.ceil(40 * service_s))
        short = measure(url, tmp_path / "short", rate, short_s)
        long = measure(url, tmp_path / "long", rate, 2 * short_s)
    assert short.shares["rejected"].estimate > 0.2  # past capacity: the 11th stream is refused
    for outcome in ("success", "rejected", "timeout"):
        a, b = short.shares[outcome], long.shares[outcome]
        assert not a.separates(b), (outcome, a, b)
    assert long.settled, long.steady
