"""The CI gate's runs: the baseline's server and the candidate's, both kept warm side by side, loaded in turn
in short blocks, pair by pair (base, cand, then cand, base, ...).

Why blocks and not whole runs: a run that starts its own server pays a model load and a cold start, and
two runs minutes apart see different machines (a shared 2-core runner has slow spells of seconds to
minutes). Two blocks a few seconds apart see nearly the same machine, so the noise left in their ratio is
small, and many short pairs give the gate enough degrees of freedom to learn that noise in the job itself
(reports/stats.py) instead of trusting a number measured elsewhere.

Each block is one real Locust run (`locust -f loadtest`, the candidate's load generator for both sides, so
that only the server differs) writing a run folder, plus server_usage.json: the CPU seconds the server's
processes spent over the block, from the OS (psutil), and the server's own output-token count.

    python -m orchestrate.gate_run --out DIR [--base-src DIR] [--cand-src DIR] [--pairs N] [--block-s S]
        [--cand-profile PATH] [--base-profile PATH] [--campaign FILE]

Exit codes: 0 the blocks were made, 2 a bad option or campaign, 4 a server or Locust failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import Field, ValidationError

from configkit import REPO_ROOT, Strict, read_yaml, validation_message
from orchestrate import campaign as camp
from orchestrate.locust_runs import build_model, listed_model, make_progress, run_campaign_load, warm_up
from orchestrate.processes import SERVING_ON, ServerFailed, ServerProcess
from reports.errors import BadInput, RunFailed
from runfolder.server_usage import ServerUsage, write_server_usage

log = logging.getLogger(__name__)

GATE_CAMPAIGN = REPO_ROOT / "config" / "perf-gate-campaign.yaml"
SERVER_CONFIG = "config/runtime.yaml"  # each side's own, relative to its source folder
SERVER_READY_TIMEOUT_S = 300.0
OUTPUT_TOKENS_METRIC = "mlxserving_output_tokens_total"


class GateCampaign(Strict):
    """config/perf-gate-campaign.yaml: the gate's server config, load and blocks."""

    schema_version: int = 1
    name: str
    description: str = ""
    config: str = SERVER_CONFIG  # each side's own file, relative to its checkout
    label: str = Field("default", pattern=r"^[A-Za-z0-9._-]+$")
    pairs: int = Field(10, ge=2, le=200)
    # Pairs run first and left out: a freshly started server's first blocks run slow, by different
    # amounts on the two sides (measured: the first block 10-50 % below the rest).
    warmup_pairs: int = Field(1, ge=0, le=10)
    block_s: float = Field(5.0, ge=1, le=600)
    load: camp.LoadSpec


def load_gate_campaign(path: Path) -> GateCampaign:
    raw = read_yaml(path, "gate campaign", BadInput)
    try:
        return GateCampaign.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(f"{path}: {validation_message(exc)}") from None


@dataclass(frozen=True, slots=True)
class GateSide:
    """One side of the gate: whose code runs the server, with which overlay, under which run label."""

    name: str  # "base" or "cand": the folder its blocks go to
    src: Path
    profile: str | None
    label: str


def side_label(base_label: str, profile: str | None) -> str:
    """A side's run label says what ran: the campaign's label, plus a testing overlay's name."""
    return base_label if profile is None else f"{base_label}+{Path(profile).stem}"


def start_server(side: GateSide, config: str, out: Path) -> ServerProcess:
    """`python -m server` run from the side's source folder (so that its code, not ours, is imported);
    started, not yet waited for (both sides load their models at the same time)."""
    cmd = [sys.executable, "-m", "server", "--config", config, "--port", "0"]
    if side.profile is not None:
        cmd += ["--profile", str(Path(side.profile).resolve())]
    return ServerProcess(cmd, side.src, None, out / f"server-{side.name}.log")


def tree_cpu_s(pid: int) -> tuple[float, int]:
    """User + system CPU seconds of a process and its live descendants, and how many processes."""
    root = psutil.Process(pid)
    total, count = 0.0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a worker that exited between the listing and the reading
            continue
        total += times.user + times.system
        count += 1
    return total, count


def server_output_tokens(url: str) -> int | None:
    """The server's own output-token counter (its Prometheus exposition), summed over models."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(OUTPUT_TOKENS_METRIC + "{") or line.startswith(OUTPUT_TOKENS_METRIC + " ")
    ]
    return int(sum(values)) if values else None


def run_block(
    server: ServerProcess, url: str, side: GateSide, load: camp.LoadSpec, run_dir: Path, progress
) -> ServerUsage:
    """One Locust run against one side, with the server's CPU and token counts around it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tokens_before = server_output_tokens(url)
    cpu_before, _ = tree_cpu_s(server.process.pid)
    started = time.monotonic()
    run_campaign_load(load, url, run_dir, side.label, run_dir.with_suffix(".log"), progress)
    wall_s = time.monotonic() - started
    cpu_after, processes = tree_cpu_s(server.process.pid)
    tokens_after = server_output_tokens(url)
    tokens = None if tokens_before is None or tokens_after is None else tokens_after - tokens_before
    usage = ServerUsage(
        cpu_s=cpu_after - cpu_before, wall_s=wall_s, processes=processes, output_tokens=tokens
    )
    write_server_usage(run_dir, usage)
    return usage


