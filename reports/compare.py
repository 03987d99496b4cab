"""`python -m reports.compare RUN_DIR [RUN_DIR ...] [--out DIR]`: tables, plots and an HTML report;
`python -m reports.compare --gate config/gates.yaml [BASELINE] CANDIDATE`: a CI performance gate;
`python -m reports.compare --history POINT [POINT ...]`: change points of the gated figures over a series
(reports/history.py; a single folder of dated runs also works).

A RUN_DIR is a run folder or a folder of run folders (its repeats). Exit codes: 0 pass, 1 regression
(gate mode), 2 bad input or runs the gate refuses to judge (the message names the file and the problem),
3 inconclusive (gate mode: the repeats cannot tell a change from noise; not a pass).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from reports import gate, history, report
from reports import markdown as md
from reports.errors import BadInput, RegressionFound, ReportError
from reports.metrics import label_stats, runs_frame
from reports.runs import load_runs
from reports.tables import summary_cells
from runfolder.figures import Slo

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reports.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders of run folders")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: results/report-TIME or results/gate-TIME)"
    )
    parser.add_argument("--title", default="Serving benchmark comparison", help="report title")
    parser.add_argument(
        "--gate",
        type=Path,
        metavar="GATES_YAML",
        help="gate mode: [BASELINE] CANDIDATE against these thresholds",
    )
    parser.add_argument("--slo-ttft-ms", type=float, help="goodput SLO on TTFT (default: the run's own SLO)")
    parser.add_argument("--slo-tpot-ms", type=float, help="goodput SLO on TPOT")
    parser.add_argument("--slo-e2e-ms", type=float, help="goodput SLO on end-to-end latency")
    parser.add_argument(
        "--shape-of",
        type=Path,
        action="append",
        metavar="RUN_DIR",
        help="gate mode: refuse a candidate whose workload differs from these runs' (a committed baseline)",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="gate mode: skip the tables and plots report"
    )
    parser.add_argument(
        "--history",
        action="store_true",
        help="history mode: change points over the RUN_DIRs in order (or the dated runs of one folder)",
    )
    parser.add_argument(
        "--permutations", type=int, default=499, help="history mode: permutations of the significance test"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.01, help="history mode: a change point needs p below this (0.01)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser.parse_args(argv)


def _slo(args: argparse.Namespace) -> Slo | None:
    values = [
        v / 1000 if v is not None else None for v in (args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)
    ]
    slo = Slo(*values)
    return slo if slo.any() else None


def _default_out(kind: str) -> Path:
    return Path("results") / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_compare(args: argparse.Namespace) -> int:
    runs = load_runs(args.runs)
    out = args.out or _default_out("report")
    built = report.build(runs, out, title=args.title, slo=_slo(args))
    assert built.tables is not None  # built from runs
    print(md.table(summary_cells(built.tables.summary)))
    for warning in built.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nreport: {built.html_path}\nmarkdown: {built.markdown_path}\ntables and plots: {out}")
    return 0


def run_history(args: argparse.Namespace) -> int:
    if args.gate:
        raise BadInput("--history and --gate are two modes: give one")
    if args.permutations < 99:
        raise BadInput(f"--permutations must be at least 99 (p can then reach 0.01), got {args.permutations}")
    missing = [p for p in args.runs if not Path(p).is_dir()]
    if missing:
        raise BadInput(f"--history: no such folder: {', '.join(missing)}")
    out = args.out or _default_out("history")
    if not 0 < args.alpha < 1:
        raise BadInput(f"--alpha must be between 0 and 1, got {args.alpha}")
    paths = [Path(p) for p in args.runs]
    text = history.run_history(paths, out, alpha=args.alpha, permutations=args.permutations)
    print(text)
    print(f"\nhistory outputs: {out} (history.md, history.json, history.png)")
    _write_step_summary(text)
    return 0


def _write_step_summary(text: str) -> None:
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        with open(summary_file, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")


def run_gate(args: argparse.Namespace) -> int:
    if len(args.runs) > 2:
        raise BadInput(f"--gate takes [BASELINE] CANDIDATE, got {len(args.runs)} paths: {args.runs}")
    config = gate.load_config(args.gate)
    *base_paths, cand_path = args.runs
    cand_runs = load_runs([cand_path])
    base_runs = load_runs(base_paths) if base_paths else []
    reference = load_runs(args.shape_of) if args.shape_of else None
    out = args.out or _default_out("gate")
    base_name = base_paths[0] if base_paths else None
    cand = label_stats(runs_frame(cand_runs, _slo(args)))
    try:
        result = gate.evaluate(config, cand_runs, base_runs or None, reference)
    except gate.Refused as exc:
        text = gate.refused_markdown(exc.problems, args.gate, cand_path, base_name)
        gate.write_outputs(out, "refused", [], text, cand, problems=exc.problems)
        print(text)
        _write_step_summary(text)
        raise
    text = gate.to_markdown(result, args.gate, cand_path, base_name)
    gate.write_outputs(out, result.verdict, result.checks, text, cand, diagnoses=result.diagnoses)
    if not args.no_report:  # the full comparison goes beside the verdict, for the CI artifact
        report.build(
            [*base_runs, *cand_runs], out / "report", title="Performance gate: runs compared", slo=_slo(args)
        )
    print(text)
    _write_step_summary(text)
    print(f"gate outputs: {out} (gate.md, gate.json, benchmark-bigger.json, benchmark-smaller.json)")
    if result.verdict == "fail":
        failed = [f"{c.label}: {c.gate}" for c in result.checks if c.verdict == "fail"]
        message = f"performance gate failed: {', '.join(failed)}"
        if result.diagnoses:
            message += " (the offered load may be the cause: see the diagnosis)"
        raise RegressionFound(message)
    if result.verdict == "inconclusive":
        undecided = [f"{c.label}: {c.gate}" for c in result.checks if c.verdict == "inconclusive"]
        raise gate.Inconclusive(f"performance gate inconclusive (not a pass): {', '.join(undecided)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.history:
            return run_history(args)
        return run_gate(args) if args.gate else run_compare(args)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
