"""`python -m reports.reproduce [--campaign FILE] [--out DIR]`: the migration guide's comparison, measured.

Builds the embedded model if needed; then, for each repeat and each profile of the campaign, starts the
server with that profile, runs the campaign's Locust load against it (a subprocess), stops the server;
finally writes the report with the guide's claimed figures beside the measured ones.
Exit codes: 0 done, 1 a run failed (server or Locust), 2 bad campaign file.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd

from benchcore.rundir import SUMMARY_FILE
from reports import campaign as camp
from reports import markdown as md
from reports import report
from reports.errors import BadInput, ReportError, RunFailed
from reports.load import load_runs
from reports.metrics import label_stats, runs_frame

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_AGGREGATED = re.compile(r"Aggregated\s+(\d+)\s+(\d+)\(")
PROGRESS_EVERY_S = 10.0
EXTRA_WALL_S = 90.0  # beyond run time and stop timeout, before a hung Locust is killed


def build_model(progress: Progress) -> None:
    progress("checking the embedded model (built once, offline)")
    result = subprocess.run(
        [sys.executable, "-m", "server.models", "build"],
        cwd=camp.REPO,
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
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(camp.REPO / "loadtest"),
        *load.locust_args(host, run_dir, label),
    ]
    log.info("running %s", " ".join(command))
    seen = {"requests": 0, "failures": 0}
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            command, cwd=camp.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )

        def pump() -> None:
            for line in process.stdout:  # type: ignore[union-attr]
                log_file.write(line)
                if match := _AGGREGATED.search(line):
                    seen["requests"], seen["failures"] = int(match.group(1)), int(match.group(2))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        total_s = load.warmup_s + load.duration_s
        started = time.monotonic()
        deadline = started + total_s + load.request_timeout_s + EXTRA_WALL_S
        try:
            while process.poll() is None:
                try:
                    process.wait(PROGRESS_EVERY_S)
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    phase = "warming up" if elapsed < load.warmup_s else "measuring"
                    if elapsed > total_s:
                        phase = "letting in-flight requests finish"
                    progress(
                        f"  {label}: {min(elapsed, total_s):.0f}/{total_s:.0f} s {phase}; "
                        f"{seen['requests']} requests, {seen['failures']} not successful so far"
                    )
                    if time.monotonic() > deadline:
                        raise RunFailed(f"Locust did not finish in time; log: {log_path}") from None
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
            reader.join(5)
    # Locust exits 1 whenever a request failed, which is the point of the v1.1.1 run: judge by the folder.
    if not (run_dir / SUMMARY_FILE).is_file():
        raise RunFailed(
            f"Locust wrote no run folder (exit code {process.returncode}); log {log_path}:\n{_tail(log_path)}"
        )


def run_profile(
    campaign: camp.Campaign, spec: camp.ProfileSpec, rep: int, out: Path, progress: Progress
) -> Path:
    from server.launch import running_server  # the one place reports starts a server

    load = campaign.load_for(spec)
    overlay = camp.write_overlay(spec, out / "server")
    run_dir = out / "runs" / spec.name / f"rep{rep}"
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server_log = logs / f"{spec.name}-rep{rep}.server.log"
    progress(f"{spec.name} (repeat {rep}/{campaign.repeats}): starting the server, profile {spec.profile}")
    try:
        with running_server(
            campaign.config_path, extra_args=["--profile", str(overlay)], log_file=server_log
        ) as url:
            load_text = (
                f"{load.users} users" if load.arrival == "closed" else f"{load.rate:g} req/s {load.arrival}"
            )
            progress(
                f"{spec.name}: server ready at {url}; load {load_text}, max_tokens {load.max_tokens}, "
                f"{load.warmup_s:g} s warm-up + {load.duration_s:g} s measured"
            )
            run_locust(load, url, run_dir, spec.name, logs / f"{spec.name}-rep{rep}.locust.log", progress)
    except RuntimeError as exc:  # running_server: did not start or not healthy
        raise RunFailed(f"{spec.name}: {exc}; server log {server_log}:\n{_tail(server_log)}") from None
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


# ---- command line ----


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reports.reproduce",
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    args = parser.parse_args(argv)
    if args.report_only and args.out is None:
        parser.error("--report-only needs --out (the folder of an earlier reproduction)")
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


def reproduce(campaign_path: Path, out: Path, progress: Progress, report_only: bool = False) -> report.Report:
    campaign = camp.load_campaign(campaign_path)
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
        built = reproduce(campaign_path, out, progress, report_only=args.report_only)
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
