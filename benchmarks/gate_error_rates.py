"""The CI gate's error rates, measured on real runs: whole `scripts/perf-gate` jobs (the workflow's own
settings: config/perf-gate-campaign.yaml, config/gates.yaml), repeated under each condition, counted by
verdict.

Conditions: `aa` (this checkout on both sides: an unchanged pull request), `slow10` / `slow20` (the
candidate's server made 10 % / 20 % slower on purpose: config/testing/slowdown-*.yaml), `aa-busy` (A/A with
one busy-loop process per core running beside the whole job: a noisy runner). The runs of all conditions
are interleaved, so that a slow spell of the machine is spread over the conditions, not given to one.

    python benchmarks/gate_error_rates.py --plan aa=10 slow10=10 slow20=5 aa-busy=10 \
        --out results/gate-error-rates

Prints the table of counts (pass / fail / inconclusive per condition, how many were decided by the CPU
stand-in, the job's wall time) and writes runs.jsonl (one line per job) and table.md in --out. --summarize
re-reads runs.jsonl without running anything; --regate judges every job's kept runs again with the current
gates file and code (the runs are the evidence; the verdict is a function of them), into regated.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Condition:
    profile: str | None  # the candidate's testing overlay
    busy: bool  # one busy-loop process per core beside the whole job
    what: str


CONDITIONS = {
    "aa": Condition(None, False, "A/A (unchanged)"),
    "slow10": Condition("config/testing/slowdown-10.yaml", False, "10 % slower candidate"),
    "slow20": Condition("config/testing/slowdown-20.yaml", False, "20 % slower candidate"),
    "aa-busy": Condition(None, True, "A/A, a busy loop per core beside"),
}
BUSY_LOOP = "while True: pass"


def interleave(plan: dict[str, int]) -> list[str]:
    """Round-robin over the conditions until each has its count."""
    left, order = dict(plan), []
    while any(left.values()):
        for name in plan:
            if left[name]:
                order.append(name)
                left[name] -= 1
    return order


def verdict_row(row: dict, verdict_path: Path) -> dict:
    """The gate's verdict and its relative checks, from gate.json, into the job's row."""
    verdict = json.loads(verdict_path.read_text())
    row["verdict"] = verdict["verdict"]
    for check in verdict["checks"]:
        if check["gate"].startswith("max_") and check["gate"].endswith("_pct"):
            row[check["gate"]] = {
                "verdict": check["verdict"],
                "worse_pct": check["value"],
                "detail": check["detail"],
            }
    throughput = row.get("max_throughput_drop_pct", {})
    row["decided_by_cpu"] = "CPU per output token decides" in throughput.get("detail", "")
    return row


def regate(job: Path, row: dict, gates: Path, skip_pairs: int) -> dict:
    """The job's kept runs judged again by the current gate (exactly as scripts/perf-gate calls it),
    leaving out its first `skip_pairs` pairs: a job made without the block runner's warm-up pair then
    counts as one made with it (the same blocks, run in the same order)."""
    out = job / "regate"
    sides = []
    for side in ("base", "cand"):
        kept = job / "regate-in" / side
        if kept.parent.exists():
            shutil.rmtree(kept.parent / side, ignore_errors=True)
        kept.mkdir(parents=True)
        for block in sorted((job / side).glob("block*")):
            if block.is_dir() and int(block.name.removeprefix("block")) > skip_pairs:
                shutil.copytree(block, kept / block.name)
        sides.append(str(kept))
    cmd = [sys.executable, "-m", "reports.compare", "--gate", str(gates), *sides]
    cmd += ["--shape-of", str(REPO / "benchmarks" / "gate_baseline"), "--no-report", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    fresh = {k: row[k] for k in ("condition", "wall_s", "job")}
    fresh["exit_code"] = result.returncode
    return verdict_row(fresh, out / "gate.json")


def run_job(condition: str, out: Path) -> dict:
    spec = CONDITIONS[condition]
    cmd = [str(REPO / "scripts" / "perf-gate"), "--out", str(out), "--no-report"]
    if spec.profile:
        cmd += ["--cand-profile", spec.profile]
    busy = []
    if spec.busy:
        busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 1)]
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    wall_s = time.monotonic() - started
    row: dict = {"condition": condition, "exit_code": result.returncode, "wall_s": round(wall_s, 1)}
    verdict_path = out / "gate" / "gate.json"
    if verdict_path.is_file():
        verdict_row(row, verdict_path)
    else:
        row["verdict"] = "no-verdict"
        row["stderr_tail"] = result.stderr[-1500:]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| condition | jobs | pass | fail | inconclusive | other | decided by CPU/token "
        "| job wall time (median, range) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, spec in CONDITIONS.items():
        mine = [r for r in rows if r["condition"] == name]
        if not mine:
            continue
        count = {v: sum(r["verdict"] == v for r in mine) for v in ("pass", "fail", "inconclusive")}
        other = len(mine) - sum(count.values())
        walls = sorted(r["wall_s"] for r in mine)
        median = walls[len(walls) // 2]
        lines.append(
            f"| {name}: {spec.what} | {len(mine)} | {count['pass']} | {count['fail']} | "
            f"{count['inconclusive']} | {other} | {sum(bool(r.get('decided_by_cpu')) for r in mine)} | "
            f"{median / 60:.1f} min ({walls[0] / 60:.1f}-{walls[-1] / 60:.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", nargs="+", default=["aa=10", "slow10=10", "slow20=5", "aa-busy=10"])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "gate-error-rates")
    parser.add_argument("--summarize", action="store_true", help="only print the table of runs.jsonl")
    parser.add_argument("--regate", action="store_true", help="judge the kept runs again (current gate)")
    parser.add_argument("--gates", type=Path, default=REPO / "config" / "gates.yaml")
    parser.add_argument("--skip-pairs", type=int, default=0, help="--regate: leave out the first N pairs")
    args = parser.parse_args(argv)
    plan: dict[str, int] = {}
    for item in args.plan:
        name, _, count = item.partition("=")
        if name not in CONDITIONS or not count.isdigit():
            parser.error(f"--plan {item!r}: expected CONDITION=COUNT, CONDITION one of {list(CONDITIONS)}")
        plan[name] = int(count)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "runs.jsonl"
    if not args.summarize:
        done = len(log_path.read_text().splitlines()) if log_path.is_file() else 0
        for index, condition in enumerate(interleave(plan), start=done + 1):
            row = run_job(condition, args.out / f"job{index:03d}-{condition}")
            row["job"] = index
            with log_path.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(row) + "\n")
            print(f"job {index} {condition}: {row['verdict']} in {row['wall_s']:.0f} s", flush=True)
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if args.regate:
        rows = [
            regate(args.out / f"job{r['job']:03d}-{r['condition']}", r, args.gates, args.skip_pairs)
            for r in rows
        ]
        with (args.out / "regated.jsonl").open("w", encoding="utf-8") as sink:
            sink.writelines(json.dumps(r) + "\n" for r in rows)
    text = table(rows)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
