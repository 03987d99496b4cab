"""The sweep's report, from run folders only: the curve table, each profile's knee, the goodput headline
at the comparison point, `sweep.json` / `curve.csv` / `knees.csv`, the figures, report.md and report.html.

Reads summary.json tolerantly: `cuts` / `cut_rate` and `warning_codes` appear in newer run folders only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from reports import curves, html, report
from reports import markdown as md
from reports.knee import CurvePoint, Knee, find_knee
from reports.metrics import run_metrics
from reports.runs import load_runs
from runfolder.figures import Slo
from runfolder.folder import SUMMARY_FILE
from runfolder.frame import RunData

if TYPE_CHECKING:  # the campaign and the probe come from orchestrate, which runs them; read here only
    from orchestrate import campaign as camp
    from orchestrate.probe import ProbeResult

log = logging.getLogger(__name__)

PLAN_FILE = "sweep-plan.json"
SWEEP_FILE = "sweep.json"


@dataclass(frozen=True, slots=True)
class SweepRun:
    """One run of the sweep: its rate, its profile and, from them, its folder under runs/sweep/."""

    point: int  # index of the rate, from 0 (lowest)
    rate_per_s: float
    profile: str

    @property
    def folder(self) -> str:
        return f"p{self.point:02d}-{self.rate_per_s:.3f}rps"


def run_order(rates: list[float], profiles: list[str]) -> list[SweepRun]:
    """Rate by rate from the lowest, every profile once per rate, the order rotating (orchestrate.sweep)."""
    order = []
    for i, rate in enumerate(rates):
        shift = i % len(profiles)
        for name in profiles[shift:] + profiles[:shift]:
            order.append(SweepRun(i, rate, name))
    return order


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """What the sweep ran: written before the first run, read back by --report-only."""

    profiles: list[str]
    rates: list[float]
    comparison: int  # index into rates
    quantities: dict[str, float]  # probed, with the SLOs
    # What each profile name stood for: {"url", "model"} for an external server (--url), {"profile"} for
    # ours. Empty in plans written before it was recorded.
    targets: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # The arrivals each point's window was to hold at least (campaign sweep.min_requests_per_point), and
    # the points (index, as a string) whose window max_window_s kept shorter: their expected arrivals.
    min_requests_per_point: int | None = None
    short_points: dict[str, float] = field(default_factory=dict)

    @property
    def external(self) -> dict[str, dict[str, str | None]]:
        """The targets that are servers started outside this run (--url)."""
        return {name: t for name, t in self.targets.items() if t.get("url")}

    def write(self, folder: Path) -> None:
        (folder / PLAN_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> SweepPlan:
        return cls(**json.loads((folder / PLAN_FILE).read_text(encoding="utf-8")))

    @property
    def slo(self) -> Slo:
        return Slo(ttft_s=self.quantities["slo_ttft_s"], e2e_s=self.quantities["slo_e2e_s"])

    def runs(self) -> list[SweepRun]:
        return run_order(self.rates, self.profiles)


def sweep_dir(out: Path, run: SweepRun) -> Path:
    return out / "runs" / "sweep" / run.profile / run.folder


def _behind(run: RunData) -> bool:
    codes = run.summary.get("warning_codes") or []
    arrival = run.summary.get("arrival") or {}
    return "generator_behind" in codes or bool(arrival.get("behind"))


def uncounted_cuts(summary: dict[str, Any]) -> int:
    """Requests still in flight when the run ended that are not among the records: older run folders
    only count them (`incomplete`, which also counts requests the schedule sent after the window, during
    the stop timeout); newer ones record in-window ones as the outcome `cut` (`cuts`, in the shares)."""
    if "cuts" in summary:
        return 0
    return int(summary.get("incomplete") or 0)


def curve_row(run: RunData, sweep_run: SweepRun, slo: Slo) -> dict[str, Any]:
    m = run_metrics(run, slo)
    summary = run.summary
    # Shares are of the recorded requests (with `cut` among them in newer run folders). Older folders'
    # uncounted cuts are shown beside, as a share of recorded + uncounted, not folded into the shares:
    # they include requests sent after the window.
    extra_cuts = uncounted_cuts(summary)
    if "cuts" in summary:
        cut_rate = summary.get("cut_rate") or 0.0
    else:
        cut_rate = extra_cuts / (m["requests"] + extra_cuts) if extra_cuts else 0.0
    return {
        "profile": sweep_run.profile,
        "point": sweep_run.point,
        "rate_per_s": sweep_run.rate_per_s,
        "attempted_per_s": summary.get("attempted_requests_per_s"),
        "requests": m["requests"],
        "uncounted_cuts": extra_cuts,
        "requests_per_s": m["requests_per_s"] or 0.0,
        "output_tokens_per_s": m["output_tokens_per_s"] or 0.0,
        "goodput_requests_per_s": m["goodput_requests_per_s"] or 0.0,
        "slo_attainment": m["slo_attainment"],
        "success_rate": m["success_rate"],
        "rejection_rate": m["rejection_rate"],
        "timeout_rate": m["timeout_rate"],
        "error_rate": m["error_rate"],
        "cut_rate": cut_rate,
        "ttft_p50_s": m["ttft_p50_s"],
        "ttft_p99_s": m["ttft_p99_s"],
        "e2e_p50_s": m["e2e_p50_s"],
        "e2e_p99_s": m["e2e_p99_s"],
        "generator_behind": _behind(run),
        "schedule_lag_p95_s": (summary.get("schedule_lag_s") or {}).get("p95"),
        "run": str(run.path),
    }


def request_count(run_dir: Path) -> int:
    """The requests a run folder's summary counts (0 when it has none, or no summary)."""
    try:
        return int(json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8")).get("requests") or 0)
    except (OSError, ValueError):
        return 0


def curve_table(out: Path, plan: SweepPlan) -> tuple[pd.DataFrame, list[RunData]]:
    # A run with no request in its window (possible only on a machine far slower than the probe saw) is
    # left out of the curve rather than failing the report; the report's warnings name it.
    runs = [r for r in plan.runs() if request_count(sweep_dir(out, r)) > 0]
    data = load_runs([sweep_dir(out, r) for r in runs])
    rows = [curve_row(d, r, plan.slo) for d, r in zip(data, runs, strict=True)]
    table = pd.DataFrame(rows).sort_values(["profile", "rate_per_s"], kind="stable")
    order = {name: i for i, name in enumerate(plan.profiles)}
    table = table.sort_values(
        ["profile", "rate_per_s"], key=lambda c: c.map(order) if c.name == "profile" else c
    )
    return table.reset_index(drop=True), data


def knees(curve: pd.DataFrame, spec: camp.SweepSpec) -> dict[str, Knee]:
    out = {}
    for name in dict.fromkeys(curve["profile"]):
        rows = curve[curve["profile"] == name]
        points = [
            CurvePoint(r.rate_per_s, r.success_rate, r.slo_attainment) for r in rows.itertuples(index=False)
        ]
        out[name] = find_knee(points, spec.follow_share, spec.slo_attainment)
    return out


# ---- the headline ----

HEADLINE_ROWS = (
    ("Throughput (output tok/s)", "output_tokens_per_s", "tok"),
    ("Served (successful req/s)", "requests_per_s", "rps"),
    ("Success", "success_rate", "pct"),
    ("Rejections", "rejection_rate", "pct"),
    ("Timeouts", "timeout_rate", "pct"),
    ("Errors (the guide has no such row)", "error_rate", "pct"),
    ("Goodput (req/s within the SLO)", "goodput_requests_per_s", "rps"),
    ("Within the SLO (of recorded)", "slo_attainment", "pct"),
    ("TTFT p50", "ttft_p50_s", "ms"),
    ("TTFT p99", "ttft_p99_s", "ms"),
    ("E2E p99", "e2e_p99_s", "s"),
)


def _cell(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if kind == "pct":
        return md.fmt(100 * value, 1, " %")
    if kind == "ms":
        return md.fmt(1000 * value, 0, " ms")
    if kind == "s":
        return md.fmt(value, 2, " s")
    return md.fmt(value, 1 if kind == "tok" else 2)


def _claim(guide: camp.GuideFigures | None, metric: str) -> str:
    if guide is None:
        return "—"
    if metric == "output_tokens_per_s":
        return guide.output_tokens_per_s_text or _cell(guide.output_tokens_per_s, "tok")
    if metric in ("success_rate", "rejection_rate", "timeout_rate"):
        return _cell(getattr(guide, metric), "pct")
    return "—"


def headline_table(
    curve: pd.DataFrame, plan: SweepPlan, guides: dict[str, camp.GuideFigures | None]
) -> pd.DataFrame:
    at = curve[curve["point"] == plan.comparison].set_index("profile")
    show_cuts = bool(curve["cut_rate"].fillna(0).any())
    rows = list(HEADLINE_ROWS)
    if show_cuts:
        rows.insert(6, ("Cut at the end (beside the shares)", "cut_rate", "pct"))
    table = pd.DataFrame({"": [title for title, _, _ in rows]})
    for name in plan.profiles:
        if name not in at.index:
            continue
        table[f"{name} measured"] = [_cell(at.loc[name, metric], kind) for _, metric, kind in rows]
        if guides.get(name) is not None:
            table[f"{name} guide"] = [_claim(guides[name], metric) for _, metric, _ in rows]
    return table


def _share_text(row: pd.Series) -> str:
    parts = [f"{100 * row.success_rate:.0f} % served"]
    for column, word in (
        ("rejection_rate", "rejected"),
        ("timeout_rate", "timed out"),
        ("error_rate", "errors"),
        ("cut_rate", "cut at the end"),
    ):
        if row[column] and row[column] > 0:
            parts.append(f"{100 * row[column]:.0f} % {word}")
    return ", ".join(parts)


def headline_sentence(curve: pd.DataFrame, plan: SweepPlan, knee: dict[str, Knee]) -> str:
    q = plan.quantities
    rate = plan.rates[plan.comparison]
    at = curve[curve["point"] == plan.comparison].set_index("profile")
    if len(plan.profiles) == 1:
        capacity = f"{rate / q['min_capacity_rps']:.2f}x the probed capacity, {q['min_capacity_rps']:.2f}"
        capacity += " req/s"
    else:
        capacity = (
            f"{rate / q['min_capacity_rps']:.2f}x the lowest probed capacity, {q['min_capacity_rps']:.2f} "
            f"req/s, and {rate / q['max_capacity_rps']:.2f}x the highest, {q['max_capacity_rps']:.2f} req/s"
        )
    lead = f"At {rate:.2f} req/s offered (Poisson; {capacity}): "
    # A profile that served nothing there has no E2E p99: it is still named, with its outcome shares.
    each = [
        f"{name} {_share_text(at.loc[name])}, goodput {at.loc[name, 'goodput_requests_per_s']:.2f} req/s, "
        f"E2E p99 {_cell(at.loc[name, 'e2e_p99_s'], 's')}"
        for name in plan.profiles
        if name in at.index
    ]
    knees_text = "; ".join(f"{name} {k.describe()}" for name, k in knee.items())
    text = lead + "; ".join(each) + f". Knees: {knees_text}."
    first, last = plan.profiles[0], plan.profiles[-1]
    held = {name: k.holds_up_to_rps for name, k in knee.items()}
    if len(plan.profiles) >= 2 and held.get(first) and held.get(last):
        text += (
            f" {last} holds up to {held[last] / held[first]:.2f}x the load {first} holds "
            f"({held[last]:.2f} vs {held[first]:.2f} req/s)."
        )
    return text


# ---- tables for the report ----


def knee_frame(knee: dict[str, Knee], plan: SweepPlan, probe: ProbeResult) -> pd.DataFrame:
    rows = []
    min_cap = plan.quantities["min_capacity_rps"]
    for name, k in knee.items():
        capacity = probe.capacity_of(name)
        rows.append(
            {
                "profile": name,
                "holds up to (req/s)": md.fmt(k.holds_up_to_rps, 2),
                "breaks at (req/s)": md.fmt(k.breaks_at_rps, 2),
                "breaks at / lowest capacity": md.fmt(k.breaks_at_rps / min_cap, 2)
                if k.breaks_at_rps
                else "—",
                "why": k.reason or "—",
                "probed capacity (req/s)": md.fmt(capacity, 2),
            }
        )
    return pd.DataFrame(rows)


def probe_frame(probe: ProbeResult) -> pd.DataFrame:
    rows = []
    for p in probe.profiles:
        single = p.single
        rows.append(
            {
                "profile": p.name,
                "1 stream: TTFT p50": _cell(single.ttft_p50_s if single else None, "ms"),
                "1 stream: E2E p50": _cell(single.e2e_p50_s if single else None, "s"),
                "1 stream (req/s)": md.fmt(single.requests_per_s if single else None, 2),
                "saturated (req/s)": md.fmt(p.capacity_rps, 2),
                "saturated (tok/s)": md.fmt(p.capacity_tokens_per_s, 1),
                "at concurrency": str(p.best.concurrency) if p.best else "—",
                "steps (concurrency: req/s)": ", ".join(
                    f"{s.concurrency}: {s.requests_per_s:.2f}" for s in p.steps
                ),
            }
        )
    return pd.DataFrame(rows)


def curve_frame(curve: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile": curve["profile"],
            "offered (req/s)": curve["rate_per_s"].map(lambda v: md.fmt(v, 2)),
            "served (req/s)": curve["requests_per_s"].map(lambda v: md.fmt(v, 2)),
            "goodput (req/s)": curve["goodput_requests_per_s"].map(lambda v: md.fmt(v, 2)),
            "success": curve["success_rate"].map(lambda v: _cell(v, "pct")),
            "rejected": curve["rejection_rate"].map(lambda v: _cell(v, "pct")),
            "timed out": curve["timeout_rate"].map(lambda v: _cell(v, "pct")),
            "errors": curve["error_rate"].map(lambda v: _cell(v, "pct")),
            "cut at the end": curve["cut_rate"].map(lambda v: _cell(v, "pct")),
            "TTFT p50": curve["ttft_p50_s"].map(lambda v: _cell(v, "ms")),
            "TTFT p99": curve["ttft_p99_s"].map(lambda v: _cell(v, "ms")),
            "E2E p99": curve["e2e_p99_s"].map(lambda v: _cell(v, "s")),
            "generator behind": curve["generator_behind"].map(lambda v: "yes" if v else "no"),
            "send lag p95": curve["schedule_lag_p95_s"].map(lambda v: _cell(v, "ms")),
        }
    )


def target_lines(campaign: camp.Campaign, plan: SweepPlan) -> list[str]:
    """Which servers were measured: the campaign's profiles, or the external server(s) given by --url
    (then only the campaign's request shape and rules were used, not its profiles)."""
    if not plan.external:
        return [f"Campaign '{campaign.name}': {campaign.description}."]
    lines = [
        f"Target {name}: the OpenAI-compatible server at {t['url']}, started outside this run; model "
        f"{t.get('model') or 'not named (GET /v1/models listed none): the server chose its default'}."
        for name, t in plan.external.items()
    ]
    return [
        *lines,
        f"Campaign '{campaign.name}' gave the request shape, the probe, the SLO and the sweep rules; its "
        "profiles were not started.",
    ]


def _title(campaign: camp.Campaign, plan: SweepPlan) -> str:
    names = [
        f"{name} ({plan.external[name]['url']})" if name in plan.external else name for name in plan.profiles
    ]
    return f"{' vs '.join(names)} across offered load: campaign {campaign.name}"


def rule_lines(campaign: camp.Campaign, plan: SweepPlan) -> list[str]:
    q = plan.quantities
    sweep, slo = campaign.sweep, campaign.slo
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if len(plan.profiles) == 1:
        capacity = f"{q['min_capacity_rps']:.2f} req/s"
    else:
        capacity = f"{q['min_capacity_rps']:.2f} to {q['max_capacity_rps']:.2f} req/s across the profiles"
    lines = [
        *target_lines(campaign, plan),
        f"This process could use {cores} CPU core(s).",
        f"Probed on this machine: single stream TTFT {1000 * q['single_ttft_s']:.0f} ms, E2E "
        f"{q['single_e2e_s']:.2f} s; saturated throughput {capacity}.",
        f"SLO (goodput): TTFT <= {slo.ttft_s.describe()} = {1000 * q['slo_ttft_s']:.0f} ms and E2E <= "
        f"{slo.e2e_s.describe()} = {q['slo_e2e_s']:.2f} s.",
        f"Sweep: {len(plan.rates)} Poisson rates from {sweep.lowest.describe()} to "
        f"{sweep.highest.describe()} ({', '.join(f'{r:.2f}' for r in plan.rates)} req/s), the same seeded "
        f"schedule for every profile at each rate; comparison point {sweep.comparison.describe()} -> "
        f"{plan.rates[plan.comparison]:.2f} req/s.",
        f"Knee: the highest rate before the first one where fewer than {100 * sweep.follow_share:.0f} % of "
        f"attempted requests are served or fewer than {100 * sweep.slo_attainment:.0f} % meet the SLO.",
    ]
    for spec in campaign.profiles:
        if spec.name in plan.profiles and spec.derive:
            rules = "; ".join(f"{key} = {rule.describe()}" for key, rule in spec.derive.items())
            state = "applied" if campaign.derived_limits else "not applied (--real-limits)"
            lines.append(f"{spec.name}: derived server values {state}: {rules}.")
    return lines


def write(
    campaign: camp.Campaign, out: Path, plan: SweepPlan, probe: ProbeResult
) -> tuple[report.Report, str, pd.DataFrame, list[str]]:
    """Everything from the run folders; returns the report, the headline's sentence and table, warnings."""
    curve, data = curve_table(out, plan)
    knee = knees(curve, campaign.sweep)
    guides = {p.name: p.guide for p in campaign.profiles if p.name not in plan.external}
    table = headline_table(curve, plan, guides)
    sentence = headline_sentence(curve, plan, knee)
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "curve.csv", index=False)
    knee_rows = [{"profile": n, **asdict(k)} for n, k in knee.items()]
    pd.DataFrame(knee_rows).to_csv(out / "knees.csv", index=False)
    sweep_json = {
        "plan": asdict(plan),
        "comparison_rate_per_s": plan.rates[plan.comparison],
        "knees": {n: {**asdict(k), "description": k.describe()} for n, k in knee.items()},
        "points": curve.drop(columns=["run"]).to_dict(orient="records"),
        "headline": sentence,
    }
    (out / SWEEP_FILE).write_text(json.dumps(sweep_json, indent=2, default=float) + "\n", encoding="utf-8")
    capacities = {p.name: p.capacity_rps for p in probe.profiles}
    slo = {"ttft_s": plan.quantities["slo_ttft_s"], "e2e_s": plan.quantities["slo_e2e_s"]}
    figures = curves.write_curves(curve, knee, slo, capacities, folder / "plots")
    # The runs at the comparison point, in the usual compare report (latency over time, CDFs, ...).
    at = [d for d in data if d.path.name == next(r.folder for r in plan.runs() if r.point == plan.comparison)]
    detail = report.build(
        sorted(at, key=lambda d: plan.profiles.index(d.label) if d.label in plan.profiles else 0),
        folder / "comparison-point",
        title=f"The runs at the comparison point, {plan.rates[plan.comparison]:.2f} req/s",
    )
    warnings = report.run_warnings(data)
    missing = [str(sweep_dir(out, r)) for r in plan.runs() if request_count(sweep_dir(out, r)) == 0]
    if missing:
        warnings.insert(
            0, f"{len(missing)} sweep runs measured no request and are left out: {', '.join(missing)}"
        )
    if plan.short_points:
        short = ", ".join(
            f"{plan.rates[int(i)]:.2f} req/s (~{n:.0f})" for i, n in sorted(plan.short_points.items())
        )
        warnings.insert(
            0,
            f"{len(plan.short_points)} sweep point(s) held fewer than the {plan.min_requests_per_point} "
            f"expected arrivals asked for (sweep.min_requests_per_point; the window stopped at "
            f"sweep.max_window_s): {short}; their figures are noisier",
        )
    behind = curve[curve["generator_behind"]]
    if len(behind):
        warnings.insert(0, f"the load generator fell behind in {len(behind)} of {len(curve)} sweep runs")
    guide = ""
    if any(guides.get(name) is not None for name in plan.profiles):
        guide = (
            f" 'guide' columns are the migration guide's claimed figures ({campaign.guide_source}), for its "
            "own 30B model on the author's Mac and labelled expected: compare the shape, not the absolute "
            "numbers."
        )
    note = (
        f"{sentence}{guide} Outcome shares are of the recorded requests; requests cut by the end of a run "
        "are shown beside them (older run folders do not record them); goodput counts successes within "
        "the SLO."
    )
    sections = [
        (
            "Headline: the guide's table at the comparison point, with goodput and latency"
            if guide
            else "Headline: the comparison point, with goodput and latency",
            note,
            table,
        ),
        ("Knees (computed from the curves)", "", knee_frame(knee, plan, probe)),
        ("Capacity probe (closed loop, concurrency doubling)", "", probe_frame(probe)),
        ("Every sweep point", "", curve_frame(curve)),
    ]
    intro = [*rule_lines(campaign, plan), f"Detail of the comparison point's runs: {detail.html_path}"]
    title = _title(campaign, plan)
    built = report.Report(folder, detail.tables, plots=figures, warnings=warnings)
    built.markdown_path.write_text(
        report.to_markdown(title, intro, sections, figures, warnings, 1), encoding="utf-8"
    )
    built.html_path.write_text(html.render(title, intro, sections, figures, warnings, 1), encoding="utf-8")
    (out / "headline.md").write_text("\n".join([md.table(table), "", sentence, ""]), encoding="utf-8")
    return built, sentence, table, warnings
