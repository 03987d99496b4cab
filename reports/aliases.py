"""What each figure is called here, in summary.json, and by vLLM's `bench serve` and other tools."""

from __future__ import annotations

import pandas as pd

# (this report, summary.json / records key, vLLM bench serve, other tools, definition)
ALIASES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "Output throughput (tok/s)",
        "output_tokens_per_s",
        "Output token throughput (tok/s), `output_throughput`",
        "GuideLLM output tokens/s; GenAI-Perf output token throughput",
        "output tokens of successful requests / measured window",
    ),
    (
        "Completed req/s",
        "requests_per_s",
        "Request throughput (req/s), `request_throughput`",
        "Locust RPS counts failures too; ours does not",
        "successful requests / measured window",
    ),
    (
        "Success / Rejected / Timed out / Errors / Cut at end",
        "success_rate, rejection_rate, timeout_rate, error_rate, cut_rate",
        "`completed` of `num_prompts`; failures are not split",
        "GuideLLM successful / errored / incomplete (= cut)",
        "shares of attempted requests; they sum to 100 %",
    ),
    (
        "TTFT",
        "ttft_s",
        "TTFT (ms), `mean_ttft_ms`, `median_ttft_ms`, `p99_ttft_ms`",
        "same name everywhere",
        "scheduled send to the first content chunk",
    ),
    (
        "TPOT",
        "tpot_s",
        "TPOT (ms) excl. 1st token, `mean_tpot_ms`, `p99_tpot_ms`",
        "ITL in GuideLLM, GenAI-Perf, AIPerf, llm-load-test",
        "(E2E - TTFT) / (output tokens - 1), one value per request",
    ),
    (
        "ITL (summary.json only)",
        "itl_s",
        "ITL (ms), `mean_itl_ms`, `p99_itl_ms`",
        "AIPerf: inter-chunk latency (ICL)",
        "every gap between content chunks, pooled over requests",
    ),
    (
        "E2E",
        "e2e_s",
        "E2EL (ms), `mean_e2el_ms`, `p99_e2el_ms`",
        "GuideLLM request latency",
        "scheduled send to the end of the stream",
    ),
    (
        "Goodput",
        "goodput.requests_per_s",
        "Request goodput (req/s), `request_goodput`",
        "DistServe goodput",
        "successful requests meeting every SLO / measured window",
    ),
)


def alias_frame() -> pd.DataFrame:
    return pd.DataFrame(
        ALIASES, columns=["This report", "summary.json key", "vLLM bench serve", "Other tools", "Definition"]
    )
