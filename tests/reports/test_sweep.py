"""Probe, sweep plan and knee: the rules applied to measured figures, with fake measurements (no server),
so nothing here depends on the machine's speed."""

from __future__ import annotations

import itertools

import pytest

from orchestrate import campaign as camp
from orchestrate.probe import ProbeResult, ProfileProbe, StepResult, probe_profile
from orchestrate.sweep import (
    comparison_point,
    plan_rates,
    point_load,
    short_windows,
    users_for,
    window_s,
    with_slo,
)
from reports.knee import CurvePoint, find_knee
from reports.sweep_report import run_order

DEFAULT = camp.load_campaign(camp.find("default"))


def step(
    concurrency: int,
    rps: float,
    e2e_s: float = 1.0,
    ttft_s: float = 0.1,
    successes: int = 10,
    rejections: int = 0,
):
    """A step whose replies have 128 tokens: its token rate is 128 x `rps`."""
    return StepResult(
        concurrency, successes, successes, rps, 128 * rps, ttft_s, e2e_s, 10.0, "run", rejections, 128.0
    )


def fake_runner(capacity_rps: float, per_stream_rps: float):
    """A server whose throughput grows with concurrency up to `capacity_rps`; records each call."""
    calls = []

    def run(name, concurrency, warmup_s, window_s):
        calls.append((concurrency, warmup_s, window_s))
        rps = min(capacity_rps, per_stream_rps * concurrency)
        return step(concurrency, rps, e2e_s=concurrency / rps)

    return run, calls


def test_probe_doubles_until_throughput_stops_rising():
    run, calls = fake_runner(capacity_rps=6.0, per_stream_rps=1.0)
    result = probe_profile("batching", DEFAULT.probe, run, lambda _: None)
    # 1, 2, 4 rise; 8 reaches 6 req/s (+50 %), 16 and 32 add nothing: saturated.
    assert [c for c, _, _ in calls] == [1, 2, 4, 8, 16, 32]
    assert result.capacity_rps == 6.0 and result.best.concurrency == 8
    assert result.single.e2e_p50_s == 1.0


def test_probe_of_a_serialized_server_stops_at_two():
    run, calls = fake_runner(capacity_rps=1.0, per_stream_rps=1.0)
    result = probe_profile("serial", DEFAULT.probe, run, lambda _: None)
    assert [c for c, _, _ in calls] == [1, 2, 4] and result.capacity_rps == 1.0


def test_probe_looks_past_a_flat_doubling():
    # Batching that gains nothing at 2 streams but does at 4 and 8 (as on a small CPU).
    rps = {1: 1.0, 2: 1.0, 4: 1.5, 8: 2.0, 16: 2.0, 32: 2.05}

    def run(name, concurrency, warmup_s, window_s):
        return step(concurrency, rps[concurrency], e2e_s=concurrency / rps[concurrency])

    result = probe_profile("batching", DEFAULT.probe, run, lambda _: None)
    assert result.capacity_rps == 2.05 and [s.concurrency for s in result.steps] == [1, 2, 4, 8, 16, 32]


def test_probe_step_windows_follow_the_measured_latency():
    run, calls = fake_runner(capacity_rps=2.0, per_stream_rps=1.0)
    probe_profile("p", DEFAULT.probe, run, lambda _: None)
    rule = DEFAULT.probe.step_s
    assert calls[0] == (1, DEFAULT.probe.first_warmup_s, DEFAULT.probe.first_step_s)
    # Tokens count as they arrive: every further step is the rule's window on the one-stream E2E (1 s),
    # without a warm-up, however long its replies take.
    assert {(w, s) for _, w, s in calls[1:]} == {(0.0, rule.value({"single_e2e_s": 1.0}))}


def test_capacity_is_the_token_rate_over_the_reply_length():
    # A 4 s window at 1.5 req/s completes 5 or 6 whole replies (1.25 or 1.5 req/s): the tokens that
    # arrived in it say 1.45 req/s of 100-token replies.
    probe = ProfileProbe("p", [StepResult(4, 5, 5, 1.25, 145.0, 0.1, 2.7, 4.0, "run", 0, 100.0)])
    assert probe.capacity_rps == pytest.approx(1.45) and probe.capacity_tokens_per_s == 145.0
    # Without token counts (a server with neither usage nor a tokenizer): the completed replies.
    probe = ProfileProbe("p", [StepResult(4, 5, 5, 1.25, 0.0, 0.1, 2.7, 4.0, "run")])
    assert probe.capacity_rps == 1.25


