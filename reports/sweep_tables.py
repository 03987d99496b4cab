"""The sweep's tables, every figure with its 95 % interval: the curve (every point), the headline (the
guide's table at the located load), the knees, the failure-mode onsets and the probe."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

from reports import markdown as md
from reports.intervals import Interval
from reports.knee import Knee
from reports.point_figures import PointFigures
from reports.sweep_folder import GuideMix, ProbedProfile

log = logging.getLogger(__name__)

# (row title, PointFigures figure, kind)
HEADLINE_ROWS = (
    ("Offered (req/s, exact)", "offered_per_s", "rps"),
    ("Served (successful req/s)", "served_per_s", "rps"),
    ("Throughput (output tok/s)", "output_tokens_per_s", "tok"),
    ("Success", "success_rate", "pct"),
    ("Rejections", "rejection_rate", "pct"),
    ("Timeouts (the server's)", "timeout_rate", "pct"),
    ("Client deadline (gave up)", "deadline_rate", "pct"),
    ("Errors (the guide has no such row)", "error_rate", "pct"),
    ("Cut at the end", "cut_rate", "pct"),
    ("Goodput (req/s within the SLO)", "goodput_per_s", "rps"),
    ("Within the SLO", "slo_attainment", "pct"),
    ("TTFT p50", "ttft_p50_s", "ms"),
    ("TTFT p99", "ttft_p99_s", "ms"),
    ("E2E p50", "e2e_p50_s", "s"),
    ("E2E p99", "e2e_p99_s", "s"),
)
FAILURES = (
    ("rejected", "rejections"),
    ("timeout", "timeouts (server)"),
    ("deadline", "client deadline"),
    ("cut", "cut at the end"),
    ("error", "errors"),
)
ONSET_SHARE = 0.02  # a failure mode has started where its share's interval lies wholly above 2 %


def value_text(value: float | None, kind: str) -> str:
    if value is None or value != value:
        return "—"
    if kind == "pct":
        return md.fmt(100 * value, 0, " %")
    if kind == "ms":
        return md.fmt(1000 * value, 0, " ms")
    if kind == "s":
        return md.fmt(value, 2, " s")
    return md.fmt(value, 0 if kind == "tok" else 2)


def interval_text(iv: Interval | float | None, kind: str) -> str:
    """`71 % [62-79]`: the estimate and its 95 % interval, in the same unit."""
    if not isinstance(iv, Interval):
        return value_text(iv, kind)
    if iv.low != iv.low or iv.high != iv.high:
        return value_text(iv.estimate, kind)
    unit = {"pct": " %", "ms": " ms", "s": " s"}.get(kind, "")
    bounds = [value_text(v, kind).removesuffix(unit) for v in (iv.low, iv.high)]
    return f"{value_text(iv.estimate, kind)} [{bounds[0]}-{bounds[1]}]"


def steady_text(f: PointFigures) -> str:
    if not f.settled:
        return f"not settled ({f.window_s:.0f} s of {f.run_s:.0f} s kept)"
    return f"settled after {f.run_s - f.window_s:.0f} s; {f.window_s:.0f} s measured"


def guide_claim(guide: GuideMix | None, figure: str) -> str:
    if guide is None:
        return "—"
    if figure == "output_tokens_per_s":
        return guide.output_tokens_per_s_text or value_text(guide.output_tokens_per_s, "tok")
    if figure in ("success_rate", "rejection_rate", "timeout_rate"):
        return value_text(getattr(guide, figure), "pct")
    return "—"


def headline_table(at: dict[str, PointFigures], guides: dict[str, GuideMix]) -> pd.DataFrame:
    table = pd.DataFrame({"": [title for title, _, _ in HEADLINE_ROWS] + ["Steady state", "Requests"]})
    for name, f in at.items():
        cells = [interval_text(f.figure(figure), kind) for _, figure, kind in HEADLINE_ROWS]
        table[f"{name} measured"] = [*cells, steady_text(f), str(f.requests)]
        if name in guides:
            claims = [guide_claim(guides[name], figure) for _, figure, _ in HEADLINE_ROWS]
            table[f"{name} guide"] = [*claims, "—", "—"]
    return table


def curve_frame(
    points: dict[str, dict[float, PointFigures]], purposes: Mapping[tuple[str, float], str]
) -> pd.DataFrame:
    rows = []
    for name, by_rate in points.items():
        for rate, f in sorted(by_rate.items()):
            rows.append(
                {
                    "profile": name,
                    "offered (req/s)": md.fmt(f.offered_per_s, 3),
                    "why": purposes.get((name, rate), "grid"),
                    "served (req/s)": interval_text(f.served_per_s, "rps"),
                    "goodput (req/s)": interval_text(f.goodput_per_s, "rps"),
                    "success": interval_text(f.shares["success"], "pct"),
                    "rejected": interval_text(f.shares["rejected"], "pct"),
                    "timed out": interval_text(f.shares["timeout"], "pct"),
                    "deadline": interval_text(f.shares["deadline"], "pct"),
                    "cut": interval_text(f.shares["cut"], "pct"),
                    "errors": interval_text(f.shares["error"], "pct"),
                    "TTFT p50": interval_text(f.ttft_p50_s, "ms"),
                    "E2E p99": interval_text(f.e2e_p99_s, "s"),
                    "requests": str(f.requests),
                    "steady": steady_text(f),
                }
            )
    return pd.DataFrame(rows)


def capacity_text(rate: float, cap: ProbedProfile | None) -> str:
    """`1.43x [1.38-1.49]`: a load in multiples of the profile's probed capacity, with its interval."""
    if cap is None or not cap.capacity_rps:
        return "—"
    text = f"{rate / cap.capacity_rps:.2f}x"
    if cap.capacity_low_rps and cap.capacity_high_rps:
        text += f" [{rate / cap.capacity_high_rps:.2f}-{rate / cap.capacity_low_rps:.2f}]"
    return text


