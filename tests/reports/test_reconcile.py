"""Client and server reconciled (reports/reconcile.py): synthetic run folders with known counters, our real
server (no difference, also when it refuses requests), and a FAKE server that miscounts (differences)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrate.processes import running_server
from reports import report
from reports.reconcile import Reconciliation, reconcile, reconcile_runs, section
from reports.server_series import ServerSeries
from runfolder import SERVER_METRICS_FILE, Sample, write_server_metrics
from runfolder.frame import read_run_frame
from tests.conftest import write_config
from tests.support.helpers import post, run_locust_with_stats
from tests.support.reports_factory import T0, outcome_mix, record, write_synthetic_run

REQUESTS, TOKENS, IN_FLIGHT = (
    "mlxserving_requests_total",
    "mlxserving_output_tokens_total",
    "mlxserving_requests_in_flight",
)
SCRAPES = (T0 - 1, T0 + 5, T0 + 12)  # before the first request, during, after the last


def counters(
    ts: float, success: float, rejected: float | None, tokens: float, held: float = 0
) -> list[Sample]:
    """One scrape of our server's counters (a labelled child exists once it was first incremented)."""
    out = [
        Sample(ts, IN_FLIGHT, held, {"model": "tiny-llama"}),
        Sample(ts, TOKENS, tokens, {"model": "tiny-llama"}),
    ]
    if success:
        out.append(Sample(ts, REQUESTS, success, {"endpoint": "chat", "outcome": "success"}))
    if rejected is not None:
        out.append(Sample(ts, REQUESTS, rejected, {"endpoint": "chat", "outcome": "rejected"}))
    return out


