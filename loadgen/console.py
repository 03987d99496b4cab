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
    lines += workload_lines(summary.get("workloads") or {})
    for warning in summary.get("warnings", ()):
        lines.append(f"WARNING: {warning}")
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def workload_lines(w: dict[str, Any]) -> list[str]:
    """Cached prompt tokens; TTFT p50 by turn and with/without a shared prefix, when the run had them."""
    lines = []
    cached = w.get("cached_tokens") or {}
    lines.append(_line("Cached prompt tokens (server usage)", cached.get("cached_tokens")))
    by_turn = w.get("ttft_s_by_turn") or {}
    if by_turn:
        lines.append(_title(f"TTFT by turn ({w.get('conversations')} conversations)", "-"))
        for turn, dist in by_turn.items():
            lines.append(_line(f"Turn {turn}: P50 TTFT (ms), n={dist.get('count')}", _ms(dist.get("p50"))))
    by_prefix = w.get("ttft_s_by_shared_prefix") or {}
    if by_prefix:
        lines.append(_title("TTFT by shared prefix", "-"))
        for key, dist in by_prefix.items():
            lines.append(
                _line(
                    f"{key.capitalize()} prefix: P50 TTFT (ms), n={dist.get('count')}", _ms(dist.get("p50"))
                )
            )
    return lines


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000 * value
