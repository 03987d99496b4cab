"""Which figures the CI gate should judge by: the noise of each candidate figure, measured on real A/A gate
jobs (this checkout's server on both sides, scripts/perf-gate without --base-ref), per block and per
second of load.

    python benchmarks/gate_noise.py JOB [JOB ...]        # gate job folders (each with base/ and cand/)
    python benchmarks/gate_noise.py --run 3        # make 3 A/A jobs first (scripts/perf-gate), then measure

For each figure and job: the per-block noise sigma = std of the paired log ratios / sqrt 2 (a block's own
share of a pair's difference, on the log scale, as the gate's test uses it) and sigma x sqrt(block
seconds), the noise per run-second: the figure with the lowest noise per second of load decides most per
minute of CI. Printed as the median over the jobs with their range. Candidates: wall-clock output tok/s
(the gate's user-facing figure), TTFT p50 and p95 per block, the mean TTFT, TPOT p50, and the server's CPU
seconds per output token (server_usage.json). The server exposes no decode-step duration (only a count,
mlxserving_decode_steps_total), so step time is not a candidate.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reports import evidence as ev  # noqa: E402
from reports.runs import load_runs  # noqa: E402
from runfolder.frame import RunData  # noqa: E402


def _ttft_quantile(q: float):
    def figure(run: RunData) -> float:
        return float(np.percentile(ev.ttft_values_s(run), q))

    return figure


def _tpot_p50(run: RunData) -> float:
    ok = run.records["outcome"].astype(str) == "success"
    return float(np.nanmedian(run.records.loc[ok, "tpot_s"].to_numpy(dtype=float)))


CANDIDATES = {
    "output tok/s (wall clock)": lambda run: ev.run_figures(run).output_tokens_per_s,
    "server CPU-s per output token": ev.cpu_per_output_token,
    "TTFT mean": lambda run: float(np.mean(ev.ttft_values_s(run))),
    "TTFT p50": _ttft_quantile(50),
    "TTFT p95": _ttft_quantile(95),
    "TPOT p50": _tpot_p50,
}


def block_noise(job: Path) -> tuple[dict[str, float], float]:
    """Per-block noise of each candidate in one A/A job, and the block's measured seconds."""
    base = sorted(load_runs([job / "base"]), key=lambda r: r.window_start_s)
    cand = sorted(load_runs([job / "cand"]), key=lambda r: r.window_start_s)
    block_s = float(np.median([r.duration_s for r in base + cand]))
    noise = {}
    for name, figure in CANDIDATES.items():
        b = np.log([figure(r) for r in base])
        c = np.log([figure(r) for r in cand])
        noise[name] = float(np.std(c - b, ddof=1) / math.sqrt(2))
    return noise, block_s


def make_jobs(count: int, out: Path) -> list[Path]:
    jobs = []
    for i in range(1, count + 1):
        job = out / f"aa{i:02d}"
        subprocess.run([str(REPO / "scripts" / "perf-gate"), "--out", str(job), "--no-report"], cwd=REPO)
        jobs.append(job)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", nargs="*", type=Path, help="A/A gate job folders (base/ and cand/ inside)")
    parser.add_argument("--run", type=int, default=0, help="make this many A/A jobs first")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "gate-noise")
    args = parser.parse_args(argv)
    jobs = list(args.jobs) + (make_jobs(args.run, args.out) if args.run else [])
    missing = [str(j) for j in jobs if not (j / "base").is_dir() or not (j / "cand").is_dir()]
    if not jobs or missing:
        parser.error(f"give A/A gate job folders with base/ and cand/ (or --run N); not such: {missing}")
    measured = [block_noise(job) for job in jobs]
    block_s = float(np.median([s for _, s in measured]))
    print(f"{len(jobs)} A/A job(s); blocks of {block_s:.1f} s measured; median [min-max] over the jobs\n")
    print("| figure | noise per block | noise per run-second (x sqrt(block s)) |")
    print("|---|---|---|")
    rows = []
    for name in CANDIDATES:
        values = np.array([noise[name] for noise, _ in measured]) * 100
        per_s = values * math.sqrt(block_s)
        rows.append((float(np.median(per_s)), name, values, per_s))
    for _, name, values, per_s in sorted(rows):
        print(
            f"| {name} | {np.median(values):.1f} % [{values.min():.1f}-{values.max():.1f}] "
            f"| {np.median(per_s):.1f} % [{per_s.min():.1f}-{per_s.max():.1f}] |"
        )
    (args.out).mkdir(parents=True, exist_ok=True)
    payload = {"jobs": [str(j) for j in jobs], "block_s": block_s, "noise": [n for n, _ in measured]}
    (args.out / "gate-noise.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
