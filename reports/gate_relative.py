"""The gate's tests of a candidate against its baseline, label by label (reports/stats.py does the
statistics): output throughput on the runs' tok/s, TTFT p95 on the pooled requests, and, when the
throughput test cannot tell, the server's CPU-seconds per output token in its place, said as such."""

from __future__ import annotations

import math

import numpy as np

from reports import evidence as ev
from reports import stats
from reports.gate_checks import Check, Side
from reports.gate_config import GateConfig
from reports.metrics import METRICS

# relative gate key -> the figure it tests
RELATIVE_GATES = {"max_throughput_drop_pct": "output_tokens_per_s", "max_ttft_p95_rise_pct": "ttft_p95_s"}
CPU_FIGURE = "server_cpu_s_per_output_token"


def interleaved(base: Side, cand: Side) -> bool:
    """Equal counts, and in time order each consecutive two runs hold one of each side (A B A B or
    A B B A, as the gate's block runner makes them): run i of one side ran next to run i of the other."""
    if len(base.figures) != len(cand.figures) or len(base.figures) < 2:
        return False
    order = sorted(
        [(f.started_ts_s, "b") for f in base.figures] + [(f.started_ts_s, "c") for f in cand.figures]
    )
    sides = [s for _, s in order]
    return all({sides[i], sides[i + 1]} == {"b", "c"} for i in range(0, len(sides), 2))


def _prior(config: GateConfig, figure: str) -> stats.NoisePrior | None:
    noise = getattr(config.noise, figure, None)
    if noise is None or config.noise.prior_df <= 0:
        return None
    return stats.NoisePrior(cv=noise.cv, pair_cv=noise.pair_cv, df=config.noise.prior_df)


def more_text(more: int | None, paired: bool) -> str:
    unit = "pair(s) of runs" if paired else "run(s) per side"
    if more is None:
        return (
            f"more than {stats.MAX_EXTRA_REPEATS} more {unit} would be needed: "
            "the noise is too large for this threshold"
        )
    return f"about {more} more {unit} would decide it, were the estimate and the noise to hold"


def fmt_metric(metric: str, value: float) -> str:
    spec = METRICS[metric]
    return f"{value * spec.scale:.1f} {spec.unit}"


def _positive(values: list[float | None]) -> list[float] | None:
    """The values, when every one was measured and is positive (a ratio needs both)."""
    kept = [v for v in values if v is not None and v > 0]
    return kept if len(kept) == len(values) else None


def _geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _in_time_order(side: Side, paired: bool) -> list[ev.RunFigures]:
    return sorted(side.figures, key=lambda f: f.started_ts_s) if paired else list(side.figures)


def _failed_runs_check(cand: Side, gate: str, limit: float, vs: str, inf_b: int, inf_c: int) -> Check:
    """More than 5 % of some run's requests failed: its TTFT p95 is beyond any threshold."""
    if inf_c > inf_b:
        return Check(cand.label, gate, math.inf, limit, "%", "fail",
                     f"{vs}: {inf_c} candidate run(s) with more than 5 % failed requests "
                     f"(TTFT p95 beyond any threshold) against {inf_b} in the baseline")  # fmt: skip
    return Check(cand.label, gate, None, limit, "%", "inconclusive",
                 f"{vs}: the baseline has {inf_b} run(s) with more than 5 % failed requests; "
                 "TTFT cannot be compared (the absolute gates judge the candidate)")  # fmt: skip


