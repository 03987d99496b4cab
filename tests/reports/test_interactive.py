"""The interactive report: every figure of report.html as an offline Plotly chart, the sweep's
timeline and server metrics at its headline load, and, in headless Chromium, a hover read back from the page
(synthetic sweep folder with known figures; no server)."""

from __future__ import annotations

import json
import re

import pytest

from reports import run_views, sweep_report
from reports.compare import main as compare_main
from reports.intervals import Interval
from reports.sweep_folder import read_points
from reports.sweep_tables import interval_text
from runfolder import SERVER_METRICS_FILE, Sample, write_server_metrics
from tests.reports.test_sweep_report import sweep_folder
from tests.support.browser import needs_browser, open_page, require_browser
from tests.support.reports_factory import T0, outcome_mix, write_synthetic_run

# A script, stylesheet, image or frame fetched from a host ("//host" included): the page would need a network.
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)
IN_FLIGHT = (0, 3, 3, 2, 1, 0)  # the server's gauge at each scrape (known answers for the hover)


def chart_ids(page: str) -> list[str]:
    return re.findall(r'<div id="chart-([^"]+)" class="plotly-graph-div"', page)


def assert_offline(page: str) -> None:
    assert not REMOTE.search(page), REMOTE.search(page)
    assert page.count("* plotly.js v") == 1  # the library, inline, once for all the charts


def add_server_metrics(run_dir) -> None:
    """Scrapes of the in-flight gauge every 12 s from before the window to after it (no counters: nothing to
    reconcile)."""
    ts = [T0 - 1 + 12 * i for i in range(len(IN_FLIGHT))]
    samples = [Sample(t, "mlxserving_requests_in_flight", v, {}) for t, v in zip(ts, IN_FLIGHT, strict=True)]
    write_server_metrics(run_dir / SERVER_METRICS_FILE, samples)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["server_metrics"] = {"status": "on", "interval_s": 12.0, "first_ts_s": ts[0], "last_ts_s": ts[-1]}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def sweep_with_server_metrics(tmp_path):
    """The synthetic sweep; v1.2.0's run at the headline load (2 req/s) scraped the server."""
    out = sweep_folder(tmp_path)
    (point,) = [p for p in read_points(out) if p.profile == "v1.2.0" and p.rate_per_s == 2.0]
    add_server_metrics(out / point.folder)
    return out


def test_compare_report_is_offline_and_every_figure_is_a_chart(tmp_path):
    runs = tmp_path / "runs"
    for label in ("v1.1.1", "v1.2.0"):
        write_synthetic_run(runs / label, outcome_mix(8, rejected=2), label=label)
    add_server_metrics(runs / "v1.2.0")
    out = tmp_path / "report"
    assert compare_main([str(runs), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert_offline(page)
    assert chart_ids(page) == ["throughput", "outcomes", "latency_cdf", "over_time", "timeline",
                               "server_metrics_v1.2.0"]  # fmt: skip
    assert "<figure><img" not in page  # no static image left in the page...
    markdown = (out / "report.md").read_text()
    for stem in ("over_time", "timeline", "server_metrics_v1.2.0"):  # ...but report.md keeps the PNGs
        assert f"(plots/{stem}.png)" in markdown and (out / "plots" / f"{stem}.png").is_file()


def test_sweep_report_shows_every_profile_at_the_headline_load(tmp_path):
    out = sweep_folder(tmp_path)
    built = sweep_report.write(out)
    page, markdown = built.html_path.read_text(), built.markdown_path.read_text()
    assert_offline(page)
    assert chart_ids(page) == ["curves", "outcomes", "timeline"]
    for name in ("v1.1.1", "v1.2.0", "guide-promise"):  # one panel each, at the headline load (2 req/s)
        assert f"{name}: 120 requests, 2 req\\u002fs" in page and f"{name}: all 120 requests" in markdown
    assert "(plots/timeline.png)" in markdown and "At the headline load, 2.00 req/s offered." in markdown
    # this sweep folder predates server-metrics scraping: said, not failed
    assert markdown.count("absent: no server_metrics.csv") == 3
    assert "no server-metrics figure: none of these runs scraped the server's metrics" in markdown


def test_sweep_report_shows_the_server_metrics_of_runs_that_scraped_them(tmp_path):
    built = sweep_report.write(sweep_with_server_metrics(tmp_path))
    page, markdown = built.html_path.read_text(), built.markdown_path.read_text()
    assert chart_ids(page) == ["curves", "outcomes", "timeline", "server_metrics_v1.2.0"]
    assert "(plots/server_metrics_v1.2.0.png)" in markdown
    assert "| v1.2.0 | runs/sweep/v1.2.0/grid-2.000rps | 120 | 6 scrapes, every 12 s |" in markdown


def test_no_run_at_the_headline_load_is_said_not_drawn(tmp_path):
    (_, note, cells), figures, charts = run_views.headline_views([], {}, 1.5, tmp_path / "plots")
    assert note == "No run at the headline load (1.50 req/s)." and cells.empty and not figures and not charts


@pytest.mark.slow
@needs_browser  # CI (.ci/run) requires it
async def test_the_page_answers_a_hover_with_the_figures_in_headless_chromium(tmp_path):
    require_browser()
    out = sweep_with_server_metrics(tmp_path)
    built = sweep_report.write(out)
    point = next(
        p for p in json.loads((out / "sweep.json").read_text())["points"]
        if p["profile"] == "guide-promise" and p["rate_per_s"] == 2.0
    )  # fmt: skip
    served = Interval(**{k: point["served_per_s"][k] for k in ("estimate", "low", "high", "method", "n")})
    async with open_page(built.html_path.as_uri(), tmp_path, height=1800) as page:
        assert await page.charts_ready() == [
            "chart-curves", "chart-outcomes", "chart-timeline", "chart-server_metrics_v1.2.0"
        ]  # fmt: skip
        # Nothing but the file itself was fetched: plotly.js is in the page.
        assert [u for u in page.requested() if not u.startswith("file:")] == []
        # The sweep curve: guide-promise's third point (2 req/s, where it alone serves them all), the served
        # rate with its 95 % interval.
        curve = await page.hover("chart-curves", "guide-promise", 2)
        assert f"guide-promise at {point['offered_per_s']:.3f} req/s offered" in curve
        assert f"{interval_text(served, 'rps')} (95 %)" in curve
        # A request of the timeline: its outcome, TTFT and E2E (v1.1.1 at 2 req/s: 3.5 s each, past capacity).
        bar = await page.hover("chart-timeline", "success", 0)
        assert re.fullmatch(r"request \d+: success \(ok\)TTFT 0\.100 sE2E 3\.500 ssent .* s, ended .* s", bar)
        # The server's gauge at the scrape 23 s into the window: 3 requests in flight.
        gauge = await page.hover("chart-server_metrics_v1.2.0", "server: in flight", 2)
        assert gauge == "server: in flight: 3 at 23.0 s"
        for chart in ("chart-curves", "chart-timeline", "chart-server_metrics_v1.2.0"):
            shot = await page.element_screenshot(chart, tmp_path / f"{chart}.png")
            assert shot.stat().st_size > 20_000  # drawn, not blank
