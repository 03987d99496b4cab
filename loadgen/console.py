"""The table printed at the end of every run, laid out like vLLM's `bench serve` result block.

Pure formatting of a summary.json dict (no Locust import), so tests and other tools can call it.
"""

from __future__ import annotations

from typing import Any

from runfolder.records import OUTCOMES

WIDTH = 60
OUTCOME_TITLES = {
    "success": "Successful requests",
    "rejected": "Rejected requests",
    "timeout": "Timed-out requests",
    "error": "Failed requests",
    "cut": "Cut by the end of the run",
}
COUNT_KEYS = {"success": "successes", "rejected": "rejections", "timeout": "timeouts", "error": "errors"}
LATENCIES = (
    ("ttft_s", "Time to First Token", "TTFT"),
    ("tpot_s", "Time per Output Token (excl. 1st token)", "TPOT"),
    ("itl_s", "Inter-token Latency", "ITL"),
    ("e2e_s", "End-to-end Latency", "E2E"),
)


def _line(name: str, value: Any, decimals: int = 2) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.{decimals}f}"
    else:
        text = str(value)
    return f"{name + ':':<{WIDTH - 12}}{text:>12}"


def _title(text: str, fill: str) -> str:
    return f"{' ' + text + ' ':{fill}^{WIDTH}}"


def count_of(summary: dict[str, Any], outcome: str) -> int:
    return int(summary.get(COUNT_KEYS.get(outcome, "cuts"), 0) or 0)


def console_table(summary: dict[str, Any]) -> str:
    """Requests by outcome, throughput, and mean/p50/p90/p99 of TTFT, TPOT, ITL and E2E in ms."""
    lines = [_title("Serving Benchmark Result (mlx-serving-bench)", "=")]
    lines.append(_line("Attempted requests", summary.get("requests", 0)))
    for outcome in OUTCOMES:
        lines.append(_line(OUTCOME_TITLES[outcome], count_of(summary, outcome)))
    lines.append(_line("Measured window (s)", summary.get("duration_s")))
    lines.append(_line("Request throughput (req/s)", summary.get("requests_per_s")))
    lines.append(_line("Output token throughput (tok/s)", summary.get("output_tokens_per_s")))
    lines.append(_line("Total output tokens", summary.get("output_tokens")))
    arrival = summary.get("arrival")
    if arrival:
        lines.append(_line("Requested rate (req/s)", arrival.get("requested_rate_per_s")))
        lines.append(_line("Slots due / sent", f"{arrival.get('due_slots')} / {arrival.get('sent')}"))
        lag = summary.get("schedule_lag_s") or {}
        lines.append(_line("Schedule lag p99 (ms)", _ms(lag.get("p99"))))
    for key, name, short in LATENCIES:
        dist = summary.get(key) or {}
        lines.append(_title(name, "-"))
        for stat in ("mean", "p50", "p90", "p99"):
            label = f"{'Mean' if stat == 'mean' else stat.upper()} {short} (ms)"
            lines.append(_line(label, _ms(dist.get(stat))))
    for warning in summary.get("warnings", ()):
        lines.append(f"WARNING: {warning}")
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000 * value
