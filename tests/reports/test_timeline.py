"""The per-request timeline (reports/timeline.py): bar times, chunk marks, even sampling, the figure files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from reports import timeline
from reports.server_plots import write_server_metrics_plots
from reports.timeline import sample_rows, timeline_caption, timeline_data, write_timelines
from runfolder.frame import read_run_frame
from tests.support.reports_factory import T0, outcome_mix, record, write_synthetic_run


def known_run(tmp_path):
    """A streamed success that left 50 ms late, a rejection, a timeout: every bar time is known."""
    ok = replace(
        record("success", at_s=0.0, e2e_s=1.0, ttft_s=0.2),
        sent_ts_s=T0 + 0.05,
        schedule_lag_s=0.05,
        itl_s=[0.1, 0.1, 0.3],
    )
    records = [ok, record("rejected", at_s=0.5, e2e_s=0.01), record("timeout", at_s=1.0, e2e_s=2.0)]
    return read_run_frame(write_synthetic_run(tmp_path / "known", records, label="known"))


def test_bars_run_from_send_through_first_token_to_the_end(tmp_path):
    t = timeline_data(known_run(tmp_path))
    assert t.total == 3 and not t.sampled and list(t.ranks) == [0, 1, 2]
    assert np.allclose(t.scheduled_s, [0.0, 0.5, 1.0])
    assert np.allclose(t.sent_s, [0.05, 0.5, 1.0])  # schedule + its lag
    assert (
        t.first_s[0] == pytest.approx(0.2) and np.isnan(t.first_s[1:]).all()
    )  # TTFT counts from the schedule
    assert np.allclose(t.end_s, [1.0, 0.51, 3.0])
    assert list(t.outcome) == ["success", "rejected", "timeout"]
    # chunks after the first: first token + the running sum of the gaps
    assert np.allclose(t.token_s, [0.3, 0.4, 0.7]) and list(t.token_bar) == [0, 0, 0] and t.token_stride == 1


def test_chunk_marks_are_thinned_per_request(tmp_path):
    t = timeline_data(known_run(tmp_path), max_token_marks=1)
    assert t.token_stride == 3 and np.allclose(t.token_s, [0.7])  # every 3rd chunk of the request


def test_many_requests_are_sampled_evenly_and_keep_their_numbers(tmp_path):
    run = read_run_frame(write_synthetic_run(tmp_path / "big", outcome_mix(1000), label="big"))
    t = timeline_data(run, max_requests=400)
    assert t.sampled and t.rows.size == 400 and t.total == 1000
    assert t.ranks[0] == 0 and t.ranks[-1] == 999 and np.all(np.diff(t.ranks) >= 2)
    assert np.all(np.diff(t.scheduled_s) > 0)  # in send order
    assert "big: 400 of 1,000 requests, sampled evenly by send time" in timeline_caption([run], 400)
    assert list(sample_rows(5, 400)) == [0, 1, 2, 3, 4]


def test_the_figure_has_one_panel_per_run_and_splits_into_files(tmp_path, monkeypatch):
    runs = [
        known_run(tmp_path),
        read_run_frame(write_synthetic_run(tmp_path / "other", outcome_mix(6, rejected=2), label="other")),
    ]
    fig = timeline.timeline_figure(runs)
    assert len(fig.axes) == 2 and fig.axes[0].get_title(loc="left").startswith("known: 3 requests")
    written = write_timelines(runs, tmp_path / "plots")
    assert [p.name for p, _ in written] == ["timeline.png"] and "other: all 8 requests" in written[0][1]
    assert written[0][0].stat().st_size > 1000 and (tmp_path / "plots" / "timeline.svg").is_file()
    monkeypatch.setattr(timeline, "PANELS_PER_FIGURE", 1)
    split = write_timelines(runs, tmp_path / "split")
    assert [p.name for p, _ in split] == ["timeline.png", "timeline_2.png"]


def test_runs_without_server_metrics_get_no_server_figure(tmp_path):
    assert write_server_metrics_plots([known_run(tmp_path)], tmp_path / "plots") == []
