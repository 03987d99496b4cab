"""Output tok/s, TTFT and TPOT under closed-loop and open-loop (Poisson) load: our server against mlx-lm's
in-process batch engine (the ceiling, fed the same arrivals) and against `mlx_lm.server` (the peer), same
tiny model, distinct prompts, side by side in one run.

    python benchmarks/server_vs_engine.py [--quick] [--repeats 3] [--tokens 128]
        [--concurrency 1 2 4 8 16 32 48] [--load 0.5 0.8 1.0 1.25 1.5] [--config config/runtime.yaml ...]
        [--variant benchmarks/configs/scheduling-auto.yaml ...]

Closed loop: N users, each sends `--rounds` requests back to back. Open loop: Poisson arrivals (fixed seed)
at multiples of the capacity measured in this run (the engine's best closed-loop tok/s / tokens per
request), `--open-requests` requests per point. Each point runs every system in turn (rotated order),
repeated; each figure is the median over the repeats, each ratio the median of the per-repeat ratios with
their range (benchmarks/server_vs_engine_tables.py), and a goals table closes the output
(docs/benchmarks.md). Several `--config` files compare server configs; each `--variant` (an overlay of one
knob, `benchmarks/configs/*.yaml`) runs over the first `--config`.

Every request is fixed-length: `ignore_eos` for our server, a -100 logit bias on EOS for mlx_lm.server,
no stop tokens for the in-process engine. Figures are printed, not asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from configkit import REPO_ROOT
from loadgen.responses import StreamParser
from orchestrate.processes import mlx_lm_server, running_server
from server.models.embedded import build_embedded_model

# `python benchmarks/server_vs_engine.py` as well as `python -m benchmarks.server_vs_engine`
sys.path.insert(0, str(REPO_ROOT))
from benchmarks.server_vs_engine_tables import (
    ENGINE,
    PEER,
    Point,
    PointResult,
    median_result,
    print_goals,
    print_tables,
)

PROMPT = "Tell me a story about a city by a river, with many people and music at night."
_COUNTER = itertools.count()


def prompt_for(i: int) -> str:
    # Distinct from the first words of the message on, so only the chat template's header and "Story number"
    # (8 of 46 tokens) are shared: mlx_lm.server reuses those from its prompt cache (any common prefix),
    # ours too since prefix_cache.min_tokens went from 16 to 4 (docs/benchmarks.md measured what it is worth).
    return f"Story number {i} of {i * 7919 % 1000}. {PROMPT}"


@dataclass
class RequestTimes:
    """One request of a point: when it was sent (closed loop) or due (open loop), its first content and
    its end, in seconds from the start of the point, and the output tokens it reported."""

    arrival_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    output_tokens: int = 0


@dataclass(frozen=True)
class CompletedTimes:
    """A request of a point that finished: its `RequestTimes` with both ends known."""

    arrival_s: float
    first_token_s: float
    finish_s: float
    output_tokens: int


@dataclass(frozen=True)
class Load:
    """A closed loop of `users` users sending `rounds` requests each, or open-loop arrival offsets."""

    users: int = 0
    rounds: int = 0
    arrivals_s: tuple[float, ...] = ()

    @property
    def closed(self) -> bool:
        return self.users > 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(records: list[RequestTimes]) -> PointResult:
    done = [
        CompletedTimes(r.arrival_s, r.first_token_s, r.finish_s, r.output_tokens)
        for r in records
        if r.finish_s is not None and r.first_token_s is not None
    ]
    tokens = sum(r.output_tokens for r in done)
    wall_s = max(r.finish_s for r in done) - min(r.arrival_s for r in records) if done else float("nan")
    ttfts = [r.first_token_s - r.arrival_s for r in done]
    tpots = [(r.finish_s - r.first_token_s) / (r.output_tokens - 1) for r in done if r.output_tokens > 1]
    return PointResult(
        tokens / wall_s, percentile(ttfts, 0.5), percentile(ttfts, 0.99), percentile(tpots, 0.5)
    )


def poisson_arrivals(rate_per_s: float, count: int, seed: int) -> tuple[float, ...]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        out.append(t)
        t += rng.expovariate(rate_per_s)
    return tuple(out)


# -- the in-process engine ------------------------------------------------------------------------------
class InProcessEngine:
    """mlx-lm's BatchGenerator with its defaults, driven in this process: no HTTP, no IPC, no detokenizer."""

    def __init__(self, model_dir: Path):
        from server.worker.main import load_text

        self.model, self.tokenizer = load_text(str(model_dir))

    def prompt_tokens(self, i: int) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt_for(i)}], add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def run(self, load: Load, tokens: int) -> list[RequestTimes]:
        from mlx_lm.generate import BatchGenerator

        generator = BatchGenerator(self.model)
        total = load.users * load.rounds if load.closed else len(load.arrivals_s)
        prompts = [self.prompt_tokens(next(_COUNTER)) for _ in range(total)]
        records: dict[int, RequestTimes] = {}
        start = time.perf_counter()
        inserted = 0

        def insert(count: int) -> None:
            nonlocal inserted
            now = time.perf_counter() - start
            uids = generator.insert(prompts[inserted : inserted + count], max_tokens=[tokens] * count)
            for k, uid in enumerate(uids):
                # Open loop: TTFT counts from the scheduled arrival, as a client would see it.
                records[uid] = RequestTimes(arrival_s=now if load.closed else load.arrivals_s[inserted + k])
            inserted += count

        running = 0
        if load.closed:
            insert(min(load.users, total))
            running = min(load.users, total)
        while inserted < total or running:
            now = time.perf_counter() - start
            if not load.closed:
                due = sum(1 for t in load.arrivals_s[inserted:] if t <= now)
                if due:
                    insert(due)
                    running += due
                if not running:
                    time.sleep(max(0.0, load.arrivals_s[inserted] - now))
                    continue
            _, responses = generator.next()
            now = time.perf_counter() - start
            finished = 0
            for response in responses:
                record = records[response.uid]
                if record.first_token_s is None:
                    record.first_token_s = now
                record.output_tokens += 1
                if response.finish_reason is not None:
                    record.finish_s = now
                    finished += 1
            running -= finished
            if load.closed and finished and inserted < total:
                count = min(finished, total - inserted)
                insert(count)
                running += count
        generator.close()
        return list(records.values())