def onsets(by_rate: dict[float, PointFigures]) -> dict[str, float | None]:
    """Per failure mode, the lowest offered load where its share lies wholly above ONSET_SHARE."""
    out: dict[str, float | None] = {}
    for outcome, _ in FAILURES:
        hits = [f.offered_per_s for _, f in sorted(by_rate.items()) if f.shares[outcome].low > ONSET_SHARE]
        out[outcome] = hits[0] if hits else None
    return out


def onset_frame(
    points: dict[str, dict[float, PointFigures]], probe: dict[str, ProbedProfile]
) -> pd.DataFrame:
    rows = []
    for name, by_rate in points.items():
        starts = onsets(by_rate)
        row = {"profile": name}
        for outcome, title in FAILURES:
            rate = starts[outcome]
            row[title] = (
                "none in the sweep"
                if rate is None
                else f"{rate:.2f} req/s ({capacity_text(rate, probe.get(name))})"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def knee_frame(knees: dict[str, Knee], probe: dict[str, ProbedProfile]) -> pd.DataFrame:
    rows = []
    for name, k in knees.items():
        cap = probe.get(name)
        rows.append(
            {
                "profile": name,
                "verdict": k.verdict,
                "holds up to (req/s)": md.fmt(k.holds_up_to_rps, 2),
                "breaks from (req/s)": md.fmt(k.breaks_from_rps, 2),
                "breaks from / capacity": capacity_text(k.breaks_from_rps, cap) if k.breaks_from_rps else "—",
                "indeterminate at": ", ".join(f"{r:.2f}" for r in k.indeterminate_rps) or "—",
                "why": k.reason or "—",
            }
        )
    return pd.DataFrame(rows)


def probe_frame(probe: list[ProbedProfile]) -> pd.DataFrame:
    rows = []
    for p in probe:
        capacity = interval_text(
            Interval(
                p.capacity_rps, p.capacity_low_rps or float("nan"), p.capacity_high_rps or float("nan"), "", 0
            ),
            "rps",
        )
        rows.append(
            {
                "profile": p.name,
                "1 stream: TTFT p50": value_text(p.single_ttft_s, "ms"),
                "1 stream: E2E p50": value_text(p.single_e2e_s, "s"),
                "capacity (req/s, 95 %)": capacity,
                "capacity (tok/s)": md.fmt(p.capacity_output_tokens_per_s, 0),
                "at concurrency": str(p.saturated_at_concurrency or "—"),
                "steps (concurrency: tok/s)": ", ".join(
                    f"{s['concurrency']}: {s['output_tokens_per_s']:.0f}" for s in p.steps
                ),
            }
        )
    return pd.DataFrame(rows)
