"""A newcomer's first run, before and after the embedded tiny-llama's EOS logit was lowered: the default
scenario (streaming chat, --max-tokens 128, no --ignore-eos) against the default server, side by side.

    python benchmarks/embedded_eos.py [--users 4] [--run-time-s 30]

"before" is the same recipe built with `eos_logit_drop=0` into a temporary cache; "after" is the default
build. Prints per build: requests, outcomes, empty replies, replies shorter than max_tokens and the output
token spread. Figures, not assertions: the machine's speed sets how many requests a run gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from collections import Counter
from pathlib import Path

from configkit import RUNTIME_CONFIG
from loadgen.options import LoadSettings
from orchestrate.processes import run_locust, running_server
from runfolder import read_run
from server.models import embedded

MAX_TOKENS = LoadSettings().max_tokens  # the load test's default, which this run uses


def _before_model(cache: Path) -> Path:
    recipe = dataclasses.replace(embedded.EMBEDDED_MODELS["tiny-llama"], eos_logit_drop=0.0)
    saved = embedded.EMBEDDED_MODELS["tiny-llama"]
    embedded.EMBEDDED_MODELS["tiny-llama"] = recipe
    try:
        return embedded.build_embedded_model(cache_dir=cache)
    finally:
        embedded.EMBEDDED_MODELS["tiny-llama"] = saved


def _measure(name: str, model_args: list[str], users: int, run_time_s: float, work: Path) -> None:
    run_dir = work / name
    with running_server(RUNTIME_CONFIG, extra_args=model_args) as url:
        load = ("-u", str(users), "-r", str(users), "-t", f"{run_time_s:g}s", "--stop-timeout", "120")
        proc = run_locust(url, run_dir, *load)
    if proc.returncode not in (0, 1):
        print(f"{name}: locust exited {proc.returncode}\n{proc.stderr[-2000:]}")
        return
    run = read_run(run_dir)
    ok = [r for r in run.records if r.outcome == "success"]
    tokens = sorted(r.output_tokens or 0 for r in ok)
    short = sum(1 for t in tokens if t < MAX_TOKENS)
    outcomes = dict(Counter(f"{r.outcome}:{r.outcome_detail}" for r in run.records))
    spread = f"{tokens[0]} / {tokens[len(tokens) // 2]} / {tokens[-1]}" if tokens else "-"
    print(
        f"{name:6}  requests {len(run.records):4}  outcomes {outcomes}  empty replies "
        f"{run.summary['empty_replies']} ({100 * (run.summary['empty_reply_rate'] or 0):.1f}%)  "
        f"shorter than {MAX_TOKENS}: {short} ({100 * short / max(len(ok), 1):.1f}%)  "
        f"output tokens min/median/max {spread}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--run-time-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="eos-bench-") as tmp:
        work = Path(tmp)
        before = _before_model(work / "models")
        _measure("before", ["--model", str(before)], args.users, args.run_time_s, work)
        _measure("after", [], args.users, args.run_time_s, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
