"""The sweep report from a sweep folder alone: steady windows, intervals, knees, the located guide mix and
the headline, on synthetic run folders with known answers (no server, nothing machine-dependent)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrate.probe import ProbeResult, ProfileProbe, StepResult
from reports.point_figures import point_figures
from reports.runs import load_runs
from reports.sweep_folder import GuideMix, PointRun, SweepPlan, append_point
from runfolder.figures import Slo
from tests.support.reports_factory import T0, record, write_synthetic_run

SLO = Slo(ttft_s=1.0, e2e_s=4.0)


def arrivals(rate: float, run_s: float, seed: int = 0) -> np.ndarray:
    """An exact schedule: the planned count in every 5 s, at random times."""
    rng = np.random.default_rng(seed)
    per = round(rate * 5)
    return np.sort(np.concatenate([k * 5 + 5 * rng.random(per) for k in range(int(run_s / 5))]))


def run_with(tmp_path, in_system_s, rate=2.0, run_s=60.0, outcome=lambda t: "success", name="r"):
    times = arrivals(rate, run_s)
    recs = [record(outcome(t), at_s=t, e2e_s=in_system_s(t)) for t in times]
    path = write_synthetic_run(tmp_path / name, recs, label=name, duration_s=run_s, rate=rate)
    (run,) = load_runs([path])
    return run


def test_steady_window_drops_a_filling_queue_and_keeps_the_exact_offered_load(tmp_path):
    rng = np.random.default_rng(1)
    run = run_with(tmp_path, lambda t: 1 + min(t, 20.0) / 4 + 0.2 * rng.random())
    f = point_figures(run, SLO)
    assert f.settled and f.window_start_s - T0 in (15.0, 20.0, 25.0)
    assert f.offered_per_s == pytest.approx(2.0)  # whole segments of an exact schedule
    assert f.e2e_p50_s.estimate > 5.5  # the queue's level, not the ramp's average


def test_a_queue_still_growing_at_the_end_is_not_settled(tmp_path):
    f = point_figures(run_with(tmp_path, lambda t: 1 + t / 3), SLO)
    assert not f.settled


def test_served_rate_and_shares_carry_intervals_that_contain_the_known_answer(tmp_path):
    # every 4th request rejected: success 75 %, served 1.5 req/s of 2 offered
    run = run_with(
        tmp_path, lambda t: 1.0, outcome=lambda t: "rejected" if int(t * 7) % 4 == 0 else "success"
    )
    f = point_figures(run, SLO)
    share = f.shares["success"].estimate
    assert f.shares["success"].contains(share) and f.shares["success"].half_width < 0.15
    assert f.served_per_s.contains(2.0 * share)
    assert f.ttft_p50_s.estimate == pytest.approx(0.1)


def sweep_folder(tmp_path):
    """Three profiles: a serialized pair that fails past 1 req/s (v1.1.1 by rejections and timeouts), and a
    batching one that holds to 2 req/s."""
    out = tmp_path / "sweep"
    out.mkdir()
    probe = ProbeResult(
        [
            ProfileProbe(n, [StepResult(1, 10, 10, 1.0, 128.0, 0.1, 1.0, 8.0, "r", 0, 128.0, 120.0, 136.0)])
            for n in ("v1.1.1", "v1.2.0", "guide-promise")
        ]
    )
    probe.write(out)
    q = {**probe.quantities(), "slo_ttft_s": 1.0, "slo_e2e_s": 4.0}
    plan = SweepPlan(
        "test", "synthetic", ["v1.1.1", "v1.2.0", "guide-promise"], [0.5, 1.0, 2.0, 4.0], q, 0.9, 0.9, 1.0,
        guide={"v1.1.1": GuideMix(0.70, 0.12, 0.18, 75.73)}, guide_profile="v1.1.1",
    )  # fmt: skip
    plan.write(out)
    for name in plan.profiles:
        for rate in plan.rates:
            capacity = 3.0 if name == "guide-promise" else 1.0
            served = min(1.0, capacity / rate)

            def outcome(t, served=served, name=name):
                u = (t * 7.31) % 1
                if u < served:
                    return "success"
                return "rejected" if name == "v1.2.0" or u < served + (1 - served) * 0.4 else "timeout"

            point = PointRun(name, rate, "grid", PointRun.folder_for(name, rate, "grid"), 60.0, 0)
            times = arrivals(rate, 60.0)
            e2e = 1.0 if rate < capacity else 3.5
            recs = [record(outcome(t), at_s=t, e2e_s=e2e) for t in times]
            write_synthetic_run(out / point.folder, recs, label=name, duration_s=60.0, rate=rate)
            append_point(out, point)
    return out


def test_report_only_writes_knees_guide_point_and_a_headline_with_intervals(tmp_path, capsys):
    from orchestrate.reproduce import main

    out = sweep_folder(tmp_path)
    (out / "campaign.yaml").write_text(
        (__import__("configkit").REPO_ROOT / "config/campaigns/default.yaml").read_text()
    )
    assert main(["--out", str(out), "--report-only"]) == 0
    data = json.loads((out / "sweep.json").read_text())
    knees = data["knees"]
    assert knees["v1.1.1"]["holds_up_to_rps"] == 1.0 and knees["v1.1.1"]["breaks_from_rps"] == 2.0
    assert (
        knees["guide-promise"]["holds_up_to_rps"] == 2.0 and knees["guide-promise"]["breaks_from_rps"] == 4.0
    )
    # success 1/2 at 2 req/s, 1/4 at 4: neither is 70 %; the closer mix is at 2.0
    assert data["guide_located_rate_per_s"] == 2.0 and 0.15 < data["guide_distance"] < 0.35
    headline = (out / "headline.md").read_text()
    assert (
        "| v1.1.1 measured | v1.1.1 guide |" in headline and "| Success | 42 % [31-54] | 70 % |" in headline
    )
    assert "comes closest to the guide's 70 % success / 12 % rejections / 18 % timeouts at 2.00" in headline
    assert "TTFT p50: " in headline and "where 95 % intervals separate" in headline
    html = (out / "report" / "report.html").read_text()
    assert "Where each failure mode starts" in html and html.count('class="plotly-graph-div"') == 3
    onsets = (out / "report" / "report.md").read_text()
    assert "2.00 req/s (2.00x [1.88-2.13])" in onsets  # rejections start at 2x capacity, with its interval
    assert "| Success |" in capsys.readouterr().out


def test_a_quiet_tail_without_a_trend_is_settled(tmp_path):
    # Noise around 1 s, then a quiet last fifth around the same level: MSER-5 alone would cut to the quiet
    # tail (past the middle: "not settled"); the halves' means do not differ, so there is no trend.
    rng = np.random.default_rng(3)
    run = run_with(tmp_path, lambda t: 1.0 + (0.01 if t > 48 else 0.6) * (rng.random() - 0.5))
    f = point_figures(run, SLO)
    assert f.settled and f.steady.truncate == 0 and "overruled" in f.steady.method
