"""`python -m orchestrate.reproduce [--campaign FILE] [--out DIR] [--quick] [--url URL]`: the migration
guide's comparison, measured on this machine.

Sweep campaigns (the default): builds the embedded model if needed; probes each profile's capacity
(closed loop, concurrency doubling); derives the SLOs, the rates and the limits from the probe by the
campaign's rules; sweeps open-loop Poisson load across those rates with every profile's server running;
writes the curves, the knees and the goodput headline. With --url, the same probe and sweep against an
OpenAI-compatible server you started (mlx_lm.server, vLLM, ours).
Single-point campaigns (smoke, vision): each profile under one load, as before.
Exit codes: 0 done, 1 a run failed (server or Locust), 2 bad campaign file or option.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from configkit import REPO_ROOT
from orchestrate import campaign as camp
from orchestrate import probe as probing
from orchestrate import sweep as sweeping
from orchestrate.processes import ServerFailed, running_server
from orchestrate.processes import run_locust as run_locust_process
from reports import markdown as md
from reports import report, sweep_report
from reports.errors import BadInput, ReportError, RunFailed
from reports.metrics import label_stats, run_metrics, runs_frame, token_arrivals
from reports.runs import load_runs
from runfolder.folder import SUMMARY_FILE

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_AGGREGATED = re.compile(r"Aggregated\s+(\d+)\s+(\d+)\(")
PROGRESS_EVERY_S = 10.0
EXTRA_WALL_S = 90.0  # beyond run time and stop timeout, before a hung Locust is killed


def build_model(progress: Progress) -> None:
    progress("checking the embedded model (built once, offline)")
    result = subprocess.run(
        [sys.executable, "-m", "server.models", "build"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RunFailed(f"building the embedded model failed:\n{result.stderr[-2000:]}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_locust(
    load: camp.LoadSpec, host: str, run_dir: Path, label: str, log_path: Path, progress: Progress
) -> None:
    """One headless Locust run writing `run_dir`; a progress line every PROGRESS_EVERY_S from its stats."""
    seen = {"requests": 0, "failures": 0}
    total_s = load.warmup_s + load.duration_s
    started = time.monotonic()

    def count(line: str) -> None:
        if match := _AGGREGATED.search(line):
            seen["requests"], seen["failures"] = int(match.group(1)), int(match.group(2))

    def tick() -> None:
        elapsed = time.monotonic() - started
        phase = "warming up" if elapsed < load.warmup_s else "measuring"
        if elapsed > total_s:
            phase = "letting in-flight requests finish"
        progress(
            f"  {label}: {min(elapsed, total_s):.0f}/{total_s:.0f} s {phase}; "
            f"{seen['requests']} requests, {seen['failures']} not successful so far"
        )

    try:
        # Not --only-summary: the periodic stats lines are where the progress counts come from.
        proc = run_locust_process(
            host,
            run_dir,
            *load.locust_args(label),
            only_summary=False,
            timeout_s=total_s + load.request_timeout_s + EXTRA_WALL_S,
            log_file=log_path,
            on_line=count,
            on_tick=tick,
            tick_s=PROGRESS_EVERY_S,
        )
    except subprocess.TimeoutExpired:
        raise RunFailed(f"Locust did not finish in time; log: {log_path}") from None
    # Locust exits 1 whenever a request failed, which is the point of the v1.1.1 run: judge by the folder.
    if not (run_dir / SUMMARY_FILE).is_file():
        raise RunFailed(
            f"Locust wrote no run folder (exit code {proc.returncode}); log {log_path}:\n{_tail(log_path)}"
        )


def run_profile(
    campaign: camp.Campaign, spec: camp.ProfileSpec, rep: int, out: Path, progress: Progress
) -> Path:
    load = campaign.load_for(spec)
    overlay = camp.write_overlay(spec, out / "server")
    run_dir = out / "runs" / spec.name / f"rep{rep}"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server_log = logs / f"{spec.name}-rep{rep}.server.log"
    progress(f"{spec.name} (repeat {rep}/{campaign.repeats}): starting the server, profile {spec.profile}")
    try:
        with running_server(campaign.config_path, profile=overlay, log_file=server_log) as url:
            load_text = (
                f"{load.users} users" if load.arrival == "closed" else f"{load.rate:g} req/s {load.arrival}"
            )
            progress(
                f"{spec.name}: server ready at {url}; load {load_text}, max_tokens {load.max_tokens}, "
                f"{load.warmup_s:g} s warm-up + {load.duration_s:g} s measured"
            )
            # Two unmeasured requests first: a fresh server's first replies build its kernels, and a
            # measured window that starts cold charges that to whichever side of a comparison ran first.
            warm_up(url, None, load.max_tokens)
            run_locust(load, url, run_dir, spec.name, logs / f"{spec.name}-rep{rep}.locust.log", progress)
    except ServerFailed as exc:  # did not start or not healthy; the message ends with its last output
        raise RunFailed(f"{spec.name}: {exc}\nserver log {server_log}") from None
    progress(f"{spec.name}: server stopped; run folder {run_dir}")
    return run_dir


# ---- the headline table ----


def _pct(value: float | None) -> str:
    return md.fmt(100 * value, 1, " %") if value is not None and pd.notna(value) else "—"


HEADLINE_ROWS = (
    ("Throughput (output tok/s)", "output_tokens_per_s"),
    ("Success rate", "success_rate"),
    ("Rejections", "rejection_rate"),
    ("Timeouts", "timeout_rate"),
    ("Errors (the guide has no such row)", "error_rate"),
)


def _claim(guide: camp.GuideFigures | None, metric: str) -> str:
    if guide is None or metric == "error_rate":
        return "—"
    if metric == "output_tokens_per_s":
        return guide.output_tokens_per_s_text or md.fmt(guide.output_tokens_per_s, 2)
    return _pct(getattr(guide, metric))


def headline(campaign: camp.Campaign, stats: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The guide's table, measured: a row per figure, a measured and a claimed column per profile."""
    specs = [p for p in campaign.profiles if p.name in stats.index]
    table = pd.DataFrame({"": [title for title, _ in HEADLINE_ROWS]})
    for spec in specs:
        measured = []
        for _, metric in HEADLINE_ROWS:
            value = stats.loc[spec.name, (metric, "mean")]
            measured.append(md.fmt(value, 1) if metric == "output_tokens_per_s" else _pct(value))
        table[f"{spec.name} measured"] = measured
        table[f"{spec.name} guide"] = [_claim(spec.guide, metric) for _, metric in HEADLINE_ROWS]
    notes = []
    if len(specs) >= 2:
        first, last = specs[0], specs[-1]
        a = stats.loc[first.name, ("output_tokens_per_s", "mean")]
        b = stats.loc[last.name, ("output_tokens_per_s", "mean")]
        claim = ""
        if first.guide and last.guide and first.guide.output_tokens_per_s and last.guide.output_tokens_per_s:
            claimed = 100 * (last.guide.output_tokens_per_s / first.guide.output_tokens_per_s - 1)
            claim = f" (guide: {claimed:+.1f} %)"
        notes.append(f"Throughput {last.name} vs {first.name}: measured {100 * (b / a - 1):+.1f} %{claim}.")
    loads = {campaign.load_for(s).model_dump_json() for s in specs}
    load = campaign.load_for(specs[0]) if specs else None
    if load is not None and len(loads) == 1 and load.arrival != "closed":
        # Under one open-loop schedule, throughput is the part of the same offered load each profile served.
        notes.append(
            f"Every profile got the same offered load ({load.rate:g} req/s, {load.arrival}, "
            f"seed {load.seed}): throughput is the part of it each one served."
        )
    return table, notes


