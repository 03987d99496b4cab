"""How often the gate's relative test (reports/stats.py) raises a false alarm, and how often it catches a
real regression, with synthetic repeats drawn at the noise measured on this machine.

    python benchmarks/gate_power.py [--trials 4000] [--noise benchmarks/gate_noise.json] [--figure ...]

For each measurement in benchmarks/gate_noise.json (real repeated runs of the gate's campaign, see
benchmarks/gate_noise.py), draws baseline and candidate repeats on the log scale: one repeat per side is
two independent runs (noise `cv`); with 3 or 5 repeats the runs are interleaved, as scripts/perf-gate
makes them, so each pair shares a slow spell (`cv`) and differs by `pair_cv`. The candidate is worse by
0, 5, 10 or 20 % (throughput lower, TTFT higher). The test runs with the thresholds and confidence of
config/gates.yaml and with that measurement's noise as its prior (as if gates.yaml were set from it).
Prints the share of trials that fail (at 0 %: false alarms) and the share left inconclusive.
Goal (issue 14): false alarms <= 5 %; a 10 % throughput drop caught >= 80 % of the time with 5 repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reports import stats  # noqa: E402
from reports.gate import load_config  # noqa: E402

EFFECTS_PCT = (0, 5, 10, 20)
REPEATS = (1, 3, 5)
THRESHOLD_KEY = {"output_tokens_per_s": "max_throughput_drop_pct", "ttft_p95_s": "max_ttft_p95_rise_pct"}


def draw(rng: np.random.Generator, n: int, cv: float, pair_cv: float, worse_log: float) -> tuple:
    """n runs per side on the log scale; the candidate's runs are `worse_log` worse."""
    if n == 1:
        base, cand = rng.normal(0, cv, 1), rng.normal(worse_log, cv, 1)
    else:
        shared_sd = math.sqrt(max(cv**2 - pair_cv**2, 0.0))
        spell = rng.normal(0, shared_sd, n)
        base, cand = spell + rng.normal(0, pair_cv, n), spell + worse_log + rng.normal(0, pair_cv, n)
    return base, cand


def rates(figure: str, cv: float, pair_cv: float, trials: int, seed: int, gates_path: Path) -> dict:
    config = load_config(gates_path)
    threshold = getattr(config.relative, THRESHOLD_KEY[figure])
    higher = figure == "output_tokens_per_s"
    prior = stats.NoisePrior(cv=cv, pair_cv=pair_cv, df=config.noise.prior_df)
    rng = np.random.default_rng(seed)
    table = {}
    for n in REPEATS:
        for effect in EFFECTS_PCT:
            step = -math.log(1 - effect / 100) if higher else math.log(1 + effect / 100)
            fails = undecided = 0
            for _ in range(trials):
                b, c = draw(rng, n, cv, pair_cv, step)
                sign = -1.0 if higher else 1.0  # worse: throughput falls, TTFT rises
                result = stats.compare(
                    np.exp(sign * b),
                    np.exp(sign * c),
                    higher_is_better=higher,
                    threshold_pct=threshold,
                    alpha=1 - config.relative.confidence,
                    prior=prior,
                    paired=n > 1,
                )
                fails += result.verdict == "fail"
                undecided += result.verdict == "inconclusive"
            table[(n, effect)] = (fails / trials, undecided / trials)
    return {"threshold_pct": threshold, "table": table}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=Path, default=REPO / "benchmarks" / "gate_noise.json")
    parser.add_argument("--gates", type=Path, default=REPO / "config" / "gates.yaml")
    parser.add_argument("--figure", choices=sorted(THRESHOLD_KEY), action="append")
    args = parser.parse_args()
    measurements = json.loads(args.noise.read_text(encoding="utf-8"))["measurements"]
    for figure in args.figure or ["output_tokens_per_s", "ttft_p95_s"]:
        for m in measurements:
            noise = m["noise"][figure]
            cv, pair_cv = noise["cv"], noise["pair_cv"] or noise["cv"]
            result = rates(figure, cv, pair_cv, args.trials, args.seed, args.gates)
            load = m["load"]
            print(
                f"\n{figure}, threshold {result['threshold_pct']:g} %: noise cv {100 * cv:.1f} %, "
                f"pair_cv {100 * pair_cv:.1f} %, measured {m['runs_from_utc'][:16]} "
                f"({m['repeats']} runs, {load['users']} users, {load['duration_s']:g} s; {m['command']})"
            )
            head = "| repeats per side | " + " | ".join(
                f"{e} % worse: fail (inconclusive)" if e else "0 %: false alarm (inconclusive)"
                for e in EFFECTS_PCT
            )
            print(head + " |")
            print("|---:|" + "---:|" * len(EFFECTS_PCT))
            for n in REPEATS:
                cells = [
                    f"{100 * f:.1f} % ({100 * u:.0f} %)"
                    for f, u in (result["table"][(n, e)] for e in EFFECTS_PCT)
                ]
                print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
