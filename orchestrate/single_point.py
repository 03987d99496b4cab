"""Single-point campaigns (smoke, vision): each profile under one load, repeated, and the guide's table
from those runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from orchestrate import campaign as camp
from orchestrate.locust_runs import Progress, build_model, run_campaign_load, warm_up
from orchestrate.processes import ServerFailed, running_server
from reports import markdown as md
from reports import report
from reports.errors import BadInput, RunFailed
from reports.metrics import label_stats, runs_frame
from reports.runs import load_runs

log = logging.getLogger(__name__)


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
            run_campaign_load(
                load, url, run_dir, spec.name, logs / f"{spec.name}-rep{rep}.locust.log", progress
            )
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


def reproduce_single(
    campaign: camp.Campaign, campaign_path: Path, out: Path, progress: Progress, report_only: bool
) -> report.Report:
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