def test_probe_stops_at_the_servers_admission_limit():
    # v1.2.0 as shipped: at most 10 streams; at 16 users the server refuses the rest.
    def run(name, concurrency, warmup_s, window_s):
        rps = min(1.0 * concurrency, 6.0)
        return step(concurrency, rps, e2e_s=concurrency / rps, rejections=max(0, concurrency - 10) * 50)

    result = probe_profile("capped", DEFAULT.probe, run, lambda _: None)
    assert [s.concurrency for s in result.steps] == [1, 2, 4, 8, 16]
    keep_going = DEFAULT.probe.model_copy(update={"stop_on_refusals": False})
    assert probe_profile("capped", keep_going, run, lambda _: None).steps[-1].concurrency == 32


def test_quick_probe_grows_by_four_and_stops_at_the_first_flat_step():
    quick = DEFAULT.quick_form().probe
    run, calls = fake_runner(capacity_rps=1.0, per_stream_rps=1.0)
    probe_profile("serial", quick, run, lambda _: None)
    assert [c for c, _, _ in calls] == [1, 4]
    run, calls = fake_runner(capacity_rps=3.0, per_stream_rps=1.0)  # saturated from 3 streams
    probe_profile("batching", quick, run, lambda _: None)
    assert [c for c, _, _ in calls] == [1, 4, 16]


def test_probe_repeats_a_first_step_with_too_few_replies():
    windows = []

    def run(name, concurrency, warmup_s, window_s):
        windows.append(window_s)
        few = len(windows) == 1
        return step(concurrency, 0.1 if few else 1.0, successes=1 if few else 10)

    probe_profile("slow", DEFAULT.probe, run, lambda _: None)
    # The first try's replies took 1 s: the next window is twice as long, or long enough for the wanted
    # number of replies at that latency, whichever is longer.
    wanted_s = 1.5 * DEFAULT.probe.min_first_step_requests * 1.0
    assert windows[:2] == [DEFAULT.probe.first_step_s, max(2 * DEFAULT.probe.first_step_s, wanted_s)]


def test_probe_stops_when_replies_queue():
    # Throughput creeps up with concurrency (overheads overlap) while every reply waits in a queue.
    def run(name, concurrency, warmup_s, window_s):
        return step(concurrency, 1.0 + 0.2 * concurrency, e2e_s=concurrency / (1.0 + 0.2 * concurrency))

    result = probe_profile("serial", DEFAULT.probe, run, lambda _: None)
    # E2E at 16 is 16 / 4.2 = 3.8 s, at 32: 32 / 7.4 = 4.3 s; at 64: 64 / 13.8 = 4.6 s; single: 1 / 1.2 s.
    # 8x the single-stream 0.83 s is 6.7 s: never passed here, so it ends at max_concurrency.
    assert result.steps[-1].concurrency == DEFAULT.probe.max_concurrency
    tight = DEFAULT.probe.model_copy(update={"max_e2e_multiple": 4.0})
    result = probe_profile("serial", tight, run, lambda _: None)
    assert result.steps[-1].concurrency == 16  # 3.8 s > 4 x 0.83 s


def test_a_warm_up_reply_sizes_the_first_step():
    run, calls = fake_runner(capacity_rps=1.0, per_stream_rps=1.0)
    probe_profile("p", DEFAULT.probe, run, lambda _: None, e2e_hint_s=3.0)
    assert calls[0][2] == max(DEFAULT.probe.first_step_s, 1.5 * DEFAULT.probe.min_first_step_requests * 3.0)


def probe_of(**capacities: float) -> ProbeResult:
    return ProbeResult(
        [ProfileProbe(name, [step(1, 1.0, e2e_s=0.8), step(2, cap)]) for name, cap in capacities.items()]
    )


def test_quantities_and_slo_come_from_the_probe():
    q = with_slo(DEFAULT, probe_of(a=1.0, b=2.0, c=3.0).quantities())
    assert q["single_e2e_s"] == 0.8 and q["min_capacity_rps"] == 1.0 and q["max_capacity_rps"] == 3.0
    assert q["slo_e2e_s"] == pytest.approx(DEFAULT.slo.e2e_s.times * 0.8)
    assert q["slo_ttft_s"] == pytest.approx(DEFAULT.slo.ttft_s.times * 0.1)


