"""What the gate needs from each run folder, and whether a run is fit to be judged at all.

- `run_figures`: one run's gated figures. TTFT p95 counts every request that did not succeed (rejected,
  timed out, errored, cut) as slower than any threshold, so that turning slow requests into failures
  cannot improve it: past 5 % failures the p95 is infinite and every TTFT gate fails.
- `refusals`: the reasons a run cannot be evidence (cut requests, a load generator that fell behind,
  missing worker records, too few requests); the gate exits 2 with them instead of judging.
- `workload_shape` / `shape_differences`: what load a run offered (summary.json's `workload`, or the
  options metadata.json recorded for older run folders), so that runs of different shape are not compared.
- `saturation`: whether the server was at capacity for the offered load (the diagnosis in the verdict).

Keys added to summary.json by newer load tests (`cuts`, `cut_rate`, `warning_codes`, `workload`) are read
when present; older run folders lack them and fall back to what the records and metadata say.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from runfolder.frame import RunData
from runfolder.output_figures import WRONG_OUTPUT_KINDS
from runfolder.server_usage import read_server_usage

log = logging.getLogger(__name__)

# Warning codes (runfolder.summary) by which the gate refuses a run or diagnoses it.
GENERATOR_BEHIND = "generator_behind"
MISSING_WORKER_RECORDS = "missing_worker_records"
SERVER_SATURATED = "server_saturated"
CUT_REQUESTS = "cut_requests"
# The workload keys compared between runs (summary.json "workload"); any absent on one side is skipped.
SHAPE_KEYS = (
    "scenario",
    "model",
    "stream",
    "prompt_tokens_target",
    "max_tokens",
    "ignore_eos",
    "arrival",
    "rate_per_s",
    "users",
    "prompt_length_method",
    "check_outputs",  # --check-outputs: a few prompts reused (prefix caches hit); absent in a run means 0
)
# Open loop: completing fewer than this share of the offered requests per second means the server could
# not keep up with the offered load.
SATURATED_COMPLETION_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One run's gated figures. Rates are fractions of attempted requests (cuts included)."""

    path: str
    label: str
    requests: int
    successes: int
    cuts: int
    output_tokens_per_s: float | None
    ttft_p95_s: float  # over attempted requests, failures counted as infinitely slow: may be inf
    failed_share: float  # not successful: rejected, timed out, errored, cut
    started_ts_s: float
    # --check-outputs: wrong replies (not numerical divergence) per checked reply; None when not checked
    wrong_output_rate: float | None = None
    # The server's CPU-seconds per output token over the run (server_usage.json, written by the gate's
    # block runner from the OS); None when nobody measured it.
    server_cpu_s_per_output_token: float | None = None

    @property
    def cut_rate(self) -> float:
        return self.cuts / self.requests if self.requests else 0.0


def _codes(run: RunData) -> list[str]:
    codes = run.summary.get("warning_codes")
    return [str(c) for c in codes] if isinstance(codes, list) else []


def failure_inclusive_percentile(values: np.ndarray, failed: int, q: float) -> float:
    """The q-th percentile (linear interpolation) of `values` plus `failed` infinitely slow requests."""
    values = values[~np.isnan(values)]
    n = values.size + failed
    if n == 0:
        return math.inf
    position = (n - 1) * q / 100.0
    ordered = np.sort(values)
    low, high = math.floor(position), math.ceil(position)
    if high >= ordered.size:  # the interpolation reaches into the failures: beyond any threshold
        return math.inf
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def run_figures(run: RunData) -> RunFigures:
    rec = run.records
    outcome = rec["outcome"].astype(str)
    ok = outcome == "success"
    n = len(rec)
    cuts = int((outcome == "cut").sum())
    if not cuts and run.summary.get("cuts"):
        # Counted in summary.json but absent from records.csv: they were attempted and did not succeed.
        cuts = int(run.summary["cuts"])
        n += cuts
    duration = run.duration_s
    # Newer summaries count the tokens that arrived inside the window (smoother than whole requests).
    if run.summary.get("output_tokens_in_window") is not None and duration > 0:
        tokens_per_s: float | None = float(run.summary["output_tokens_in_window"]) / duration
    else:
        tokens = float(rec.loc[ok, "output_tokens"].fillna(0).sum())
        tokens_per_s = tokens / duration if duration > 0 else None
    ttft = rec.loc[ok, "ttft_s"].to_numpy(dtype=float, na_value=np.nan)
    return RunFigures(
        path=str(run.path),
        label=run.label,
        requests=n,
        successes=int(ok.sum()),
        cuts=cuts,
        output_tokens_per_s=tokens_per_s,
        ttft_p95_s=failure_inclusive_percentile(ttft, int(n - ok.sum()), 95),
        failed_share=float(1 - ok.sum() / n) if n else 1.0,
        started_ts_s=run.window_start_s,
        wrong_output_rate=wrong_output_rate(run),
        server_cpu_s_per_output_token=cpu_per_output_token(run),
    )


def cpu_per_output_token(run: RunData) -> float | None:
    """Server CPU-seconds over the run per output token: the server's own token count when it gave one
    (it covers exactly the CPU's span), else the tokens of every record (the run's requests all finish
    inside the span: the block runner lets in-flight requests end)."""
    usage = read_server_usage(run.path)
    if usage is None:
        return None
    tokens = usage.output_tokens
    if tokens is None:
        tokens = int(run.records["output_tokens"].fillna(0).sum())
    return usage.cpu_s / tokens if tokens > 0 else None


