"""Measure the run-to-run noise the performance gate must tolerate, on this machine, for real.

    python benchmarks/gate_noise.py [--repeats 6] [--duration-s 30] [--out benchmarks/gate_noise.json]

Runs the gate's own campaign (config/perf-gate-campaign.yaml: the real server, real Locust) `--repeats`
times in a row through `python -m orchestrate.reproduce`, each run with a fresh server, then prints and writes
the coefficient of variation of each gated figure over the runs (`cv`, on the log scale) and between
consecutive runs (`pair_cv`: the std of the log ratio of runs 1-2, 3-4, ... divided by sqrt 2, what an
interleaved baseline/candidate pair sees). benchmarks/gate_power.py draws its synthetic repeats with these
figures, and config/gates.yaml's `noise` section is set from them. The machine is whatever it is when this
runs (shared with other work here): that is the noise CI sees.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reports.evidence import run_figures  # noqa: E402
from reports.runs import load_runs  # noqa: E402

CAMPAIGN = REPO / "config" / "perf-gate-campaign.yaml"
FIGURES = ("output_tokens_per_s", "ttft_p95_s")


def noise_of(values: list[float]) -> dict[str, float | None]:
    logs = np.log(np.asarray(values, dtype=float))
    pairs = logs[1 : len(logs) // 2 * 2 : 2] - logs[0 : len(logs) // 2 * 2 : 2]
    return {
        "mean": float(np.mean(values)),
        "cv": float(np.std(logs, ddof=1)),
        "pair_cv": float(np.std(pairs, ddof=1) / np.sqrt(2)) if len(pairs) >= 2 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--duration-s", type=float, default=None, help="measured window (default: campaign's)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gate_noise.json")
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--from-runs",
        type=Path,
        metavar="OUT",
        help="no load: measure the runs of an earlier `python -m orchestrate.reproduce --out OUT`",
    )
    args = parser.parse_args()
    campaign = yaml.safe_load(CAMPAIGN.read_text(encoding="utf-8"))
    campaign["repeats"] = args.repeats
    if args.duration_s:
        campaign["load"]["duration_s"] = args.duration_s
    with tempfile.TemporaryDirectory() as tmp:
        work = args.from_runs or args.runs_dir or Path(tmp)
        if args.from_runs:
            campaign = yaml.safe_load((work / "campaign.yaml").read_text(encoding="utf-8"))
        else:
            campaign_path = Path(tmp) / "noise-campaign.yaml"
            campaign_path.write_text(yaml.safe_dump(campaign), encoding="utf-8")
            command = [sys.executable, "-m", "orchestrate.reproduce", "--campaign", str(campaign_path)]
            subprocess.run([*command, "--out", str(work)], cwd=REPO, check=True)
        runs = load_runs(sorted((work / "runs").glob("*/rep*"), key=lambda p: int(p.name[3:])))
        per_run = [run_figures(r) for r in runs]
    result = {
        "computed_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs_from_utc": datetime.fromtimestamp(min(f.started_ts_s for f in per_run), UTC).isoformat(),
        "runs_to_utc": datetime.fromtimestamp(max(f.started_ts_s for f in per_run), UTC).isoformat(),
        "command": "python benchmarks/gate_noise.py " + " ".join(sys.argv[1:]),
        "load_command": (
            f"python -m orchestrate.reproduce --campaign CAMPAIGN --out {args.from_runs or 'TMP'}"
        ),
        "campaign": str(CAMPAIGN.relative_to(REPO)),
        "load": campaign["load"],
        "repeats": len(per_run),
        "note": "2-core development machine shared with other agents' work while measured",
        "runs": [{"requests": f.requests, **{k: getattr(f, k) for k in FIGURES}} for f in per_run],
        "noise": {k: noise_of([getattr(f, k) for f in per_run]) for k in FIGURES},
    }
    # The file keeps every measurement (newest last); one made with the same command is replaced.
    known = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {"measurements": []}
    known["measurements"] = [m for m in known["measurements"] if m["command"] != result["command"]]
    known["measurements"].append(result)
    args.out.write_text(json.dumps(known, indent=2) + "\n", encoding="utf-8")
    for key, figures in result["noise"].items():
        print(f"{key}: mean {figures['mean']:.4g}, cv {figures['cv']:.3f}, pair_cv {figures['pair_cv']}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