def scraped_run(
    path: Path, records, samples: list[Sample], outside: dict | None = None, final: bool = True
) -> Path:
    """A synthetic run folder with server_metrics.csv and summary.json's `server_metrics`."""
    write_synthetic_run(path, records, label=path.name, options={"max_tokens": 100})
    write_server_metrics(path / SERVER_METRICS_FILE, samples)
    summary = json.loads((path / "summary.json").read_text())
    summary["server_metrics"] = {
        "status": "on",
        "interval_s": 1.0,
        "first_ts_s": samples[0].ts_s,
        "last_ts_s": samples[-1].ts_s if final else None,
        "note": None if final else "the last scrape failed (timed out): no counts to reconcile",
        "client_outside_window": outside or {},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def mix() -> list:
    return outcome_mix(8, rejected=2)  # 8 successes of 100 tokens, 2 rejections


def shown_section(found: list[Reconciliation]) -> tuple[str, str, pd.DataFrame]:
    """The report's section, which these runs must have."""
    shown = section(found)
    assert shown is not None
    return shown


def test_counts_that_agree_leave_the_table_empty(tmp_path):
    outside = {"requests": 2, "successes": 2, "output_tokens": 200}  # warm-up requests, not in records.csv
    samples = [*counters(SCRAPES[0], 0, None, 0), *counters(SCRAPES[1], 5, 1, 500),
               *counters(SCRAPES[2], 10, 2, 1000)]  # fmt: skip
    run = read_run_frame(scraped_run(tmp_path / "truthful", mix(), samples, outside))
    found = reconcile(run)
    assert [r.figure for r in found.rows] == [
        "requests",
        "successes",
        "rejections",
        "timeouts",
        "output_tokens",
    ]
    assert {r.figure: (r.client, r.server) for r in found.rows}["output_tokens"] == (1000, 1000)
    assert found.differences == [] and found.warnings() == [] and found.note is None
    title, note, cells = shown_section([found])
    assert title == "Client and server counts"
    assert cells.empty and "Every figure agrees" in note and "queue timeouts" not in note  # not exported


def test_a_server_that_counts_refusals_as_successes_is_a_warning(tmp_path):
    samples = [*counters(SCRAPES[0], 0, None, 0), *counters(SCRAPES[2], 10, None, 800)]
    run = read_run_frame(scraped_run(tmp_path / "liar", mix(), samples))
    found = reconcile(run)
    assert {(r.figure, r.client, r.server) for r in found.differences} == {
        ("successes", 8, 10),
        ("rejections", 2, 0),
    }
    warnings = found.warnings()
    assert len(warnings) == 2
    assert any("rejections" in w and "client 2, server 0" in w and "counted otherwise" in w for w in warnings)
    *_, cells = shown_section([found])
    assert len(cells) == 2 and list(cells["Difference"]) == ["-2", "+2"]


def test_requests_cut_at_the_end_are_within_the_tolerance(tmp_path):
    records = [*mix(), record("success", at_s=4.0)]
    records[-1].outcome, records[-1].outcome_detail = "cut", "run_ended"  # the server finished it anyway
    samples = [*counters(SCRAPES[0], 0, None, 0), *counters(SCRAPES[2], 9, 2, 900)]
    found = reconcile(read_run_frame(scraped_run(tmp_path / "cut", records, samples)))
    tolerances = {r.figure: r.tolerance for r in found.rows}
    assert tolerances["successes"] == 1 and tolerances["output_tokens"] == 100  # one request x max_tokens
    assert {r.figure for r in found.differences} == {"successes", "output_tokens"}
    assert found.warnings() == []


def test_nothing_is_compared_without_a_last_scrape_or_without_metrics(tmp_path):
    samples = [*counters(SCRAPES[0], 0, None, 0), *counters(SCRAPES[1], 4, None, 400)]
    found = reconcile(read_run_frame(scraped_run(tmp_path / "nolast", mix(), samples, final=False)))
    assert found.rows == [] and "the last scrape failed" in (found.note or "")
    plain = read_run_frame(write_synthetic_run(tmp_path / "old", mix(), label="old"))
    assert reconcile_runs([plain]) == [] and section([]) is None


def test_counter_restarts_and_late_series_count_as_prometheus_does(tmp_path):
    samples = [
        Sample(T0, "c_total", 5.0), Sample(T0 + 1, "c_total", 8.0), Sample(T0 + 2, "c_total", 2.0),
        Sample(T0 + 3, "c_total", 4.0), Sample(T0 + 2, "c_total", 3.0, {"k": "late"}),
        Sample(T0 + 3.05, "c_total", 3.0, {"k": "late"}),
    ]  # fmt: skip
    run = read_run_frame(scraped_run(tmp_path / "restart", mix(), samples))
    series = ServerSeries.of(run)
    assert series is not None
    # 3 up, a restart to 2 (counts 2), 2 up; the late series from 0 to 3
    assert series.increase("c_total") == 10 and series.increase("c_total", {"k": "late"}) == 3
    starts, widths, per_s = series.rate("c_total", min_width_s=0.5)
    # the scrape 0.05 s after the one at +3 is merged into the interval before it
    assert np.allclose(starts - T0, [0, 1, 2]) and np.allclose(widths, [1, 1, 1.05])
    assert np.allclose(per_s, [3, 5, 2 / 1.05])


def test_the_report_shows_the_differences_and_warns(tmp_path):
    samples = [*counters(SCRAPES[0], 0, None, 0), *counters(SCRAPES[2], 10, None, 800)]
    runs = [read_run_frame(scraped_run(tmp_path / "liar", mix(), samples))]
    built = report.build(runs, tmp_path / "report")
    text = built.markdown_path.read_text()
    assert "## Client and server counts" in text and "| liar (liar) | rejections" in text
    assert any("client and server disagree on rejections" in w for w in built.warnings)
    assert (tmp_path / "report" / "plots" / "server_metrics_liar.png").stat().st_size > 1000
    assert (tmp_path / "report" / "plots" / "timeline.png").stat().st_size > 1000


# ---- real runs ---------------------------------------------------------------------------------------


def locust_run(url: str, run_dir: Path, *args: str) -> Path:
    proc = run_locust_with_stats(url, run_dir, "--stop-timeout", "10", "--exit-code-on-error", "0", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_our_server_agrees_with_the_client(server_url, tmp_path):
    run_dir = locust_run(
        server_url, tmp_path / "ours", "-u", "3", "-r", "3", "-t", "3s", "--max-tokens", "16",
        "--ignore-eos", "--warmup-s", "1", "--server-metrics-interval-s", "0.5",
    )  # fmt: skip
    run = read_run_frame(run_dir)
    found = reconcile(run)
    assert {r.figure for r in found.rows} >= {"requests", "successes", "output_tokens"}
    assert found.differences == [], found.rows
    built = report.build([run], tmp_path / "report")
    assert not any("disagree" in w for w in built.warnings)
    assert "Every figure agrees" in built.markdown_path.read_text()
    assert {p.name for p, _ in built.plots} >= {"timeline.png", "server_metrics_run.png"}


@pytest.mark.slow
def test_our_server_counts_its_refusals_as_the_client_does(tmp_path):
    # One sequence at a time and no waiting room: most requests of 3 users are refused at once (429).
    config = write_config(tmp_path, engine={"max_batch_size": 1}, limits={"max_waiting_requests": 0})
    with running_server(config) as url:
        run_dir = locust_run(
            url, tmp_path / "refusing", "-u", "3", "-r", "3", "-t", "3s", "--max-tokens", "16",
            "--think-time-s", "0.05",
        )  # fmt: skip
    found = reconcile(read_run_frame(run_dir))
    rejections = {r.figure: r for r in found.rows}["rejections"]
    assert rejections.client > 0 and found.differences == [], found.rows


@pytest.mark.slow
def test_reconciliation_is_not_empty_against_a_fake_server_that_miscounts(fake_url, tmp_path):
    """FAKE: /fake/lying_metrics counts every request it received as a success."""
    post(fake_url + "/fake/reset")
    run_dir = locust_run(
        fake_url, tmp_path / "fake", "-u", "1", "-t", "3s", "--model", "mixed", "--request-timeout-s", "0.4",
        "--max-tokens", "4", "--server-metrics", fake_url + "/fake/lying_metrics",
    )  # fmt: skip
    found = reconcile(read_run_frame(run_dir))
    assert {r.figure for r in found.differences} >= {"successes", "rejections"}
    assert any("rejections" in w for w in found.warnings())