def test_sweep_rates_span_below_serialized_to_beyond_batching_capacity():
    q = with_slo(DEFAULT, probe_of(serial=1.0, batching=3.0).quantities())
    rates = plan_rates(DEFAULT.sweep, q)
    assert len(rates) == DEFAULT.sweep.points >= 5
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    assert rates[0] == pytest.approx(0.5) and rates[-1] == pytest.approx(4.5)
    ratios = [b / a for a, b in itertools.pairwise(rates)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-3)  # geometric
    # The comparison point: nearest 1.25x the serialized capacity.
    assert rates[comparison_point(rates, DEFAULT.sweep, q)] == pytest.approx(1.25, rel=0.25)


def test_sweep_order_is_rate_by_rate_with_the_profiles_rotating():
    order = run_order([1.0, 2.0, 3.0], ["a", "b", "c"])
    assert [(r.rate_per_s, r.profile) for r in order] == [
        (1.0, "a"), (1.0, "b"), (1.0, "c"),
        (2.0, "b"), (2.0, "c"), (2.0, "a"),
        (3.0, "c"), (3.0, "a"), (3.0, "b"),
    ]  # fmt: skip
    assert order[0].folder != order[3].folder


def test_every_profile_gets_the_same_schedule_at_a_rate_and_enough_users():
    q = with_slo(DEFAULT, probe_of(serial=1.0, batching=3.0).quantities())
    runs = run_order(plan_rates(DEFAULT.sweep, q), ["a", "b"])
    loads = [point_load(dict(DEFAULT.load), DEFAULT.sweep, r, q) for r in runs]
    by_point = {}
    for run, load in zip(runs, loads, strict=True):
        by_point.setdefault(run.point, set()).add((load.seed, load.rate, load.duration_s, load.users))
        assert load.arrival == "poisson" and load.slo_e2e_s == q["slo_e2e_s"]
        # Little's law: every request could be in flight for the whole client deadline, and still find a user.
        assert load.users >= load.rate * load.request_timeout_s
    assert all(len(v) == 1 for v in by_point.values())
    assert len({next(iter(v))[0] for v in by_point.values()}) == len(by_point)  # a schedule per rate
    assert users_for(DEFAULT.sweep, 1000.0, 1000.0) == DEFAULT.sweep.max_users


def test_each_point_window_holds_the_wanted_arrivals_within_its_bounds():
    spec = DEFAULT.sweep.model_copy(
        update={"min_requests_per_point": 30, "min_window_s": 8, "max_window_s": 40}
    )
    # 30 arrivals take 30 s at 1 req/s; 3 s at 10 req/s, raised to the 8-s floor; 60 s at 0.5, cut to 40.
    assert [window_s(spec, r) for r in (1.0, 10.0, 0.5)] == [30.0, 8.0, 40.0]
    q = with_slo(DEFAULT, probe_of(serial=1.0, batching=3.0).quantities())
    rates = plan_rates(spec, q)
    for run in run_order(rates, ["a"]):
        load = point_load(dict(DEFAULT.load), spec, run, q)
        if run.point not in short_windows(spec, rates):
            assert load.rate * load.duration_s >= spec.min_requests_per_point - 0.5
    # Only the points the 40-s cap keeps short are listed, with their expected arrivals.
    assert short_windows(spec, [0.5, 1.0, 10.0]) == {0: 20.0}


def test_derived_limits_follow_the_probe():
    spec = DEFAULT.profiles[0]
    derived = camp.derived_overrides(spec, {"single_e2e_ms": 500.0})
    tiers = derived["model_concurrency_limiter"]["tier_limits"]
    assert set(tiers) == set(camp.TIERS) and tiers["7-13B"] == {"queue_timeout_ms": 4000}


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        # (served share, within-SLO share) per rate 1, 2, 3, 4
        ([(1, 1), (1, 1), (1, 1), (1, 1)], (4.0, None, None)),
        ([(1, 1), (1, 0.95), (0.6, 0.5), (1, 1)], (2.0, 3.0, "served+slo")),  # a later recovery is ignored
        ([(1, 1), (1, 0.5), (1, 0.2), (1, 0.1)], (1.0, 2.0, "slo")),
        ([(0.5, 0.5), (0.3, 0.3), (0.2, 0.2), (0.1, 0.1)], (None, 1.0, "served+slo")),
        ([(1, 1), (0.8, 0.95), (0.5, 0.5), (0.3, 0.3)], (1.0, 2.0, "served")),
    ],
)
def test_knee(shares, expected):
    points = [CurvePoint(float(i + 1), served, slo) for i, (served, slo) in enumerate(shares)]
    knee = find_knee(list(reversed(points)), follow_share=0.9, slo_attainment=0.9)
    assert (knee.holds_up_to_rps, knee.breaks_at_rps, knee.reason) == expected
    assert knee.describe()