def throughput_check(base: Side, cand: Side, config: GateConfig, paired: bool) -> Check:
    gate, limit = "max_throughput_drop_pct", config.relative.max_throughput_drop_pct
    assert limit is not None
    vs = f"vs {base.label}"
    b_figs, c_figs = _in_time_order(base, paired), _in_time_order(cand, paired)
    b = _positive([f.output_tokens_per_s for f in b_figs])
    c = _positive([f.output_tokens_per_s for f in c_figs])
    if b is None or c is None:
        return Check(cand.label, gate, None, limit, "%", "fail", f"not measured {vs}")
    alpha = 1 - config.relative.confidence
    result = stats.compare(
        b, c, higher_is_better=True, threshold_pct=limit, alpha=alpha,
        prior=_prior(config, "output_tokens_per_s"), paired=paired,
    )  # fmt: skip
    detail = (
        f"{vs}: {fmt_metric('output_tokens_per_s', _geomean(b))} -> "
        f"{fmt_metric('output_tokens_per_s', _geomean(c))}; {result.describe()}"
    )
    stand_in = None
    if config.relative.cpu_per_token_decides:
        stand_in = _cpu_stand_in(b_figs, c_figs, limit, alpha, paired)
    if result.verdict == "pass":
        return Check(cand.label, gate, result.worse_pct, limit, "%", "pass", detail)
    if result.verdict == "fail":
        cpu_threshold = 100 * _cpu_threshold(limit)
        if stand_in is not None and stand_in.high_pct < cpu_threshold / 2:
            # Wall-clock throughput down, CPU per token shown not even half the matching rise: either
            # the machine took time from the candidate's runs (a busy runner's bursts can hit several
            # blocks of one side), or the change makes the server wait rather than compute. Not a pass.
            detail += (
                f"; but the server's CPU per output token did not rise ({stand_in.describe()}; under half "
                f"of the {cpu_threshold:.1f} % that a {limit:g} % drop would take): machine contention or a "
                "change that makes the server wait rather than compute; run the gate again"
            )
            return Check(cand.label, gate, result.worse_pct, limit, "%", "inconclusive", detail, 0)
        return Check(cand.label, gate, result.worse_pct, limit, "%", "fail", detail)
    if stand_in is not None and stand_in.verdict != "inconclusive":
        detail += (
            "; wall-clock tok/s cannot tell, so the server's CPU per output token decides (lower noise): "
            f"{stand_in.describe()}, against a {100 * _cpu_threshold(limit):.1f} % rise "
            f"(= a {limit:g} % drop)"
        )
        return Check(cand.label, gate, result.worse_pct, limit, "%", stand_in.verdict, detail)
    detail += "; " + more_text(result.more_repeats, result.paired)
    if stand_in is not None:
        detail += f"; CPU per output token cannot tell either: {stand_in.describe()}"
    return Check(cand.label, gate, result.worse_pct, limit, "%", "inconclusive", detail, result.more_repeats)


def _cpu_threshold(drop_pct: float) -> float:
    """A drop of T % in tokens per second is a rise of T / (100 - T) in seconds per token."""
    return drop_pct / (100.0 - drop_pct)


def _cpu_stand_in(
    b_figs: list[ev.RunFigures], c_figs: list[ev.RunFigures], drop_pct: float, alpha: float, paired: bool
) -> stats.Comparison | None:
    b = _positive([f.server_cpu_s_per_output_token for f in b_figs])
    c = _positive([f.server_cpu_s_per_output_token for f in c_figs])
    if b is None or c is None:
        return None  # not measured (runs made without the block runner)
    return stats.compare(
        b, c, higher_is_better=False, threshold_pct=100 * _cpu_threshold(drop_pct), alpha=alpha,
        prior=None, paired=paired,
    )  # fmt: skip


def ttft_check(base: Side, cand: Side, config: GateConfig, paired: bool) -> Check:
    gate, limit = "max_ttft_p95_rise_pct", config.relative.max_ttft_p95_rise_pct
    assert limit is not None
    vs = f"vs {base.label}"
    b_figs, c_figs = _in_time_order(base, paired), _in_time_order(cand, paired)
    inf_b = sum(math.isinf(f.ttft_p95_s) for f in b_figs)
    inf_c = sum(math.isinf(f.ttft_p95_s) for f in c_figs)
    if inf_b or inf_c:
        return _failed_runs_check(cand, gate, limit, vs, inf_b, inf_c)
    by_path = {str(r.path): r for r in [*base.runs, *cand.runs]}
    b = [ev.ttft_values_s(by_path[f.path]) for f in b_figs]
    c = [ev.ttft_values_s(by_path[f.path]) for f in c_figs]
    if any(v.size == 0 for v in b + c):
        return Check(cand.label, gate, None, limit, "%", "fail", f"not measured {vs}")
    result = stats.compare_pooled_quantile(
        b, c, q=95, threshold_pct=limit, alpha=1 - config.relative.confidence, paired=paired
    )
    detail = (
        f"{vs}: {fmt_metric('ttft_p95_s', stats.pooled_quantile(b, 95))} -> "
        f"{fmt_metric('ttft_p95_s', stats.pooled_quantile(c, 95))} (p95 of every request); "
        f"{result.describe()}"
    )
    advisory = not config.relative.ttft_must_decide
    if result.verdict == "inconclusive":
        if math.isfinite(result.sigma_log):
            detail += "; " + more_text(result.more_repeats, result.paired)
        else:  # too few runs for the bootstrap: more runs make it testable, not decided
            detail += f"; {result.more_repeats} more pair(s) before it can be tested"
        if advisory:
            detail += " (advisory: relative.ttft_must_decide is false, so this does not hold the gate up)"
    return Check(
        cand.label, gate, result.worse_pct, limit, "%", result.verdict, detail, result.more_repeats, advisory
    )


def relative_checks(base: Side, cand: Side, config: GateConfig) -> list[Check]:
    paired = config.relative.pairing == "auto" and interleaved(base, cand)
    checks = []
    if config.relative.max_throughput_drop_pct is not None:
        checks.append(throughput_check(base, cand, config, paired))
    if config.relative.max_ttft_p95_rise_pct is not None:
        checks.append(ttft_check(base, cand, config, paired))
    return checks