def _flatten(mapping: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in mapping.items():
        if isinstance(value, dict) and not all(not isinstance(v, dict) for v in value.values()):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key} = {value}")
    return out


def campaign_lines(campaign: camp.Campaign) -> list[str]:
    """What was run, for the report's introduction."""
    lines = [f"Campaign '{campaign.name}': {campaign.description}".rstrip(": ")]
    for spec in campaign.profiles:
        load = campaign.load_for(spec)
        who = (
            f"{load.users} users, think {load.think_time_s:g} s"
            if load.arrival == "closed"
            else f"{load.rate:g} req/s ({load.arrival}, seed {load.seed})"
        )
        overrides = "; ".join(_flatten(spec.server)) or "none"
        lines.append(
            f"{spec.name}: profile {spec.profile}, server overrides: {overrides}. "
            f"Load: {load.scenario}, {who}, max_tokens {load.max_tokens}, "
            f"prompt ~{load.prompt_tokens} words, "
            f"{load.warmup_s:g} s warm-up + {load.duration_s:g} s measured, x{campaign.repeats}."
        )
    return lines


def headline_note(campaign: camp.Campaign) -> str:
    repeats = f"mean of {campaign.repeats} repeats" if campaign.repeats > 1 else "one run each"
    source = f" Guide figures: {campaign.guide_source}." if campaign.guide_source else ""
    return (
        f"Measured with campaign '{campaign.name}' ({repeats}); 'guide' columns are the claimed figures. "
        f"Outcome shares are of attempted requests.{source} The guide's tok/s are for its own (larger) model "
        "on the author's Mac: compare the change between profiles, not the absolute throughput."
    )


