"""LLM figures in Locust's web UI: a tab with live TTFT, tok/s and the outcome split, and a JSON route.

Uses Locust's documented extension points (examples/extend_web_ui.py): `extended_tabs` and
`extended_tables` in the web UI's template arguments, `extended_stats` added to the `/stats/requests`
document the UI polls, and a Flask route on `environment.web_ui.app`. Open the tab directly with
`http://HOST:8089/?tab=llm`; `GET /llm/stats` gives the same figures as JSON.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from loadgen.console import OUTCOME_TITLES
from runfolder.records import OUTCOMES, RequestRecord
from runfolder.summary import tokens_in_window

if TYPE_CHECKING:  # Flask and the web UI are loaded only when the web UI runs
    from flask import Response
    from locust.web import WebUI

    from loadgen.runstate import RunState

log = logging.getLogger(__name__)

TAB_KEY = "llm"
RECENT_S = 10.0  # "live" throughput: tokens that arrived in the last this many seconds


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def live_figures(records: list[RequestRecord], start_ts_s: float, now_s: float) -> dict[str, Any]:
    """Figures over the records the master holds now (workers ship theirs every few seconds)."""
    ok = [r for r in records if r.outcome == "success"]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    elapsed = max(now_s - start_ts_s, 1e-9)
    recent = min(RECENT_S, elapsed)
    return {
        "requests": len(records),
        "outcomes": {o: sum(1 for r in records if r.outcome == o) for o in OUTCOMES},
        "ttft_p50_s": _percentile(ttft, 50),
        "ttft_p99_s": _percentile(ttft, 99),
        "output_tokens_per_s": tokens_in_window(records, start_ts_s, now_s) / elapsed if records else 0.0,
        "recent_output_tokens_per_s": tokens_in_window(records, now_s - recent, now_s) / recent,
    }


def table_rows(figures: dict[str, Any]) -> list[dict[str, str]]:
    """The tab's rows: one figure each, formatted for people."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1000 * value:.1f}"

    n = figures["requests"]
    rows = [
        {"metric": "TTFT p50 (ms)", "value": ms(figures["ttft_p50_s"])},
        {"metric": "TTFT p99 (ms)", "value": ms(figures["ttft_p99_s"])},
        {"metric": "Output tok/s (since start)", "value": f"{figures['output_tokens_per_s']:.1f}"},
        {
            "metric": f"Output tok/s (last {RECENT_S:g} s)",
            "value": f"{figures['recent_output_tokens_per_s']:.1f}",
        },
        {"metric": "Requests (finished)", "value": str(n)},
    ]
    for outcome in OUTCOMES:
        count = figures["outcomes"][outcome]
        share = f"{100 * count / n:.1f} %" if n else "-"
        rows.append({"metric": OUTCOME_TITLES[outcome], "value": f"{count} ({share})"})
    return rows


def install(web_ui: WebUI, state: RunState) -> None:
    from flask import Flask, jsonify, request  # Locust's web UI is Flask; imported only when it runs

    app = web_ui.app
    if not isinstance(app, Flask):
        log.warning("the web UI has no Flask app: no LLM metrics tab")
        return
    web_ui.template_args["extended_tabs"] = [{"title": "LLM metrics", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {
            "key": TAB_KEY,
            "structure": [{"key": "metric", "title": "Metric"}, {"key": "value", "title": "Value"}],
        }
    ]

    def figures() -> dict[str, Any]:
        if not state.start_ts_s:
            return live_figures([], 0.0, 1.0)
        return live_figures(state.records, state.start_ts_s, time.time())

    @app.after_request
    def add_llm_stats(response: Response) -> Response:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        doc = response.get_json(silent=True)
        if isinstance(doc, dict):
            doc["extended_stats"] = [{"key": TAB_KEY, "data": table_rows(figures())}]
            response.set_data(json.dumps(doc))
        return response

    @app.route("/llm/stats")
    def llm_stats() -> Response:
        return jsonify(figures())

    log.debug("LLM metrics tab installed in the web UI")