def block_order(pairs: int) -> list[tuple[int, str]]:
    """(pair, side) in time order: base, cand, then cand, base, ...: neither side always goes first."""
    order = []
    for pair in range(1, pairs + 1):
        sides = ("base", "cand") if pair % 2 == 1 else ("cand", "base")
        order += [(pair, side) for side in sides]
    return order


def run_gate_blocks(
    campaign: GateCampaign, sides: list[GateSide], out: Path, pairs: int, block_s: float, progress
) -> None:
    """Start both servers, warm each with two requests and the campaign's warm-up pairs (into warm-up/,
    left out), then the pairs of measured blocks. Each block's first `load.warmup_s` is left out of its
    figures too (the users start together on new connections)."""
    load = campaign.load.model_copy(update={"duration_s": block_s})
    out.mkdir(parents=True, exist_ok=True)
    servers: dict[str, tuple[ServerProcess, str]] = {}
    try:
        for side in sides:
            progress(f"starting the {side.name} server (code from {side.src}, overlay {side.profile})")
            servers[side.name] = (start_server(side, campaign.config, out), "")
        for side in sides:
            server, _ = servers[side.name]
            url = server.wait_ready(SERVER_READY_TIMEOUT_S, pattern=SERVING_ON)
            servers[side.name] = (server, url)
            warm_up(url, listed_model(url), load.max_tokens)
        by_name = {side.name: side for side in sides}
        warmup = campaign.warmup_pairs
        for pair, name in block_order(warmup + pairs):
            server, url = servers[name]
            if pair <= warmup:
                progress(f"warm-up pair {pair}/{warmup}: {name}")
                run_block(
                    server, url, by_name[name], load, out / "warm-up" / name / f"block{pair:02d}", progress
                )
                continue
            progress(f"pair {pair - warmup}/{pairs}: {name}")
            folder = out / name / f"block{pair - warmup:02d}"
            usage = run_block(server, url, by_name[name], load, folder, progress)
            log.debug("%s block %d: %.2f CPU-s over %.1f s", name, pair, usage.cpu_s, usage.wall_s)
    finally:
        for server, _ in servers.values():
            server.stop()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrate.gate_run",
        description="The CI gate's interleaved blocks on two warm servers (baseline and candidate code).",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for base/, cand/ and the logs")
    parser.add_argument("--base-src", type=Path, default=REPO_ROOT, help="the baseline's checkout")
    parser.add_argument("--cand-src", type=Path, default=REPO_ROOT, help="the candidate's checkout")
    parser.add_argument("--base-profile", help="an overlay for the baseline's server (e.g. a testing one)")
    parser.add_argument("--cand-profile", help="an overlay for the candidate's server")
    parser.add_argument("--pairs", type=int, default=None, help="pairs of blocks (default: the campaign's)")
    parser.add_argument("--block-s", type=float, default=None, help="seconds of load per block")
    parser.add_argument("--campaign", type=Path, default=GATE_CAMPAIGN)
    args = parser.parse_args(argv)
    if args.pairs is not None and args.pairs < 2:
        parser.error(f"--pairs must be at least 2 (the noise is learned from the pairs), got {args.pairs}")
    if args.block_s is not None and not args.block_s >= 1:
        parser.error(f"--block-s must be at least 1 second, got {args.block_s}")
    for name in ("base_src", "cand_src"):
        if not (getattr(args, name) / "server").is_dir():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no server/ package there")
    for name in ("base_profile", "cand_profile"):
        if getattr(args, name) is not None and not Path(getattr(args, name)).is_file():
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parse(argv)
    try:
        campaign = load_gate_campaign(args.campaign)
    except BadInput as exc:
        print(f"gate_run: {exc}", file=sys.stderr)
        return 2
    pairs = args.pairs or campaign.pairs
    block_s = args.block_s or campaign.block_s
    label = campaign.label
    sides = [
        GateSide("base", args.base_src.resolve(), args.base_profile, side_label(label, args.base_profile)),
        GateSide("cand", args.cand_src.resolve(), args.cand_profile, side_label(label, args.cand_profile)),
    ]
    progress = make_progress()
    try:
        build_model(progress)
        run_gate_blocks(campaign, sides, args.out, pairs, block_s, progress)
    except (ServerFailed, RunFailed) as exc:
        print(f"gate_run: {exc}", file=sys.stderr)
        return 4
    plan = {"pairs": pairs, "block_s": block_s, "sides": [s.name for s in sides]}
    plan["labels"] = {s.name: s.label for s in sides}
    (args.out / "gate-plan.json").write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