# ---- sweep campaigns: probe, then offered load relative to the measured capacity ----


@dataclass(frozen=True, slots=True)
class Target:
    """A server under test: a campaign profile (started here) or an external URL (started by the user)."""

    name: str
    spec: camp.ProfileSpec | None = None
    url: str | None = None
    model: str | None = None

    def describe(self, base_url: str) -> dict[str, str | None]:
        """What the report says this target was (sweep-plan.json `targets`)."""
        if self.url is None:
            return {"profile": self.spec.profile if self.spec else None}
        return {"url": base_url, "model": self.model or listed_model(base_url)}


DRAIN_EXTRA_S = 30.0
RUN_OVERHEAD_GUESS_S = 4.0  # Locust start and stop, before any run measured it


@contextlib.contextmanager
def target_server(
    campaign: camp.Campaign, target: Target, out: Path, phase: str, derived: dict | None = None
) -> Iterator[str]:
    """The target's base URL: an external one as given, else our server started with the profile."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)  # the Locust logs go there, for an external server too
    if target.url is not None:
        yield target.url.rstrip("/")
        return
    overlay = camp.write_overlay(target.spec, out / "server" / phase, derived)
    server_log = logs / f"{phase}-{target.name}.server.log"
    try:
        with running_server(campaign.config_path, profile=overlay, log_file=server_log) as url:
            yield url
    except ServerFailed as exc:  # did not start or not healthy; the message ends with its last output
        raise RunFailed(f"{target.name}: {exc}\nserver log {server_log}") from None


def active_requests(url: str) -> int | None:
    """Requests in flight on our server (GET /health), None when the server does not say."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, dict):
        return None
    return sum(int(m.get("active_requests") or 0) for m in models.values() if isinstance(m, dict))


