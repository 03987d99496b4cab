"""`python -m orchestrate.reproduce [--campaign FILE] [--out DIR] [--quick] [--budget-min N] [--model M]
[--url URL]`: the migration guide's comparison, measured on this machine.

Sweep campaigns (the default): builds the embedded model if needed (or serves --model); probes each
profile's capacity to its plateau; derives the SLOs and the rates from the probe; sweeps exact Poisson
loads with every profile's server running, searches the load where v1.1.1 shows the guide's mix and
bisects each knee, within the time budget; writes curves, knees and the headline, every figure with its
95 % interval (orchestrate.sweep_run, reports.sweep_report). With --url, the same probe and sweep against
an OpenAI-compatible server you started (mlx_lm.server, vLLM, ours).
Single-point campaigns (smoke, vision): each profile under one load (orchestrate.single_point).
Exit codes: 0 done, 1 a run failed (server or Locust), 2 bad campaign file or option.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import datetime
from pathlib import Path

from orchestrate import campaign as camp
from orchestrate.locust_runs import Progress, make_progress
from orchestrate.single_point import reproduce_single
from orchestrate.sweep_run import reproduce_sweep
from orchestrate.targets import CampaignTarget
from reports import report, sweep_report
from reports.errors import BadInput, ReportError
from reports.sweep_folder import PLAN_FILE
from server.models.embedded import ModelNotFoundError
from server.models.resolve import resolve_model_path

log = logging.getLogger(__name__)


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
    parser.add_argument(
        "--model",
        help="every profile serves this model (a local mlx-lm folder or a Hugging Face id already in the "
        "cache; v1.1.1's tier comes from its name); with --url: the model id to send",
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        help="sweep campaigns: minutes for the whole reproduction (default 15, --quick 4); more gives "
        "longer runs and narrower intervals",
    )
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
    if args.model and args.url is None and not args.model.startswith("embedded:"):
        try:  # before any server starts: a model the servers cannot load is an option error, not a run's
            resolve_model_path(args.model)
        except ModelNotFoundError as exc:
            parser.error(f"--model: {exc}")
    if args.budget_min is not None and not 1 <= args.budget_min <= 600:
        parser.error(f"--budget-min {args.budget_min:g}: give minutes between 1 and 600")
    return args


def reproduce(
    campaign_path: Path,
    out: Path,
    progress: Progress,
    report_only: bool = False,
    quick: bool = False,
    external: CampaignTarget | None = None,
    real_limits: bool = False,
    model: str | None = None,
    budget_min: float | None = None,
) -> report.Report:
    if report_only and (out / PLAN_FILE).is_file():  # a sweep folder describes itself: no campaign needed
        progress("writing the report (curves, knees, guide point, headline, HTML)")
        return sweep_report.write(out)
    campaign = camp.load_campaign(campaign_path)
    if campaign.is_sweep:
        if quick:
            campaign = campaign.quick_form()
        if real_limits:
            campaign = campaign.model_copy(update={"derived_limits": False})
        if budget_min is not None:
            sweep = campaign.sweep_spec.model_copy(update={"budget_min": budget_min})
            campaign = campaign.model_copy(update={"sweep": sweep})
        return reproduce_sweep(campaign, campaign_path, out, progress, report_only, external, model)
    if quick or external is not None or model is not None or budget_min is not None:
        raise BadInput(
            f"{campaign_path}: --quick, --url, --model and --budget-min need a sweep campaign "
            "(probe, slo, sweep)"
        )
    return reproduce_single(campaign, campaign_path, out, progress, report_only)


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
        external = CampaignTarget(args.label, url=args.url, model=args.model) if args.url else None
        model = None if args.url else args.model
        built = reproduce(
            campaign_path,
            out,
            progress,
            report_only=args.report_only,
            quick=args.quick,
            external=external,
            real_limits=args.real_limits,
            model=model,
            budget_min=args.budget_min,
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
