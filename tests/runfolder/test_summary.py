"""Unit tests of issue-12 summary rules: cut requests, token-arrival throughput, exact due slots, who
was the limit, shard assignment, the console table and the web UI's figures. Pure: no Locust, no network."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.arrival_schedule import ArrivalSchedule, due_slots
from loadgen.console import console_table
from loadgen.shards import ShardBook
from loadgen.webui import live_figures, table_rows
from runfolder import OUTCOMES, RequestRecord, summarize
from runfolder.summary import chunk_arrivals, peak_in_flight, tokens_in_window


def rec(outcome="success", *, t=0.0, ttft=0.1, gaps=(0.1,) * 9, tokens=10, lag=0.0, e2e=None, **kw):
    ok = outcome == "success"
    e2e = e2e if e2e is not None else (ttft + sum(gaps) if ok else 0.5)
    fields = dict(
        scenario="chat_stream",
        stream=True,
        scheduled_ts_s=t,
        sent_ts_s=t + lag,
        end_ts_s=t + e2e,
        schedule_lag_s=lag,
        e2e_s=e2e,
        outcome=outcome,
        outcome_detail="ok" if ok else "x",
        ttft_s=ttft if ok else None,
        itl_s=list(gaps) if ok else [],
        output_tokens=tokens if ok else None,
    )
    fields.update(kw)
    return RequestRecord(**fields)


# ---- cut requests stay in the denominator -----------------------------------------------------------


def test_cut_requests_are_an_outcome_with_a_warning_code():
    records = [rec(t=i) for i in range(3)] + [rec("cut", t=3, outcome_detail="run_ended")]
    s = summarize(records, window_start_s=0.0, window_end_s=5.0)
    assert "cut" in OUTCOMES
    assert (s["requests"], s["successes"], s["cuts"]) == (4, 3, 1)
    assert s["success_rate"] == 0.75 and s["cut_rate"] == 0.25
    assert (
        sum(s[k] for k in ("success_rate", "rejection_rate", "timeout_rate", "error_rate", "cut_rate")) == 1
    )
    assert s["outcome_details"]["cut"] == {"run_ended": 1}
    assert s["warning_codes"] == ["cut_requests"] and "still in flight" in s["warnings"][0]


def test_a_clean_run_has_no_warning_codes():
    s = summarize([rec(t=i) for i in range(3)], window_start_s=0.0, window_end_s=5.0)
    assert s["warnings"] == [] and s["warning_codes"] == []


# ---- throughput by token arrival ---------------------------------------------------------------------


def test_chunks_are_placed_at_their_arrival_and_share_the_tokens():
    r = rec(t=10.0, ttft=0.5, gaps=(0.25, 0.25, 0.5), tokens=8, lag=0.1)
    times, per_chunk = chunk_arrivals(r)
    assert times == pytest.approx([10.5, 10.75, 11.0, 11.5]) and per_chunk == 2.0
    body = rec(t=1.0, ttft=None, gaps=(), tokens=5, e2e=2.0, stream=False)
    assert chunk_arrivals(body) == ([3.0], 5.0)


def test_tok_per_s_counts_tokens_that_arrived_inside_the_window_on_both_ends():
    # 10 tokens, one per 0.1 s from t = 0.1 + 0.0 .. 1.0: a window [0.45, 0.75) holds the chunks at
    # 0.5, 0.6, 0.7 of the measured request and nothing of the one that failed.
    measured = [rec(t=0.0, ttft=0.1), rec("error", t=0.0)]
    assert tokens_in_window(measured, 0.45, 0.75) == pytest.approx(3.0)
    # A warm-up request still streaming into the window counts its tokens there, not its request.
    warm = [rec(t=-0.45, ttft=0.1)]  # chunks at -0.35, -0.25, ..., 0.55: six inside
    s = summarize(measured, window_start_s=0.0, window_end_s=1.0, warmup_records=warm)
    assert s["requests"] == 2
    assert s["warmup_output_tokens_in_window"] == pytest.approx(6.0)
    assert s["output_tokens_in_window"] == pytest.approx(10.0 + 6.0)
    assert s["output_tokens_per_s"] == pytest.approx(16.0)
    assert s["output_tokens"] == 10  # the per-request total keeps its old meaning


# ---- the schedule and the exact count of due slots ---------------------------------------------------


def test_constant_slots_do_not_drift_over_a_long_run():
    schedule = ArrivalSchedule("constant", 3.0, 1000.0)
    for _ in range(300_000):
        due = schedule.next_due()
    assert due == 1000.0 + 299_999 / 3.0


def test_due_slots_are_the_schedules_own_count():
    # 10/s from t=100: slots at 100.0, 100.1, ...; [101, 103) holds 20 of them, with 1 shard or 3
    assert due_slots("constant", 10.0, 100.0, 101.0, 103.0) == 20
    assert due_slots("constant", 10.0, 100.0, 101.0, 103.0, shards=3) == 20
    # Poisson: the seeded draws themselves, counted across shards
    expected = 0
    for shard in range(2):
        sched = ArrivalSchedule("poisson", 5.0, 0.0, seed=7, shard=shard, shards=2)
        while (due := sched.next_due()) < 30.0:
            expected += due >= 10.0
    assert due_slots("poisson", 5.0, 0.0, 10.0, 30.0, seed=7, shards=2) == expected
    assert due_slots("poisson", 5.0, 0.0, 10.0, 30.0, seed=8, shards=2) != expected


def test_a_late_shard_skips_the_slots_already_past():
    sched = ArrivalSchedule("constant", 10.0, 0.0, shard=1, shards=2)  # 0.1, 0.3, 0.5, ...
    assert sched.skip_until(0.6) == 3 and sched.next_due() == pytest.approx(0.7)


# ---- shard assignment ----------------------------------------------------------------------------------


def test_shards_survive_reconnects_and_go_to_late_joiners_only_when_free():
    book = ShardBook(2)
    assert book.assign("a", {"a", "b"}).shard == 0
    assert book.assign("b", {"a", "b"}).shard == 1
    again = book.assign("a", {"a", "b"})  # a reconnect: the same worker id asks again
    assert (again.shard, again.takeover) == (0, False)
    assert book.assign("c", {"a", "b", "c"}).shard is None  # every shard held by a live worker
    late = book.assign("c", {"a", "c"})  # b is gone: c takes its shard, from the present on
    assert (late.shard, late.takeover) == (1, True)


# ---- who was the limit when the generator fell behind --------------------------------------------------


def late_open_loop(users: int, in_flight: int) -> list[RequestRecord]:
    """Requests due every 0.1 s that left 0.2 s late; `in_flight` of them overlap at any time."""
    e2e = 0.1 * in_flight
    return [rec(t=i * 0.1, lag=0.2, e2e=e2e + 0.2, ttft=0.05, gaps=()) for i in range(40)]


def cpu(seconds: float) -> dict[str, dict[str, float]]:
    return {"local": {"cpu_s": seconds, "wall_s": 4.0}}


def test_server_saturated_when_all_users_were_waiting_on_replies():
    s = summarize(late_open_loop(4, 4), window_start_s=0.0, window_end_s=4.0, requested_rate_per_s=10.0,
                  due_slots=40, users=4, loadgen_processes=cpu(0.4))  # fmt: skip
    assert s["arrival"]["behind"] and s["arrival"]["limit"] == "server"
    assert s["warning_codes"] == ["server_saturated"]
    assert "the server is saturated: all 4 users were waiting on replies" in s["warnings"][0]


def test_generator_behind_when_its_cpu_was_the_limit():
    s = summarize(late_open_loop(4, 4), window_start_s=0.0, window_end_s=4.0, requested_rate_per_s=10.0,
                  due_slots=40, users=4, loadgen_processes=cpu(3.8))  # fmt: skip
    assert s["arrival"]["limit"] == "cpu" and s["warning_codes"] == ["generator_behind"]
    assert "the load generator could not keep up" in s["warnings"][0] and "95%" in s["warnings"][0]
    assert s["loadgen"]["cpu_ms_per_request"] == pytest.approx(3800 / 40)


def test_generator_behind_when_users_were_free_but_requests_left_late():
    s = summarize(late_open_loop(16, 4), window_start_s=0.0, window_end_s=4.0, requested_rate_per_s=10.0,
                  due_slots=40, users=16, loadgen_processes=cpu(0.4))  # fmt: skip
    assert s["arrival"]["limit"] == "users" and s["warning_codes"] == ["generator_behind"]
    assert "the load generator could not keep up" in s["warnings"][0]


def test_missed_slots_alone_mean_behind():
    records = [rec(t=i * 0.1, lag=0.001) for i in range(38)]
    s = summarize(records, window_start_s=0.0, window_end_s=4.0, requested_rate_per_s=10.0, due_slots=40)
    assert s["arrival"]["behind"] and s["arrival"]["missed_slots"] == 2


def test_peak_in_flight_does_not_count_a_user_twice_at_a_handover():
    a = rec(t=0.0, e2e=1.0)
    b = rec(t=1.0, e2e=1.0)  # sent the instant a ended
    assert peak_in_flight([a, b]) == 1
    assert peak_in_flight([a, rec(t=0.5, e2e=1.0)]) == 2


def test_closed_loop_generator_at_full_cpu_is_flagged():
    s = summarize([rec(t=i) for i in range(3)], window_start_s=0.0, window_end_s=5.0,
                  loadgen_processes={"w0": {"cpu_s": 4.8, "wall_s": 5.0}})  # fmt: skip
    assert s["warning_codes"] == ["generator_behind"] and "process w0" in s["warnings"][0]


# ---- where users look ------------------------------------------------------------------------------------


def test_console_table_shows_outcomes_throughput_and_percentiles():
    records = [rec(t=i, ttft=0.1 + 0.01 * i) for i in range(5)] + [rec("cut", t=5)]
    text = console_table(summarize(records, window_start_s=0.0, window_end_s=6.0))
    assert "Successful requests:" in text and "Cut by the end of the run:" in text
    for name in ("TTFT", "TPOT", "ITL", "E2E"):
        for stat in ("Mean", "P50", "P90", "P99"):
            assert f"{stat} {name} (ms):" in text
    assert "P50 TTFT (ms):" in text and "120.00" in text  # TTFTs 100..140 ms: the median is 120
    assert "Output token throughput (tok/s):" in text
    assert "WARNING:" in text  # the cut request's warning


def test_web_ui_figures():
    records = [rec(t=i * 0.1, ttft=0.1 + 0.001 * i) for i in range(100)] + [rec("error", t=1.0)]
    figures = live_figures(records, start_ts_s=0.0, now_s=20.0)
    assert figures["outcomes"]["success"] == 100 and figures["outcomes"]["error"] == 1
    assert figures["ttft_p50_s"] == pytest.approx(0.1495)
    assert figures["output_tokens_per_s"] == pytest.approx(1000 / 20.0)
    rows = {r["metric"]: r["value"] for r in table_rows(figures)}
    assert rows["TTFT p50 (ms)"] == "149.5" and rows["Failed requests"] == "1 (1.0 %)"


# ---- the reports: tokens binned by arrival, the cut outcome shown ------------------------------------------


def test_report_timeline_bins_tokens_by_arrival_and_counts_cut_requests(tmp_path):
    from reports.metrics import run_metrics, timeline
    from reports.runs import load_runs
    from runfolder.folder import write_run
    from tests.support.reports_factory import T0

    # One 8 s stream of 80 one-token chunks (TTFT 0.1 s, then 0.1 s apart) and one cut request.
    stream = rec(t=T0, ttft=0.1, gaps=(0.1,) * 79, tokens=80)
    cut = rec("cut", t=T0 + 1, e2e=8.0, outcome_detail="run_ended")
    summary = summarize([stream, cut], window_start_s=T0, window_end_s=T0 + 10)
    path = write_run(tmp_path / "run", [stream, cut], summary, {"label": "x", "load": {"users": 2}})
    run = load_runs([path])[0]
    line = timeline(run, 2.0)
    # by request end all 80 tokens would sit in the 8-10 s bin; by arrival they spread over the stream
    assert line["output_tokens_per_s"].tolist() == pytest.approx([9.5, 10.0, 10.0, 10.0, 0.5])
    assert line["cut"].sum() * 2.0 == pytest.approx(1.0)
    row = run_metrics(run)
    assert row["cuts"] == 1 and row["cut_rate"] == 0.5
    assert row["output_tokens_per_s"] == pytest.approx(summary["output_tokens_per_s"]) == pytest.approx(8.0)


# ---- runfolder.figures: the one definition behind summary.json and the reports ----------------------------


def test_figures_place_tokens_by_chunk_and_skip_gaps_without_a_first_chunk():
    from runfolder import figures

    # a stream (TTFT 0.1 s, two gaps) with 6 tokens; a JSON reply (no TTFT) whose stray gap is ignored
    times, tokens = figures.token_arrivals(
        np.array([6.0, 4.0]),
        np.array([10.0, 20.0]),
        np.array([0.1, np.nan]),
        np.array([11.0, 21.0]),
        np.array([2, 1]),
        np.array([0.2, 0.3, 9.0]),
    )
    order = np.argsort(times)
    assert times[order].tolist() == pytest.approx([10.1, 10.3, 10.6, 21.0])
    assert tokens[order].tolist() == pytest.approx([2.0, 2.0, 2.0, 4.0])
    assert figures.tokens_in_window(times, tokens, 10.2, 21.0) == pytest.approx(4.0)


def test_figures_goodput_passes_missing_values_and_rates_need_attempts():
    from runfolder import figures

    slo = figures.Slo(ttft_s=0.5, tpot_s=0.05)
    good = figures.good_mask(np.array([0.4, 0.6, 0.4]), np.array([np.nan, 0.01, 0.1]), np.zeros(3), slo)
    assert good.tolist() == [True, False, False]
    assert figures.rate(1, 0) is None and figures.per_s(5, 0.0) is None
    spread = figures.distribution(np.array([1.0, np.nan, 3.0]))
    assert spread["count"] == 2 and spread["p50"] == 2.0
