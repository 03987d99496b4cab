"""Running the capacity probe: each target's closed-loop steps as Locust runs (orchestrate.probe decides
which), and each step's figures read from its run folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from orchestrate import campaign as camp
from orchestrate import probe as probing
from orchestrate.locust_runs import DRAIN_EXTRA_S, Progress, drain, run_campaign_load
from orchestrate.targets import CampaignTarget, base_load
from reports.errors import RunFailed
from reports.intervals import rate_interval
from reports.metrics import run_metrics, token_arrivals
from reports.runs import load_runs
from runfolder.folder import SUMMARY_FILE

log = logging.getLogger(__name__)


def request_count(run_dir: Path) -> int:
    """The requests a run folder's summary counts (0 when it has none, or no summary)."""
    try:
        return int(json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8")).get("requests") or 0)
    except (OSError, ValueError):
        return 0


def step_result(run_dir: Path, concurrency: int) -> probing.StepResult:
    if request_count(run_dir) == 0:  # nothing measured (e.g. one slow first reply): zeros
        return probing.StepResult(concurrency, 0, 0, 0.0, 0.0, None, None, 0.0, str(run_dir))
    (run,) = load_runs([run_dir])
    m = run_metrics(run)
    ok_tokens = run.records.loc[run.records["outcome"] == "success", "output_tokens"].dropna()
    times_s, tokens = token_arrivals(run)
    start_s, end_s = run.window_start_s, run.window_start_s + run.duration_s
    steady = probing.steady_tokens_per_s(times_s, tokens, start_s, end_s)
    # The interval over the same span (from the first token on), batch means of ten sub-windows.
    inside = times_s[(times_s >= start_s) & (times_s < end_s)]
    first_s = max(start_s, float(inside.min())) if inside.size else start_s
    interval = rate_interval(times_s, tokens, first_s, end_s)
    half = (interval.high - interval.low) / 2  # centred on the steady figure, which skips the first chunk
    known = half == half  # not NaN
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
        output_tokens_per_s_low=max(0.0, steady - half) if known else None,
        output_tokens_per_s_high=steady + half if known else None,
    )


def run_probe(
    campaign: camp.Campaign,
    targets: list[CampaignTarget],
    urls: dict[str, str],
    hints: dict[str, float | None],
    out: Path,
    progress: Progress,
) -> probing.ProbeResult:
    results = []
    started = time.monotonic()
    growth = campaign.probe_spec.growth
    for done, target in enumerate(targets):
        progress(f"probe {target.name}: closed loop, concurrency 1, {growth}, {growth**2}, ...")
        url = urls[target.name]

        def run_step(
            name: str,
            concurrency: int,
            warmup_s: float,
            window_s: float,
            target: CampaignTarget = target,
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
            run_campaign_load(load, url, run_dir, label, out / "logs" / f"{label}.locust.log", progress)
            drain(url, load.request_timeout_s + DRAIN_EXTRA_S)
            return step_result(run_dir, concurrency)

        result = probing.probe_profile(
            target.name, campaign.probe_spec, run_step, progress, hints.get(target.name)
        )
        if not result.single or not result.single.e2e_p50_s:
            raise RunFailed(f"probe {target.name}: no single-stream request completed; see {out / 'logs'}")
        single = result.single
        progress(
            f"probe {target.name}: one stream TTFT {1000 * (single.ttft_p50_s or 0):.0f} ms, E2E "
            f"{single.e2e_p50_s:.2f} s; saturated at {result.capacity_rps:.2f} req/s "
            f"({result.capacity_tokens_per_s:.0f} tok/s{_interval_text(result)}) at concurrency "
            f"{result.best.concurrency if result.best else '-'}"
        )
        results.append(result)
        if left := len(targets) - done - 1:
            per_profile_s = (time.monotonic() - started) / (done + 1)
            progress(f"probe: about {left * per_profile_s / 60:.1f} min left ({left} profile(s) to go)")
    probe = probing.ProbeResult(results)
    probe.write(out)
    return probe


def _interval_text(result: probing.ProfileProbe) -> str:
    low, high = result.capacity_interval_rps()
    return f", 95 % interval {low:.2f}-{high:.2f} req/s" if low is not None and high is not None else ""
