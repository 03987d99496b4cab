"""The sweep's report, from the sweep folder alone (reports.sweep_folder): each point's figures with
intervals over its steady window, the knees with verdicts, the located guide mix, the failure-mode onsets,
the headline, `sweep.json` / `curve.csv`, the figures, report.md and report.html."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from reports import curves, html, interactive_sweep, reconcile, report, run_views
from reports import markdown as md
from reports.errors import BadInput
from reports.guide_match import guide_shares, mix_distance
from reports.knee import CurvePoint, Knee, find_knee
from reports.point_figures import PointFigures, point_figures
from reports.runs import load_runs
from reports.sweep_folder import PointRun, ProbedProfile, SweepPlan, read_points, read_probe
from reports.sweep_tables import (
    capacity_text,
    curve_frame,
    headline_table,
    interval_text,
    knee_frame,
    onset_frame,
    probe_frame,
)

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
COMPARED = (  # figures the headline sentence compares between profiles, with their wording
    ("served_per_s", "served", "rps"),
    ("goodput_per_s", "goodput", "rps"),
    ("success_rate", "success", "pct"),
    ("ttft_p50_s", "TTFT p50", "ms"),
)


def figures_of(out: Path, point: PointRun, plan: SweepPlan) -> PointFigures:
    (run,) = load_runs([out / point.folder])
    return point_figures(run, plan.slo, plan.confidence)


def progress_text(f: PointFigures, target_half_width: float) -> str:
    success = f.shares["success"]
    reached = "reached" if success.half_width <= target_half_width else "not reached"
    return (
        f"offered {f.offered_per_s:.3f} req/s, success {interval_text(success, 'pct')} (half-width "
        f"{100 * success.half_width:.0f} pts, target {100 * target_half_width:.0f}: {reached}), served "
        f"{interval_text(f.served_per_s, 'rps')} req/s, {'settled' if f.settled else 'NOT settled'}"
    )


def curve_point(rate: float, f: PointFigures) -> CurvePoint:
    return CurvePoint(f.offered_per_s, f.success_verdict, f.slo_verdict)


def _differences(at: dict[str, PointFigures]) -> list[str]:
    """Per figure, the pairs whose intervals separate ('A above B'); the rest are not shown to differ."""
    names = list(at)
    out = []
    for figure, word, kind in COMPARED:
        apart, together = [], []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ia, ib = at[a].figure(figure), at[b].figure(figure)
                if ia.separates(ib):
                    high, low = (a, b) if ia.estimate > ib.estimate else (b, a)
                    apart.append(
                        f"{high} {interval_text(at[high].figure(figure), kind)} above {low} "
                        f"{interval_text(at[low].figure(figure), kind)}"
                    )
                else:
                    together.append(f"{a} / {b}")
        text = f"{word}: " + ("; ".join(apart) if apart else "no pair differs")
        if apart and together:
            text += f" (not shown to differ: {', '.join(together)})"
        out.append(text)
    return out


def headline_load(
    plan: SweepPlan, points: dict[str, dict[float, PointFigures]], located: float | None
) -> float:
    """The located guide load when every profile ran there, else the shared rate nearest the comparison."""
    shared = set.intersection(*(set(p) for p in points.values())) if points else set()
    if located is not None and located in shared:
        return located
    return min(shared or {plan.comparison_rate}, key=lambda r: abs(r - plan.comparison_rate))


def write(out: Path) -> report.Report:
    try:
        plan = SweepPlan.read(out)
        probe = {p.name: p for p in read_probe(out)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{out}: not a readable sweep folder ({exc})") from None
    runs = [p for p in read_points(out) if (out / p.folder / "summary.json").is_file()]
    purposes = {(p.profile, p.rate_per_s): p.purpose for p in runs}
    folders = {(p.profile, p.rate_per_s): p.folder for p in runs}  # the last run at a load, as `points`
    data = {
        (p.profile, p.rate_per_s): run
        for p, run in zip(runs, load_runs([out / p.folder for p in runs]), strict=True)
    }
    points: dict[str, dict[float, PointFigures]] = {name: {} for name in plan.profiles}
    warnings = []
    for p in runs:
        try:
            points[p.profile][p.rate_per_s] = point_figures(
                data[(p.profile, p.rate_per_s)], plan.slo, plan.confidence
            )
        except (ValueError, KeyError) as exc:
            warnings.append(f"{p.folder}: no figures ({exc})")
    knees = {
        name: find_knee([curve_point(r, f) for r, f in pts.items()], plan.follow_share, plan.slo_attainment)
        for name, pts in points.items()
    }
    located, distance = locate_guide(plan, points)
    rate = headline_load(plan, points, located)
    at = {name: pts[rate] for name, pts in points.items() if rate in pts}
    sentence = headline_sentence(plan, probe, at, rate, located, distance, knees)
    unsettled = [
        f"{n} at {f.offered_per_s:.2f}" for n, pts in points.items() for f in pts.values() if not f.settled
    ]
    if unsettled:
        warnings.append(
            f"{len(unsettled)} point(s) did not reach steady state (the time in system still trending, or "
            f"arrivals outpacing departures; their shares depend on the run's length): {', '.join(unsettled)}"
        )
    wide = [
        f"{n} at {f.offered_per_s:.2f} (+-{100 * f.shares['success'].half_width:.0f})"
        for n, pts in points.items()
        for f in pts.values()
        if f.shares["success"].half_width > plan.target_half_width
    ]
    if wide:
        warnings.append(
            f"{len(wide)} point(s) did not reach the target width of the success share's interval "
            f"(+-{100 * plan.target_half_width:.0f} points) within the budget: {', '.join(wide)}; "
            "--budget-min lengthens every run"
        )
    behind = [n for n, pts in points.items() for f in pts.values() if f.generator_behind]
    if behind:
        warnings.append(f"the load generator fell behind in {len(behind)} run(s)")
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    table = headline_table(at, {n: g for n, g in plan.guide.items() if n in at})
    curve = curve_frame(points, purposes)
    curve.to_csv(out / "curve.csv", index=False)
    write_json(out, plan, points, knees, rate, located, distance, sentence)
    figures = curves.write_curves(points, knees, plan, probe, folder / "plots")
    charts = interactive_sweep.charts(points, knees, plan, probe, folder / "plots")
    at_runs = [data[(name, rate)] for name in at]
    views, more, more_charts = run_views.headline_views(
        at_runs, {name: folders[(name, rate)] for name in at}, rate, folder / "plots"
    )
    figures, charts = figures + more, charts | more_charts
    found = reconcile.reconcile_runs(at_runs)  # client and server counts of the headline runs
    counts = [section] if (section := reconcile.section(found)) else []
    warnings += [w for r in found for w in r.warnings()]
    sections = [
        (
            "Headline: "
            + (
                "the guide's table, measured at the load that matches it"
                if located
                else "the comparison point"
            ),
            sentence,
            table,
        ),
        (
            "Knees (with confidence; bisected between holding and breaking loads)",
            "",
            knee_frame(knees, probe),
        ),
        (
            "Where each failure mode starts (share's interval wholly above 2 %)",
            "",
            onset_frame(points, probe),
        ),
        (
            "Capacity probe (closed loop, concurrency doubling to the plateau)",
            "",
            probe_frame(list(probe.values())),
        ),
        ("Every sweep point (95 % intervals over its steady window)", "", curve),
        views,
        *counts,
    ]
    intro = intro_lines(plan)
    title = f"Sweep '{plan.campaign}': {' vs '.join(plan.profiles)}"
    if plan.external:
        title = ", ".join(f"{n} ({t['url']})" for n, t in plan.external.items()) + " across offered load"
    built = report.Report(folder, None, plots=figures, warnings=warnings, charts=charts)
    built.markdown_path.write_text(
        report.to_markdown(title, intro, sections, figures, warnings, 1), encoding="utf-8"
    )
    page = html.render(title, intro, sections, figures, warnings, 1, charts)
    built.html_path.write_text(page, encoding="utf-8")
    (out / "headline.md").write_text("\n".join([md.table(table), "", sentence, ""]), encoding="utf-8")
    return built


def locate_guide(
    plan: SweepPlan, points: dict[str, dict[float, PointFigures]]
) -> tuple[float | None, float | None]:
    """The guide profile's measured load whose outcome mix is closest to the guide's, and the distance."""
    name = plan.guide_profile
    if name is None or name not in plan.guide or not points.get(name):
        return None, None
    # Only loads every profile ran at can head the table (the guide runs end with the others at the load
    # the search found); a point that did not settle is flagged in the table, not skipped.
    shared = set.intersection(*(set(p) for p in points.values()))
    distances = {
        rate: mix_distance({k: iv.estimate for k, iv in f.shares.items()}, plan.guide[name])
        for rate, f in points[name].items()
        if rate in shared
    }
    scored = {r: d for r, d in distances.items() if d is not None}
    if not scored:
        return None, None
    best = min(scored, key=lambda rate: scored[rate])
    return best, scored[best]


def headline_sentence(
    plan: SweepPlan,
    probe: dict[str, ProbedProfile],
    at: dict[str, PointFigures],
    rate: float,
    located: float | None,
    distance: float | None,
    knees: dict[str, Knee],
) -> str:
    name = plan.guide_profile
    parts = []
    if located is not None and distance is not None and name in at:
        f = at[name]
        mix = guide_shares(plan.guide[name]) or {}
        inside = all(
            f.shares[key].contains(mix[key]) for key in ("success", "rejected", "timeout") if key in mix
        )
        verdict = (
            "The guide's mix lies inside this point's intervals."
            if inside
            else "No measured load gives the guide's mix within its intervals; this is the closest."
        )
        if not f.settled:
            verdict += " This point did not reach steady state: its shares depend on the run's length."
        parts.append(
            f"{name} comes closest to the guide's {plan.guide_mix_text()} at {rate:.2f} req/s offered "
            f"({capacity_text(rate, probe.get(name))} its probed capacity): success "
            f"{interval_text(f.shares['success'], 'pct')}, rejections "
            f"{interval_text(f.shares['rejected'], 'pct')}, timeouts "
            f"{interval_text(f.shares['timeout'], 'pct')} (the server's; client deadline "
            f"{interval_text(f.shares['deadline'], 'pct')}); {100 * distance:.0f} percentage points of "
            f"requests away from the guide's mix (total variation distance). {verdict}"
        )
    else:
        parts.append(f"At {rate:.2f} req/s offered (exact Poisson schedule, the same for every profile).")
    parts.append("At that load, where 95 % intervals separate: " + ". ".join(_differences(at)) + ".")
    parts.append("Knees: " + "; ".join(f"{n} {k.describe()}" for n, k in knees.items()) + ".")
    return " ".join(parts)


def intro_lines(plan: SweepPlan) -> list[str]:
    q = plan.quantities
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [f"Campaign '{plan.campaign}': {plan.description}."]
    for name, t in plan.external.items():
        lines.append(
            f"Target {name}: the OpenAI-compatible server at {t['url']}, started outside this run; model "
            f"{t.get('model') or 'not named (GET /v1/models listed none): the server chose its default'}."
        )
    lines += [
        f"This process could use {cores} CPU core(s).",
        f"SLO (goodput): TTFT <= {1000 * q['slo_ttft_s']:.0f} ms and E2E <= {q['slo_e2e_s']:.2f} s.",
        f"Grid: {', '.join(f'{r:.2f}' for r in plan.rates)} req/s, each an exact Poisson schedule "
        "(poisson-exact: the planned count in every 5 s), the same for every profile at each rate.",
        f"A point holds when its served share >= {100 * plan.follow_share:.0f} % and its SLO attainment >= "
        f"{100 * plan.slo_attainment:.0f} %, both with 95 % confidence; breaks when either interval lies "
        "below.",
        "Intervals (95 %): shares, Wilson on the effective sample size (batch means); rates, batch means "
        "of 10 sub-windows (t); percentiles, moving-block bootstrap (blocks of sqrt(n), in send order). "
        "Each point is measured over its steady window (MSER-5 on the time in system); see "
        "docs/reproduce.md.",
        *plan.rules,
    ]
    return lines


def write_json(
    out: Path,
    plan: SweepPlan,
    points: dict[str, dict[float, PointFigures]],
    knees: dict[str, Knee],
    rate: float,
    located: float | None,
    distance: float | None,
    sentence: str,
) -> None:
    data = {
        "headline_rate_per_s": rate,
        "guide_located_rate_per_s": located,
        "guide_distance": distance,
        "headline": sentence,
        "knees": {
            n: {
                "holds_up_to_rps": k.holds_up_to_rps,
                "breaks_from_rps": k.breaks_from_rps,
                "verdict": k.verdict,
                "reason": k.reason,
                "indeterminate_rps": list(k.indeterminate_rps),
                "description": k.describe(),
            }
            for n, k in knees.items()
        },
        "points": [
            {
                "profile": n,
                "rate_per_s": r,
                "offered_per_s": f.offered_per_s,
                "requests": f.requests,
                "settled": f.settled,
                "window_s": f.window_s,
                "run_s": f.run_s,
                **{
                    key: f.figure(key).to_dict()
                    for key in (
                        "success_rate",
                        "rejection_rate",
                        "timeout_rate",
                        "deadline_rate",
                        "error_rate",
                        "cut_rate",
                        "slo_attainment",
                        "served_per_s",
                        "goodput_per_s",
                        "output_tokens_per_s",
                        "ttft_p50_s",
                        "ttft_p99_s",
                        "e2e_p50_s",
                        "e2e_p99_s",
                    )
                },
            }
            for n, pts in points.items()
            for r, f in sorted(pts.items())
        ],
    }
    (out / SWEEP_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
