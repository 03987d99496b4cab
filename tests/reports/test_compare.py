"""`python -m reports.compare` on synthetic run folders: known records, known tables; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reports.compare import main
from reports.metrics import label_stats, runs_frame
from reports.runs import load_runs
from reports.tables import Tables
from tests.support.reports_factory import outcome_mix, record, write_synthetic_run


@pytest.fixture
def two_labels(tmp_path: Path) -> Path:
    """v1.1.1 twice (70 % and 80 % success) and v1.2.0 once (all successes, faster)."""
    root = tmp_path / "runs"
    write_synthetic_run(root / "a-old-1", outcome_mix(7, 1, 2, 0), label="v1.1.1", profile="v1.1.1")
    write_synthetic_run(root / "b-old-2", outcome_mix(8, 1, 1, 0), label="v1.1.1", profile="v1.1.1")
    write_synthetic_run(root / "c-new-1", outcome_mix(10, e2e_s=0.8), label="v1.2.0", profile="v1.2.0")
    return root


def test_known_records_give_known_tables(two_labels: Path) -> None:
    frame = runs_frame(load_runs([two_labels]))
    tables = Tables.build(frame, label_stats(frame))
    summary = tables.summary
    assert list(summary.index) == ["v1.1.1", "v1.2.0"]
    old, new = summary.loc["v1.1.1"], summary.loc["v1.2.0"]
    # 100 tokens per success over a 10 s window.
    assert old["repeats"] == 2 and old["output_tok_per_s"] == pytest.approx(75.0)
    assert (old["output_tok_per_s_min"], old["output_tok_per_s_max"]) == pytest.approx((70.0, 80.0))
    assert (old["success_pct"], old["rejected_pct"], old["timeout_pct"], old["error_pct"]) == pytest.approx(
        (75.0, 10.0, 15.0, 0.0)
    )
    assert new["output_tok_per_s"] == pytest.approx(100.0) and new["success_pct"] == pytest.approx(100.0)
    latency = tables.latency
    assert latency.loc["v1.2.0", "e2e_p50_ms"] == pytest.approx(800.0)
    assert latency.loc["v1.1.1", "ttft_p99_ms"] == pytest.approx(100.0)
    assert latency.loc["v1.1.1", "tpot_p50_ms"] == pytest.approx(900 / 99, abs=1e-3)  # 6 decimals on disk
    deltas = tables.deltas.loc["v1.2.0"]
    assert deltas["output_tokens_per_s_change_pct"] == pytest.approx(100 / 75 * 100 - 100)
    assert deltas["success_change_pp"] == pytest.approx(25.0)
    assert deltas["timeout_change_pp"] == pytest.approx(-15.0)
    assert deltas["e2e_p50_s_change_pct"] == pytest.approx(-20.0)


def test_goodput_from_command_line_slo(tmp_path: Path) -> None:
    records = [record(at_s=i, ttft_s=0.1 * (i + 1), e2e_s=1.0) for i in range(5)]  # TTFT 0.1 .. 0.5 s
    path = write_synthetic_run(tmp_path / "run", records, label="x")
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--slo-ttft-ms", "250"]) == 0
    latency = pd.read_csv(out / "latency.csv", index_col="label")
    assert latency.loc["x", "goodput_req_per_s"] == pytest.approx(2 / 10)
    assert latency.loc["x", "slo_attainment_pct"] == pytest.approx(40.0)


def test_compare_writes_markdown_csv_html_and_plots(two_labels: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main([str(two_labels), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| v1.1.1 | 2 | 75.0 (70.0-80.0) | 75.0 % | 10.0 % | 15.0 % | 0.0 % | 0.0 % | 0.75 |" in printed
    for name in (
        "report.md",
        "report.html",
        "runs.csv",
        "labels.csv",
        "summary.csv",
        "latency.csv",
        "deltas.csv",
    ):
        assert (out / name).is_file(), name
    for plot in ("throughput", "outcomes", "latency_cdf", "over_time"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
        assert (out / "plots" / f"{plot}.svg").read_text().lstrip().startswith("<?xml")
    assert not (out / "plots" / "sweep.png").exists()  # same load everywhere: no sweep
    html = (out / "report.html").read_text()
    # the four plots and the per-request timeline (no server metrics in synthetic runs), as charts
    assert html.count('class="plotly-graph-div"') == 5 and "<img" not in html.split("<h1>")[1]
    markdown = (out / "report.md").read_text()
    assert "## Change against v1.1.1" in markdown and "vLLM bench serve" in markdown
    runs_csv = pd.read_csv(out / "runs.csv")
    assert list(runs_csv["label"]) == ["v1.1.1", "v1.1.1", "v1.2.0"]


def test_sweep_plot_when_runs_differ_in_load(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for users in (1, 4, 16):
        for profile in ("v1.1.1", "v1.2.0"):
            write_synthetic_run(
                root / f"{profile}-u{users}",
                outcome_mix(10),
                label=f"{profile}-u{users}",
                users=users,
                profile=profile,
            )
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out)]) == 0
    assert (out / "plots" / "sweep.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert html.count('class="plotly-graph-div"') == 5  # the four plots and the timeline, as charts...
    assert html.count("<figure><img") == 1  # ...and the sweep plot, a PNG (no chart of its own)


def test_missing_folder_is_bad_input(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such run folder" in capsys.readouterr().err


def test_empty_folder_is_bad_input(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "empty folder" in capsys.readouterr().err


def test_zero_requests_is_bad_input(tmp_path: Path, capsys) -> None:
    path = write_synthetic_run(tmp_path / "idle", [], label="idle")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path / "records.csv") in err and "zero requests" in err


def test_unknown_schema_version_is_bad_input(tmp_path: Path, capsys) -> None:
    path = write_synthetic_run(tmp_path / "future", outcome_mix(3), label="x")
    summary = json.loads((path / "summary.json").read_text())
    (path / "summary.json").write_text(json.dumps({**summary, "schema_version": 99}))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path / "summary.json") in err and "schema_version 99" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty file"),
        ("scenario,scheduled_ts_s,end_ts_s,e2e_s,outcome\nchat_stream,1,2\n", "malformed"),
        ("scenario,scheduled_ts_s,end_ts_s,e2e_s,outcome\nchat_stream,soon,2,1,success\n", "malformed"),
        ("scenario,outcome\nchat_stream,success\n", "missing columns"),
        (
            "scenario,scheduled_ts_s,end_ts_s,e2e_s,outcome\nchat_stream,1,2,1,exploded\n",
            "unknown outcome",
        ),
    ],
)
def test_malformed_records_are_bad_input(tmp_path: Path, capsys, content: str, problem: str) -> None:
    path = write_synthetic_run(tmp_path / "bad", outcome_mix(3), label="x")
    (path / "records.csv").write_text(content)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path / "records.csv") in err and problem in err


def test_missing_summary_is_bad_input(tmp_path: Path, capsys) -> None:
    path = write_synthetic_run(tmp_path / "half", outcome_mix(3), label="x")
    (path / "summary.json").unlink()
    assert main([str(path)]) == 2
    assert f"{path / 'summary.json'}: missing" in capsys.readouterr().err


def test_timeline_accounts_for_every_request_and_token(tmp_path: Path) -> None:
    from reports.metrics import timeline

    path = write_synthetic_run(tmp_path / "run", outcome_mix(8, 1, 1, 0), label="x", duration_s=10.5)
    line = timeline(load_runs([path])[0], 2.0)
    widths = [2.0] * 5 + [0.5]  # the last bin is cut short by the end of the window
    assert sum(line["success"] * widths) == pytest.approx(8)
    assert sum((line["rejected"] + line["timeout"]) * widths) == pytest.approx(2)
    assert sum(line["output_tokens_per_s"] * widths) == pytest.approx(800)