# -- HTTP servers -----------------------------------------------------------------------------------------
async def one_request(
    session: aiohttp.ClientSession, url: str, body: dict, start: float, arrival_s: float
) -> RequestTimes:
    """One streamed chat completion, read by the load generator's SSE parser."""
    body = {**body, "messages": [{"role": "user", "content": prompt_for(next(_COUNTER))}]}
    parser = StreamParser()
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if parser.feed(line, time.perf_counter() - start):
                break
    outcome, detail = parser.outcome()
    if outcome != "success":
        raise RuntimeError(f"{url}: a request ended {outcome} ({detail})")
    return RequestTimes(
        arrival_s=arrival_s,
        first_token_s=parser.first_content_s,
        finish_s=time.perf_counter() - start,
        output_tokens=parser.completion_tokens or 0,
    )


async def http_load(url: str, model: str, load: Load, tokens: int, eos_id: int) -> list[RequestTimes]:
    body = {
        "model": model,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "logit_bias": {str(eos_id): -100.0},
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=900), connector=connector
    ) as session:
        start = time.perf_counter()

        async def user() -> list[RequestTimes]:
            out = []
            for _ in range(load.rounds):
                out.append(await one_request(session, url, body, start, time.perf_counter() - start))
            return out

        async def arrival(at_s: float) -> RequestTimes:
            await asyncio.sleep(max(0.0, at_s - (time.perf_counter() - start)))
            return await one_request(session, url, body, start, at_s)

        if load.closed:
            per_user = await asyncio.gather(*(user() for _ in range(load.users)))
            return [r for records in per_user for r in records]
        return list(await asyncio.gather(*(arrival(t) for t in load.arrivals_s)))


@contextlib.contextmanager
def peer_server(model_dir: Path) -> Iterator[str]:
    """mlx_lm.server on the model, through the one launcher; yields its URL."""
    with mlx_lm_server(model_dir, timeout_s=120) as url:
        yield url


# -- the run ----------------------------------------------------------------------------------------------
Runner = Callable[[Load], list[RequestTimes]]


def http_runner(url: str, model: str, tokens: int, eos_id: int) -> Runner:
    return lambda load: asyncio.run(http_load(url, model, load, tokens, eos_id))