def drain(url: str, deadline_s: float) -> None:
    """Wait until the server has nothing in flight (the last run's abandoned requests are cancelled), so
    that no run starts on another's backlog. Bounded; servers without our /health are not waited for."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        active = active_requests(url)
        if not active:
            return
        time.sleep(0.2)
    log.warning("%s still had requests in flight after %.0f s", url, deadline_s)


def base_load(campaign: camp.Campaign, target: Target) -> dict:
    load = dict(campaign.load)
    if target.spec is not None:
        load.update(target.spec.load)
    if target.model:
        load["extra_args"] = [*load.get("extra_args", []), "--model", target.model]
    return load


def step_result(run_dir: Path, concurrency: int) -> probing.StepResult:
    if sweep_report.request_count(run_dir) == 0:  # nothing measured (e.g. one slow first reply): zeros
        return probing.StepResult(concurrency, 0, 0, 0.0, 0.0, None, None, 0.0, str(run_dir))
    (run,) = load_runs([run_dir])
    m = run_metrics(run)
    ok_tokens = run.records.loc[run.records["outcome"] == "success", "output_tokens"].dropna()
    times_s, tokens = token_arrivals(run)
    start_s = run.window_start_s
    steady = probing.steady_tokens_per_s(times_s, tokens, start_s, start_s + run.duration_s)
    return probing.StepResult(
        concurrency=concurrency,
        requests=m["requests"],
        successes=m["successes"],
        requests_per_s=m["requests_per_s"] or 0.0,
        output_tokens_per_s=steady,
        ttft_p50_s=m["ttft_p50_s"],
        e2e_p50_s=m["e2e_p50_s"],
        window_s=run.duration_s,
        run_dir=str(run_dir),
        rejections=m["rejections"],
        output_tokens_per_reply=float(ok_tokens.mean()) if len(ok_tokens) else None,
    )


WARM_UP_TIMEOUT_S = 300.0


def listed_model(url: str) -> str | None:
    """The first model id GET /v1/models lists, else None: then requests omit `model`, as the load
    generator's do (mlx_lm.server answers 200 with an empty body when no Hugging Face cache folder exists,
    and serves its one --model to requests without an id)."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
            return str(json.loads(response.read())["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.info("%s/v1/models lists no model (%s): requests omit 'model'", url, exc)
        return None


def warm_up(url: str, model: str | None, max_tokens: int) -> float | None:
    """Two requests of the campaign's reply length before anything is measured (a fresh server's first
    replies compile kernels); returns the second one's duration, a first guess at the single-stream E2E
    that sizes the probe's first step. Bounded by WARM_UP_TIMEOUT_S; a failure is left to the probe."""
    try:
        body = {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": max_tokens}
        if model := model or listed_model(url):
            body["model"] = model
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        elapsed_s = None
        for _ in range(2):
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=WARM_UP_TIMEOUT_S) as response:
                response.read()
            elapsed_s = time.monotonic() - started
        return elapsed_s
    except (OSError, ValueError, KeyError, IndexError) as exc:
        log.warning("warm-up request to %s failed: %s", url, exc)
        return None


def run_probe(
    campaign: camp.Campaign,
    targets: list[Target],
    urls: dict[str, str],
    hints: dict[str, float | None],
    out: Path,
    progress: Progress,
) -> probing.ProbeResult:
    results = []
    started = time.monotonic()
    growth = campaign.probe.growth
    for done, target in enumerate(targets):
        progress(f"probe {target.name}: closed loop, concurrency 1, {growth}, {growth**2}, ...")
        url = urls[target.name]

        def run_step(
            name: str,
            concurrency: int,
            warmup_s: float,
            window_s: float,
            target: Target = target,
            url=url,
        ) -> probing.StepResult:
            load = camp.LoadSpec.model_validate(
                {
                    **base_load(campaign, target),
                    "arrival": "closed",
                    "rate": None,
                    "users": concurrency,
                    "spawn_rate": None,
                    "think_time_s": 0,
                    "warmup_s": round(warmup_s, 2),
                    "duration_s": round(window_s, 1),
                }
            )
            run_dir = out / "runs" / "probe" / name / f"c{concurrency:03d}"
            if run_dir.exists():  # a repeated first step
                run_dir = run_dir.with_name(f"{run_dir.name}-{time.monotonic_ns()}")
            label = f"{name}-probe-c{concurrency}"
            run_locust(load, url, run_dir, label, out / "logs" / f"{label}.locust.log", progress)
            drain(url, load.request_timeout_s + DRAIN_EXTRA_S)
            return step_result(run_dir, concurrency)

        result = probing.probe_profile(
            target.name, campaign.probe, run_step, progress, hints.get(target.name)
        )
        if not result.single or not result.single.e2e_p50_s:
            raise RunFailed(f"probe {target.name}: no single-stream request completed; see {out / 'logs'}")
        single = result.single
        progress(
            f"probe {target.name}: one stream TTFT {1000 * (single.ttft_p50_s or 0):.0f} ms, E2E "
            f"{single.e2e_p50_s:.2f} s; saturated at {result.capacity_rps:.2f} req/s "
            f"({result.capacity_tokens_per_s:.0f} tok/s) at concurrency {result.best.concurrency}"
        )
        results.append(result)
        if left := len(targets) - done - 1:
            per_profile_s = (time.monotonic() - started) / (done + 1)
            progress(f"probe: about {left * per_profile_s / 60:.1f} min left ({left} profile(s) to go)")
    probe = probing.ProbeResult(results)
    probe.write(out)
    return probe


class Eta:
    """Time left: the planned windows of the runs still to go plus the overhead measured per run so far."""

    def __init__(self, planned_s: list[float]):
        self.planned_s = planned_s
        self.done = 0
        self.overheads: list[float] = []

    def finished(self, actual_s: float) -> None:
        self.overheads.append(max(actual_s - self.planned_s[self.done], 0.0))
        self.done += 1

    def left_s(self) -> float:
        overhead = sum(self.overheads) / len(self.overheads) if self.overheads else RUN_OVERHEAD_GUESS_S
        return sum(self.planned_s[self.done :]) + overhead * (len(self.planned_s) - self.done)


def run_sweep(
    campaign: camp.Campaign,
    targets: list[Target],
    urls: dict[str, str],
    out: Path,
    plan: sweep_report.SweepPlan,
    progress: Progress,
) -> None:
    q = plan.quantities
    runs = plan.runs()
    by_name = {t.name: t for t in targets}
    loads = [sweeping.point_load(base_load(campaign, by_name[r.profile]), campaign.sweep, r, q) for r in runs]
    eta = Eta([load.warmup_s + load.duration_s for load in loads])
    progress(
        f"sweep: {len(runs)} runs ({len(plan.rates)} rates x {len(targets)} profiles), "
        f"about {eta.left_s() / 60:.1f} min"
    )
    for i, (run, load) in enumerate(zip(runs, loads, strict=True)):
        started = time.monotonic()
        run_dir = sweep_report.sweep_dir(out, run)
        label = run.profile
        progress(
            f"sweep {i + 1}/{len(runs)}: {run.profile} at {run.rate_per_s:.2f} req/s "
            f"({run.rate_per_s / q['min_capacity_rps']:.2f}x the lowest capacity), {load.users} users, "
            f"{load.warmup_s:g} + {load.duration_s:g} s (~{run.rate_per_s * load.duration_s:.0f} arrivals)"
        )
        log_path = out / "logs" / f"sweep-{run.profile}-{run.folder}.locust.log"
        run_locust(load, urls[run.profile], run_dir, label, log_path, progress)
        drain(urls[run.profile], load.request_timeout_s + DRAIN_EXTRA_S)
        eta.finished(time.monotonic() - started)
        if sweep_report.request_count(run_dir):
            m = run_metrics(load_runs([run_dir])[0], plan.slo)
            goodput = m["goodput_requests_per_s"] or 0
            done = f"{100 * m['success_rate']:.0f} % served, goodput {goodput:.2f} req/s"
        else:
            done = "no request in the window"
        progress(f"  -> {done}; about {eta.left_s() / 60:.1f} min left")


def sweep_targets(campaign: camp.Campaign, external: Target | None) -> list[Target]:
    if external is not None:
        return [external]
    return [Target(spec.name, spec) for spec in campaign.profiles]


def reproduce_sweep(
    campaign: camp.Campaign,
    campaign_path: Path,
    out: Path,
    progress: Progress,
    report_only: bool = False,
    external: Target | None = None,
) -> report.Report:
    if report_only:
        try:
            plan = sweep_report.SweepPlan.read(out)
            probe = probing.read_probe(out)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{out}: no earlier sweep to report on ({exc})") from None
    else:
        targets = sweep_targets(campaign, external)
        budget = probing.estimated_probe_s(campaign.probe, len(targets))
        progress(
            f"campaign '{campaign.name}' ({campaign_path}): {', '.join(t.name for t in targets)}; "
            f"probe first (about {budget / 60:.1f} min), then the sweep; output {out}"
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "campaign.yaml").write_text(campaign_path.read_text(encoding="utf-8"), encoding="utf-8")
        if external is None:
            build_model(progress)
        # Every server runs for the whole campaign (the idle ones wait on their queues); a profile whose
        # limits derive from the probe is restarted once with them, after the probe.
        with contextlib.ExitStack() as stack:
            servers: dict[str, contextlib.ExitStack] = {}
            urls: dict[str, str] = {}
            hints: dict[str, float | None] = {}

            def start_all(phase: str, derived: dict[str, dict] | None = None) -> None:
                """Start (or restart) the targets' servers side by side: each loads its model alone, so
                three at once take little longer than one. Nothing is measured yet; the warm-up requests
                run one server at a time afterwards, so that no server's first reply waits on another's."""
                names = [t.name for t in targets if derived is None or t.name in derived]
                for name in names:
                    if name in servers:
                        servers.pop(name).close()  # stop it, then start it with the derived values
                    servers[name] = stack.enter_context(contextlib.ExitStack())
                progress(f"starting {len(names)} server(s) side by side ({phase}): {', '.join(names)}")
                chosen = [t for t in targets if t.name in names]

                def launch(target: Target) -> str:
                    extra = derived.get(target.name) if derived else None
                    return servers[target.name].enter_context(
                        target_server(campaign, target, out, phase, extra)
                    )

                with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
                    futures = {t.name: pool.submit(launch, t) for t in chosen}
                    failures = [f.exception() for f in futures.values() if f.exception() is not None]
                    if failures:
                        raise failures[0]  # the others stop with the stack
                    for name, future in futures.items():
                        urls[name] = future.result()
                for target in chosen:
                    max_tokens = camp.LoadSpec.model_validate(base_load(campaign, target)).max_tokens
                    hints[target.name] = warm_up(urls[target.name], target.model, max_tokens)

            start_all("probe")
            probe = run_probe(campaign, targets, urls, hints, out, progress)
            q = sweeping.with_slo(campaign, probe.quantities())
            rates = sweeping.plan_rates(campaign.sweep, q)
            plan = sweep_report.SweepPlan(
                [t.name for t in targets],
                rates,
                sweeping.comparison_point(rates, campaign.sweep, q),
                q,
                targets={t.name: t.describe(urls[t.name]) for t in targets},
                min_requests_per_point=campaign.sweep.min_requests_per_point,
                short_points={
                    str(i): round(n, 1) for i, n in sweeping.short_windows(campaign.sweep, rates).items()
                },
            )
            plan.write(out)
            progress(
                f"derived: SLO TTFT {1000 * q['slo_ttft_s']:.0f} ms, E2E {q['slo_e2e_s']:.2f} s; rates "
                f"{', '.join(f'{r:.2f}' for r in rates)} req/s; comparison at {rates[plan.comparison]:.2f}"
            )
            if plan.short_points:
                progress(
                    f"windows: {len(plan.short_points)} of {len(rates)} rates get fewer than "
                    f"{plan.min_requests_per_point} expected arrivals (max_window_s "
                    f"{campaign.sweep.max_window_s:g} s); the report says which"
                )
            derived = {
                t.name: camp.derived_overrides(t.spec, q)
                for t in targets
                if t.spec is not None and t.spec.derive and campaign.derived_limits
            }
            if derived:
                start_all("sweep", derived)
            run_sweep(campaign, targets, urls, out, plan, progress)
    progress("writing the report (curves, knees, headline, HTML)")
    built, _, _, _ = sweep_report.write(campaign, out, plan, probe)
    return built


# ---- command line ----


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrate.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--campaign", default=str(camp.DEFAULT_CAMPAIGN), help="campaign file, or a name in config/campaigns/"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: results/reproduce-TIME)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report again from the runs already in --out (with its campaign.yaml); no load",
    )
    parser.add_argument(
        "--quick", action="store_true", help="sweep campaigns: fewer rates, shorter windows (a few minutes)"
    )
    parser.add_argument(
        "--url", help="probe and sweep this OpenAI-compatible server instead of starting the profiles"
    )
    parser.add_argument(
        "--label", default="external", help="with --url: the name of that server in the report"
    )
    parser.add_argument("--model", help="with --url: the model id to send (default: the server's first)")
    parser.add_argument(
        "--real-limits",
        action="store_true",
        help="sweep campaigns: the profiles' own limits (v1.1.1's 30-60 s queue timeouts), not derived ones",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    args = parser.parse_args(argv)
    if args.report_only and args.out is None:
        parser.error("--report-only needs --out (the folder of an earlier reproduction)")
    if args.url is not None and not re.match(r"^https?://[^/\s]+", args.url):
        parser.error(f"--url {args.url!r}: give a base URL such as http://127.0.0.1:8080")
    if args.label and not re.match(r"^[A-Za-z0-9._-]+$", args.label):
        parser.error(f"--label {args.label!r}: letters, digits, '.', '_' and '-' only")
    return args


def make_progress() -> Progress:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    return progress


def run_campaign(campaign: camp.Campaign, campaign_path: Path, out: Path, progress: Progress) -> list[Path]:
    progress(
        f"campaign '{campaign.name}' ({campaign_path}): "
        f"profiles {', '.join(p.name for p in campaign.profiles)}, "
        f"{campaign.repeats} repeat(s), about {campaign.estimated_s() / 60:.1f} min; output {out}"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.yaml").write_text(campaign_path.read_text(encoding="utf-8"), encoding="utf-8")
    build_model(progress)
    run_dirs = []
    # Repeats interleave the profiles, so that a slow spell on a shared machine hits both alike.
    for rep in range(1, campaign.repeats + 1):
        for spec in campaign.profiles:
            run_dirs.append(run_profile(campaign, spec, rep, out, progress))
    return run_dirs


def existing_runs(campaign: camp.Campaign, out: Path) -> list[Path]:
    """The run folders of an earlier reproduction in `out` (for --report-only), in campaign order."""
    run_dirs = [
        out / "runs" / s.name / f"rep{r}" for r in range(1, campaign.repeats + 1) for s in campaign.profiles
    ]
    missing = [str(p) for p in run_dirs if not p.is_dir()]
    if missing:
        raise BadInput(f"{out}: no earlier runs to report on (missing {', '.join(missing)})")
    return run_dirs


def reproduce(
    campaign_path: Path,
    out: Path,
    progress: Progress,
    report_only: bool = False,
    quick: bool = False,
    external: Target | None = None,
    real_limits: bool = False,
) -> report.Report:
    campaign = camp.load_campaign(campaign_path)
    if campaign.is_sweep:
        if quick:
            campaign = campaign.quick_form()
        if real_limits:
            campaign = campaign.model_copy(update={"derived_limits": False})
        return reproduce_sweep(campaign, campaign_path, out, progress, report_only, external)
    if quick or external is not None:
        raise BadInput(f"{campaign_path}: --quick and --url need a sweep campaign (with probe, slo, sweep)")
    run_dirs = (
        existing_runs(campaign, out) if report_only else run_campaign(campaign, campaign_path, out, progress)
    )
    progress("writing the report (tables, plots, HTML)")
    runs = load_runs(run_dirs)
    stats = label_stats(runs_frame(runs))
    table, notes = headline(campaign, stats)
    lead = [
        (
            "Headline: the migration guide's table, measured",
            " ".join([headline_note(campaign), *notes]),
            table,
        )
    ]
    built = report.build(
        runs,
        out / "report",
        title=f"{' vs '.join(p.name for p in campaign.profiles)}, measured: campaign {campaign.name}",
        lead_sections=lead,
        lead_intro=campaign_lines(campaign),
    )
    text = "\n".join([md.table(table), "", *notes, ""])
    (out / "headline.md").write_text(text, encoding="utf-8")
    return built


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    out = args.out or Path("results") / f"reproduce-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    progress = make_progress()
    try:
        campaign_path = camp.find(args.campaign)
        if args.report_only and (out / "campaign.yaml").is_file():
            campaign_path = out / "campaign.yaml"  # the campaign those runs were made with
        external = Target(args.label, url=args.url, model=args.model) if args.url else None
        built = reproduce(
            campaign_path,
            out,
            progress,
            report_only=args.report_only,
            quick=args.quick,
            external=external,
            real_limits=args.real_limits,
        )
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; servers and Locust stopped", file=sys.stderr)
        return 130
    progress("done")
    print()
    print((out / "headline.md").read_text(encoding="utf-8"))
    for warning in built.warnings:
        print(f"warning: {warning}")
    print(f"report: {built.html_path}\nmarkdown: {built.markdown_path}\nruns: {out / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