# -- the report, from known run folders -----------------------------------------------------------------
def test_report_only_writes_curves_knees_and_headline(tmp_path, capsys):
    """Known sweep runs give known knees and a known headline at the comparison point."""
    from orchestrate.reproduce import main
    from reports.sweep_report import SweepPlan, sweep_dir
    from tests.support.reports_factory import outcome_mix, write_synthetic_run

    out = tmp_path / "repro"
    out.mkdir()
    (out / "campaign.yaml").write_text(camp.find("default").read_text())
    probe = probe_of(**{"v1.1.1": 1.0, "v1.2.0": 1.0, "guide-promise": 3.0})
    probe.write(out)
    q = with_slo(DEFAULT, probe.quantities())  # SLO E2E = 4 x 0.8 s = 3.2 s
    rates = [0.5, 1.0, 2.0, 4.0]
    plan = SweepPlan(
        ["v1.1.1", "v1.2.0", "guide-promise"],
        rates,
        2,
        q,
        min_requests_per_point=30,
        short_points={"0": 20.0},
    )
    plan.write(out)
    for run in plan.runs():
        if run.profile == "guide-promise":  # follows up to 2 req/s, then slow beyond the SLO
            mix = outcome_mix(10, e2e_s=1.0 if run.rate_per_s <= 2 else 5.0, ttft_s=0.1)
        else:  # serialized: fine at 0.5 and 1, then refusals
            mix = outcome_mix(10, 0, 0) if run.rate_per_s <= 1 else outcome_mix(5, 3, 2)
        write_synthetic_run(sweep_dir(out, run), mix, label=run.profile, rate=run.rate_per_s)
    assert main(["--out", str(out), "--report-only"]) == 0
    printed = capsys.readouterr().out
    knees = __import__("json").loads((out / "sweep.json").read_text())["knees"]
    assert (knees["v1.1.1"]["holds_up_to_rps"], knees["v1.1.1"]["breaks_at_rps"]) == (1.0, 2.0)
    assert knees["v1.1.1"]["reason"] == "served+slo"
    assert (knees["guide-promise"]["holds_up_to_rps"], knees["guide-promise"]["breaks_at_rps"]) == (2.0, 4.0)
    assert knees["guide-promise"]["reason"] == "slo"
    headline = (out / "headline.md").read_text()
    assert (
        "| v1.1.1 measured | v1.1.1 guide | v1.2.0 measured | v1.2.0 guide | guide-promise measured |"
        in headline
    )
    assert "| Success | 50.0 % | 70.0 % | 50.0 % | 100.0 % | 100.0 % |" in headline
    assert "| Timeouts | 20.0 % | 18.0 % | 20.0 % | 0.0 % | 0.0 % |" in headline
    assert (
        "At 2.00 req/s offered" in headline
        and "guide-promise holds up to 2.00x the load v1.1.1 holds" in headline
    )
    assert (out / "report" / "plots" / "curves.png").is_file() and (
        out / "report" / "plots" / "outcomes.png"
    ).is_file()
    assert (out / "knees.csv").is_file() and (out / "curve.csv").is_file()
    html = (out / "report" / "report.html").read_text()
    assert "Knees (computed from the curves)" in html and html.count("data:image/png;base64,") == 2
    assert (out / "report" / "comparison-point" / "report.html").is_file()
    assert "| Success |" in printed
    assert "1 sweep point(s) held fewer than the 30 expected arrivals asked for" in printed
    assert "0.50 req/s (~20)" in printed
    report_md = (out / "report" / "report.md").read_text()
    assert "Campaign 'default': v1.1.1 vs v1.2.0" in report_md and "Target " not in report_md


def test_step_throughput_counts_from_the_first_token():
    import numpy as np

    from orchestrate.probe import steady_tokens_per_s

    # 16 streams prefilled together: nothing for 1.5 s, then 100 tokens/s until the window's end at 4 s.
    times = 1.5 + np.arange(250) / 100
    tokens = np.ones(250)
    assert steady_tokens_per_s(times, tokens, 0.0, 4.0) == pytest.approx(100, rel=0.01)
    # Counted from the window's start instead, the same tokens read 62.5 tok/s.
    assert tokens[times < 4.0].sum() / 4.0 == pytest.approx(62.5, rel=0.01)
    assert steady_tokens_per_s(np.empty(0), np.empty(0), 0.0, 4.0) == 0.0