def ttft_values_s(run: RunData) -> np.ndarray:
    """Every attempted request's TTFT, a failed request as inf (beyond any threshold), for pooled
    percentiles across runs."""
    rec = run.records
    ok = rec["outcome"].astype(str) == "success"
    ttft = rec.loc[ok, "ttft_s"].to_numpy(dtype=float, na_value=np.nan)
    ttft = ttft[~np.isnan(ttft)]
    failed = int(len(rec) - ok.sum())
    return np.concatenate([ttft, np.full(failed, np.inf)])


def wrong_output_rate(run: RunData) -> float | None:
    """Replies under load wrong in a way numerical divergence does not explain, per checked reply
    (records.csv output_check; runfolder/output_figures.py); None when the run did not check outputs."""
    column = run.records["output_check"]
    verdicts = column[column.notna()].astype(str)
    verdicts = verdicts[verdicts != ""]
    if verdicts.empty:
        return None
    return float(verdicts.isin(WRONG_OUTPUT_KINDS).sum() / len(verdicts))


def refusals(
    run: RunData,
    figures: RunFigures,
    *,
    min_requests: int,
    max_cut_rate: float,
    refuse_generator_behind: bool,
    refuse_missing_worker_records: bool,
) -> list[str]:
    """Why this run cannot be judged (empty: it can)."""
    problems = []
    codes = _codes(run)
    if figures.requests < min_requests:
        problems.append(
            f"too few requests: {figures.requests} (evidence.min_requests {min_requests}); "
            "run longer or with more users"
        )
    if figures.cut_rate > max_cut_rate:
        problems.append(
            f"{100 * figures.cut_rate:.1f} % of requests were cut when the run ended ({figures.cuts} of "
            f"{figures.requests}; evidence.max_cut_rate {100 * max_cut_rate:g} %): give Locust a "
            "--stop-timeout of at least the request timeout"
        )
    arrival = _section(run.summary, "arrival")
    if refuse_generator_behind and (GENERATOR_BEHIND in codes or arrival.get("behind") is True):
        achieved, requested = arrival.get("achieved_rate_per_s"), arrival.get("requested_rate_per_s")
        rates = f" (achieved {achieved:.2f} of {requested:.2f} req/s)" if achieved and requested else ""
        problems.append(
            f"the load generator fell behind its schedule{rates}: the offered load was not the one asked for"
        )
    if refuse_missing_worker_records and MISSING_WORKER_RECORDS in codes:
        problems.append("records of some Locust workers are missing: the run's figures are incomplete")
    return problems


# Keys the two sources (summary.json `workload`, metadata.json options) state alike; the others (scenario
# as class or record name, model as given or as resolved) are compared only between shapes of one source.
SOURCE_NEUTRAL_KEYS = ("prompt_tokens_target", "max_tokens", "ignore_eos", "arrival", "rate_per_s", "users")


@dataclass(frozen=True, slots=True)
class Shape:
    values: dict[str, Any]
    source: str  # "workload" (summary.json) or "metadata" (older run folders)


def workload_shape(run: RunData) -> Shape:
    """The offered load's shape: summary.json's `workload`, else metadata.json's recorded options."""
    given = run.summary.get("workload")
    if isinstance(given, dict):
        values = {k: given[k] for k in SHAPE_KEYS if given.get(k) is not None}
        # Written only when used: a run without it checked no outputs, so its prompts were not reused.
        values["check_outputs"] = given.get("check_outputs") or 0
        return Shape(values, "workload")
    meta = run.metadata
    options, load = _section(meta, "options"), _section(meta, "load")
    scenarios = meta.get("scenarios")
    shape: dict[str, Any] = {
        "scenario": scenarios[0] if isinstance(scenarios, list) and len(scenarios) == 1 else scenarios,
        "model": meta.get("model"),
        "prompt_tokens_target": options.get("prompt_tokens"),
        "max_tokens": options.get("max_tokens"),
        "ignore_eos": options.get("ignore_eos"),
        "arrival": options.get("arrival") or load.get("arrival"),
        "rate_per_s": options.get("rate") if options.get("rate") is not None else load.get("rate_per_s"),
        "users": load.get("users"),
    }
    return Shape({k: v for k, v in shape.items() if v is not None}, "metadata")


def shape_differences(reference: Shape, other: Shape) -> list[str]:
    """'key: A vs B' for each key both shapes give and they disagree on."""
    keys = SHAPE_KEYS if reference.source == other.source else SOURCE_NEUTRAL_KEYS
    ref, oth = reference.values, other.values
    diffs = []
    for key in keys:
        if key in ref and key in oth and ref[key] != oth[key]:
            # An open loop's users only carry the rate: they may differ.
            if key == "users" and ref.get("arrival") in ("constant", "poisson"):
                continue
            diffs.append(f"{key}: {ref[key]!r} vs {oth[key]!r}")
    return diffs


@dataclass(frozen=True, slots=True)
class Saturation:
    saturated: bool
    reason: str = ""


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """A JSON object inside a summary or metadata document, {} when absent or not an object."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def saturation(run: RunData, figures: RunFigures) -> Saturation:
    """Was the server at capacity for the offered load? From the load test's own code, else the rates."""
    if SERVER_SATURATED in _codes(run):
        return Saturation(True, "the load test flagged the server as saturated (warning server_saturated)")
    arrival = _section(run.summary, "arrival")
    requested = arrival.get("requested_rate_per_s")
    duration = run.duration_s
    if requested and duration > 0:
        completed = figures.successes / duration
        if completed < SATURATED_COMPLETION_SHARE * requested:
            return Saturation(
                True,
                f"it completed {completed:.2f} req/s of the {requested:.2f} req/s offered "
                f"(below {100 * SATURATED_COMPLETION_SHARE:.0f} %)",
            )
    return Saturation(False)
