"""Running a sweep campaign: probe, plan, the grid of offered loads, the search for the guide's mix and
the knee bisection, each run appended to the sweep folder (reports.sweep_folder) as it finishes; then the
report, computed from that folder alone (reports.sweep_report)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from orchestrate import campaign as camp
from orchestrate import sweep as sweeping
from orchestrate.locust_runs import DRAIN_EXTRA_S, Progress, build_model, drain, run_campaign_load
from orchestrate.probe_run import request_count, run_probe
from orchestrate.targets import CampaignTarget, Servers, base_load
from reports import sweep_report
from reports.errors import BadInput
from reports.guide_match import mix_distance, next_guide_rate
from reports.knee import find_knee, next_rate
from reports.point_figures import PointFigures
from reports.report import Report
from reports.sweep_folder import PLAN_FILE, GuideMix, PointRun, SweepPlan, append_point, read_points

log = logging.getLogger(__name__)


class PointRunner:
    """Runs sweep points within the budget's deadline and keeps their figures."""

    def __init__(
        self,
        campaign: camp.Campaign,
        servers: Servers,
        targets: list[CampaignTarget],
        out: Path,
        plan: SweepPlan,
        scale: sweeping.WindowScale,
        deadline: float,
        progress: Progress,
    ):
        self.campaign, self.servers, self.out, self.plan = campaign, servers, out, plan
        self.by_name = {t.name: t for t in targets}
        self.scale, self.seed = scale, int(campaign.load.get("seed", 0))
        self.deadline, self.progress = deadline, progress
        self.figures: dict[tuple[str, float], PointFigures] = {}
        self.overheads_s: list[float] = []

    def overhead_s(self) -> float:
        return max(self.overheads_s) if self.overheads_s else sweeping.RUN_OVERHEAD_GUESS_S

    def fits(self, window_s: float) -> bool:
        return time.monotonic() + window_s + self.overhead_s() <= self.deadline

    def run(self, point: PointRun) -> PointFigures | None:
        spec = self.campaign.sweep_spec
        load = sweeping.point_load(
            base_load(self.campaign, self.by_name[point.profile]), spec, point, self.plan.quantities
        )
        started = time.monotonic()
        self.progress(
            f"{point.purpose} run: {point.profile} at {point.rate_per_s:.3f} req/s offered "
            f"(exactly {round(point.rate_per_s * point.window_s)} arrivals in {point.window_s:g} s), "
            f"{load.users} users"
        )
        run_dir = self.out / point.folder
        url = self.servers.urls[point.profile]
        label = f"{point.profile}-{point.purpose}"
        log_path = self.out / "logs" / f"sweep-{point.profile}-{run_dir.name}.locust.log"
        run_campaign_load(load, url, run_dir, label, log_path, self.progress)
        drain(url, load.request_timeout_s + DRAIN_EXTRA_S)
        self.overheads_s.append(max(time.monotonic() - started - point.window_s, 0.0))
        append_point(self.out, point)
        if not request_count(run_dir):
            self.progress("  -> no request in the run")
            return None
        figures = sweep_report.figures_of(self.out, point, self.plan)
        self.figures[(point.profile, point.rate_per_s)] = figures
        left_min = max(self.deadline - time.monotonic(), 0) / 60
        self.progress(
            f"  -> {sweep_report.progress_text(figures, spec.target_half_width)}; {left_min:.1f} min left"
        )
        return figures

    def of(self, profile: str) -> dict[float, PointFigures]:
        return {rate: f for (name, rate), f in self.figures.items() if name == profile}


def search_guide(runner: PointRunner, profile: str, guide: GuideMix, spec: camp.SweepSpec) -> float | None:
    """v1.1.1's load closest to the guide's mix: from the grid, then up to `guide_steps` runs moving toward
    the guide's success share; returns the located rate (the run with the smallest mix distance)."""
    target = guide.success_rate
    if target is None:
        return None
    for _ in range(spec.guide_steps):
        seen = runner.of(profile)
        rate = round(next_guide_rate([(r, f.shares["success"].estimate) for r, f in seen.items()], target), 4)
        if any(abs(rate / r - 1) < 0.03 for r in seen):
            break  # the search has converged on a load already measured
        window_s = runner.scale.window_s(spec, rate, spec.guide_window_factor)
        if not runner.fits(window_s):
            runner.progress(f"guide search: no time left in the budget for {rate:.3f} req/s")
            break
        figures = runner.run(sweeping.point_run(profile, rate, "guide", runner.seed, window_s))
        if figures is not None and figures.settled and figures.shares["success"].contains(target):
            break  # the guide's success share is inside a settled point's interval
    seen = runner.of(profile)
    distances = {
        r: mix_distance({k: iv.estimate for k, iv in f.shares.items()}, guide) for r, f in seen.items()
    }
    scored = {r: d for r, d in distances.items() if d is not None}
    return min(scored, key=lambda rate: scored[rate]) if scored else None


def bisect_knees(runner: PointRunner, profiles: list[str], spec: camp.SweepSpec) -> None:
    for _ in range(spec.knee_steps):
        for profile in profiles:
            knee = find_knee(
                [sweep_report.curve_point(r, f) for r, f in runner.of(profile).items()],
                spec.follow_share,
                spec.slo_attainment,
            )
            rate = next_rate(knee, min(runner.of(profile), default=0.0))
            if rate is None:
                continue
            window_s = runner.scale.window_s(spec, rate)
            if not runner.fits(window_s):
                runner.progress(f"knee of {profile}: no time left in the budget for {rate:.3f} req/s")
                continue
            runner.run(sweeping.point_run(profile, round(rate, 4), "knee", runner.seed, window_s))


