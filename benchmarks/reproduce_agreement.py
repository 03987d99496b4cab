"""Do two (or more) reproductions agree? `python benchmarks/reproduce_agreement.py OUT_A OUT_B [OUT_C ...]`

Reads each folder's sweep.json (written by `python -m orchestrate.reproduce`) and prints, side by side:
each profile's knee (holds up to / breaks from, verdict) and whether the knee intervals overlap; the
headline load and, per profile, every headline figure with its 95 % interval and whether the intervals of
all runs overlap. Exit code 0 when every pair of intervals overlaps, 1 otherwise (2: a folder without
sweep.json). The runs' headline loads may differ (each run locates its own guide load); figures are
compared as measured at each run's own headline load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIGURES = (
    "success_rate",
    "rejection_rate",
    "timeout_rate",
    "served_per_s",
    "goodput_per_s",
    "output_tokens_per_s",
    "ttft_p50_s",
    "e2e_p99_s",
)


def read(folder: Path) -> dict:
    try:
        return json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: {folder}: no sweep.json ({exc})", file=sys.stderr)
        sys.exit(2)


def overlap(intervals: list[tuple[float, float]]) -> bool:
    return max(low for low, _ in intervals) <= min(high for _, high in intervals)


def knee_interval(knee: dict) -> tuple[float, float]:
    return (knee.get("holds_up_to_rps") or 0.0, knee.get("breaks_from_rps") or float("inf"))


def knee_text(knee: dict) -> str:
    low, high = knee_interval(knee)
    return f"{low:.2f}-{high:.2f} ({knee.get('verdict')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two reproduction folders")
    runs = [read(f) for f in args.folders]
    agree = True
    print("| knee | " + " | ".join(str(f) for f in args.folders) + " | overlap |")
    print("|---" * (len(runs) + 2) + "|")
    for name in runs[0]["knees"]:
        knees = [r["knees"].get(name, {}) for r in runs]
        ok = overlap([knee_interval(k) for k in knees])
        agree &= ok
        cells = [knee_text(k) for k in knees]
        print(f"| {name} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    print()
    loads = [f"{r['headline_rate_per_s']:.2f}" for r in runs]
    print(
        "| headline figure (loads "
        + " / ".join(loads)
        + " req/s) | "
        + " | ".join(str(f) for f in args.folders)
        + " | overlap |"
    )
    print("|---" * (len(runs) + 2) + "|")
    for name in runs[0]["knees"]:
        at = []
        for r in runs:
            rows = [
                p for p in r["points"] if p["profile"] == name and p["rate_per_s"] == r["headline_rate_per_s"]
            ]
            if rows:
                at.append(rows[0])
        if len(at) < len(runs):  # a run without this profile at its headline load
            continue
        for figure in FIGURES:
            ivs = [a[figure] for a in at]
            if any(iv["low"] is None or iv["high"] is None for iv in ivs):
                continue
            ok = overlap([(iv["low"], iv["high"]) for iv in ivs])
            agree &= ok
            cells = [f"{iv['estimate']:.3g} [{iv['low']:.3g}-{iv['high']:.3g}]" for iv in ivs]
            print(f"| {name} {figure} | " + " | ".join(cells) + f" | {'yes' if ok else 'NO'} |")
    print(f"\n{'every interval overlaps' if agree else 'some intervals do not overlap'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