def measure_point(
    runners: dict[str, Runner], load: Load, repeats: int, offset: int
) -> dict[str, list[PointResult]]:
    """Every system, in rotated order, `repeats` times; each system's results in repeat order."""
    names = list(runners)
    runs: dict[str, list[PointResult]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = (offset + repeat) % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(summarize(runners[name](load)))
    progress = ", ".join(
        f"{n} {m.tok_s:.0f} tok/s, TTFT p50 {1000 * m.ttft_p50_s:.0f} ms"
        for n, m in ((n, median_result(r)) for n, r in runs.items())
    )
    print(
        f"[{load.users or len(load.arrivals_s)} {'users' if load.closed else 'arrivals'}] {progress}",
        file=sys.stderr,
    )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer points, shorter replies, one repeat")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--load", type=float, nargs="+", default=None, help="open-loop rates, x capacity")
    parser.add_argument("--tokens", type=int, default=None, help="output tokens per request (128)")
    parser.add_argument("--rounds", type=int, default=None, help="requests per closed-loop user (2)")
    parser.add_argument("--open-requests", type=int, default=None, help="requests per open-loop point (48)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per point and system (2)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--config", type=Path, nargs="+", default=[REPO_ROOT / "config" / "runtime.yaml"])
    parser.add_argument(
        "--variant", type=Path, nargs="+", default=[], help="overlays applied over the first --config"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip mlx_lm.server")
    args = parser.parse_args(argv)
    quick = {"concurrency": [1, 2, 8, 32], "load": [0.7, 1.0, 1.5], "tokens": 64, "rounds": 1}
    quick |= {"open_requests": 24, "repeats": 1}
    full = {"concurrency": [1, 2, 4, 8, 16, 32, 48], "load": [0.5, 0.8, 1.0, 1.25, 1.5], "tokens": 128}
    full |= {"rounds": 2, "open_requests": 48, "repeats": 2}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option, paths in (("--config", args.config), ("--variant", args.variant)):
        for path in paths:
            if not path.is_file():
                parser.error(f"{option} {path}: no such file")

    model_dir = build_embedded_model()
    eos_id = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    engine = InProcessEngine(model_dir)
    # (config, overlay) per server: every --config alone, then each --variant over the first --config.
    servers = [(path, None) for path in args.config] + [(args.config[0], v) for v in args.variant]
    ours = [f"ours[{(v or p).stem}]" if len(servers) > 1 else "ours" for p, v in servers]
    with contextlib.ExitStack() as stack:
        urls = {
            name: (stack.enter_context(running_server(p, profile=v)), "tiny-llama")
            for name, (p, v) in zip(ours, servers, strict=True)
        }
        if not args.no_peer:
            urls[PEER] = (stack.enter_context(peer_server(model_dir)), str(model_dir))
        runners: dict[str, Runner] = {ENGINE: lambda load: engine.run(load, args.tokens)}
        for name, (url, model) in urls.items():
            runners[name] = http_runner(url, model, args.tokens, eos_id)
        for runner in runners.values():  # warm every system
            runner(Load(users=2, rounds=1))

        closed: list[Point] = []
        for i, users in enumerate(args.concurrency):
            closed.append(
                (f"{users} users", measure_point(runners, Load(users, args.rounds), args.repeats, i))
            )
        capacity_tok_s = max(median_result(cell[ENGINE]).tok_s for _, cell in closed)
        capacity_rps = capacity_tok_s / args.tokens
        opened: list[Point] = []
        for i, factor in enumerate(args.load):
            arrivals = poisson_arrivals(factor * capacity_rps, args.open_requests, args.seed + i)
            label = f"{factor:.2f}x ({factor * capacity_rps:.2f} req/s)"
            opened.append((label, measure_point(runners, Load(arrivals_s=arrivals), args.repeats, i)))

    print(
        f"\n{args.tokens} output tokens per request; median of {args.repeats} run(s) per cell, ratios "
        f"paired by repeat: median [min-max]; "
        f"closed loop: {args.rounds} request(s) per user; open loop: {args.open_requests} Poisson arrivals "
        f"per point; capacity = the engine's best closed-loop figure, {capacity_tok_s:.0f} tok/s = "
        f"{capacity_rps:.2f} req/s" + ("; mlx_lm.server skipped" if args.no_peer else "")
    )
    print_tables("Closed loop", closed, ours)
    print_tables("Open loop (Poisson)", opened, ours)
    for name in ours:
        print_goals(closed + opened, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