def make_plan(
    campaign: camp.Campaign,
    targets: list[CampaignTarget],
    urls: dict[str, str],
    rates: list[float],
    q: dict[str, float],
    guide_spec: camp.ProfileSpec | None,
    budget_s: float,
) -> SweepPlan:
    spec, slo = campaign.sweep_spec, campaign.slo_spec
    guides = {
        p.name: GuideMix(**p.guide.model_dump())
        for p in campaign.profiles
        if p.guide is not None and any(t.name == p.name and t.url is None for t in targets)
    }
    comparison = min(rates, key=lambda r: abs(r - spec.comparison.value(q)))
    rules = [
        f"SLO: TTFT <= {slo.ttft_s.describe()}, E2E <= {slo.e2e_s.describe()}; grid from "
        f"{spec.lowest.describe()} to {spec.highest.describe()}; client deadline "
        f"{spec.request_timeout_s.describe()}.",
        f"Runs: at least {spec.min_requests_per_point} arrivals and {spec.min_window_s:g} s each before the "
        f"budget ({spec.budget_min:g} min) scaled them; {spec.knee_steps} knee bisection run(s) per profile; "
        f"up to {spec.guide_steps} run(s) searching the guide's mix.",
    ]
    for p in campaign.profiles:
        if (p.derive or p.derive_values) and campaign.derived_limits:
            fixed = [f"{key} = {value}" for key, value in p.derive_values.items()]
            rules_text = [f"{key} = {rule.describe()}" for key, rule in p.derive.items()]
            rules.append(
                f"{p.name}: derived server values ({'; '.join(fixed + rules_text)}); "
                "--real-limits: the release's."
            )
    return SweepPlan(
        campaign=campaign.name,
        description=campaign.description,
        profiles=[t.name for t in targets],
        rates=rates,
        quantities=q,
        follow_share=spec.follow_share,
        slo_attainment=spec.slo_attainment,
        comparison_rate=comparison,
        targets={t.name: t.describe(urls[t.name]) for t in targets},
        guide=guides,
        guide_profile=guide_spec.name if guide_spec else None,
        guide_source=campaign.guide_source,
        rules=rules,
        budget_s=budget_s,
        target_half_width=spec.target_half_width,
    )


def reproduce_sweep(
    campaign: camp.Campaign,
    campaign_path: Path,
    out: Path,
    progress: Progress,
    report_only: bool = False,
    external: CampaignTarget | None = None,
    model: str | None = None,
) -> Report:
    if report_only:  # a folder with a plan is reported by orchestrate.reproduce without a campaign
        raise BadInput(f"{out}: no earlier sweep to report on (no {PLAN_FILE})")
    started = time.monotonic()
    spec = campaign.sweep_spec
    budget_s = 60 * spec.budget_min
    targets = [external] if external else [CampaignTarget(p.name, p, model=model) for p in campaign.profiles]
    progress(
        f"campaign '{campaign.name}' ({campaign_path}): {', '.join(t.name for t in targets)}; budget "
        f"{spec.budget_min:g} min (probe, then the sweep); output {out}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.yaml").write_text(campaign_path.read_text(encoding="utf-8"), encoding="utf-8")
    if external is None and model is None:
        build_model(progress)
    guide_spec = None if external else next((p for p in campaign.profiles if p.search_guide_mix), None)
    with Servers(campaign, targets, out, progress) as servers:
        servers.start("probe")
        probe = run_probe(campaign, targets, servers.urls, servers.hints, out, progress)
        q = sweeping.with_slo(campaign, probe.quantities())
        rates = sweeping.plan_rates(spec, q)
        left_s = budget_s - (time.monotonic() - started)
        scale = sweeping.fit_budget(spec, rates, len(targets), guide_spec is not None, left_s)
        plan = make_plan(campaign, targets, servers.urls, rates, q, guide_spec, budget_s)
        plan.write(out)
        progress(
            f"derived: SLO TTFT {1000 * q['slo_ttft_s']:.0f} ms, E2E {q['slo_e2e_s']:.2f} s; rates "
            f"{', '.join(f'{r:.2f}' for r in rates)} req/s; {scale.planned_runs} runs in "
            f"{left_s / 60:.1f} min: windows x{scale.factor:g} the campaign's"
        )
        derived = {
            t.name: camp.derived_overrides(t.spec, q)
            for t in targets
            if t.spec is not None and (t.spec.derive or t.spec.derive_values) and campaign.derived_limits
        }
        if derived:
            servers.start("sweep", derived)
        deadline = started + budget_s - sweeping.REPORT_RESERVE_S
        runner = PointRunner(campaign, servers, targets, out, plan, scale, deadline, progress)
        for point in sweeping.grid_runs(rates, plan.profiles, runner.seed, scale, spec):
            runner.run(point)
        if guide_spec is not None and guide_spec.guide is not None:
            located = search_guide(runner, guide_spec.name, plan.guide[guide_spec.name], spec)
            if located is not None:
                progress(f"guide mix located for {guide_spec.name} at {located:.3f} req/s")
                for name in plan.profiles:
                    if name != guide_spec.name and (name, located) not in runner.figures:
                        window_s = scale.window_s(spec, located, spec.guide_window_factor)
                        runner.run(sweeping.point_run(name, located, "guide", runner.seed, window_s))
        bisect_knees(runner, plan.profiles, spec)
    progress(f"{len(read_points(out))} sweep runs; writing the report (curves, knees, guide point, HTML)")
    return sweep_report.write(out)
