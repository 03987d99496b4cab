"""TTFT by turn and output tok/s on a multi-turn and a shared-prefix workload: our server with its prefix
cache on and off, and `mlx_lm.server` (its LRU prompt cache on, as by default), same tiny model, side by
side in one run.

    python -m benchmarks.prefix_cache [--quick] [--users 8] [--turns 6] [--think-s 1.0] [--tokens 48]
        [--repeats 1] [--no-peer]

Multi-turn: each user holds a conversation of `--turns` turns: its own short system prompt, then each turn
sends the whole history (earlier questions and the replies it received) plus a new question of
`--turn-words` words, and thinks `--think-s` seconds (seeded jitter of +-25%) before the next turn.
Shared prefix: `--pool` system prompts of `--prefix-words` words each; `--users` users closed loop, each
sending `--requests` requests that pick one of the pool (seeded) followed by a distinct short question.
Every reply is fixed-length (`ignore_eos` for our server, a -100 logit bias on EOS for mlx_lm.server).
Output tok/s is output tokens over the workload's wall time (think time included, the same for every
system). Figures are printed, not asserted: they depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from benchmarks.server_vs_engine import PEER, peer_server, percentile
from configkit import REPO_ROOT, RUNTIME_CONFIG
from loadgen.responses import StreamParser
from orchestrate.processes import running_server
from server.models.embedded import build_embedded_model

REPO = REPO_ROOT
CACHE_ON, CACHE_OFF = "ours[cache on]", "ours[cache off]"
# Words the embedded tokenizer splits into about 2.4 tokens each.
WORDS = [
    "river",
    "city",
    "music",
    "night",
    "people",
    "water",
    "bridge",
    "street",
    "light",
    "market",
    "song",
    "dance",
    "boat",
    "harbor",
    "garden",
    "window",
    "morning",
    "evening",
    "story",
    "friend",
    "lantern",
    "stone",
    "road",
    "hill",
    "forest",
    "bakery",
    "train",
    "station",
    "rain",
]


@dataclass
class TimedTurn:
    """One request of a workload; times in seconds from the workload's start."""

    user: int
    turn: int  # 1-based turn of the conversation (multi-turn), request index of the user (shared prefix)
    sent_s: float
    first_token_s: float | None = None
    finish_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    text: str = ""

    @property
    def ttft_s(self) -> float:
        if self.first_token_s is None:
            raise ValueError(f"user {self.user}, turn {self.turn}: no content arrived")
        return self.first_token_s - self.sent_s

    @property
    def end_s(self) -> float:
        if self.finish_s is None:
            raise ValueError(f"user {self.user}, turn {self.turn}: never finished")
        return self.finish_s


@dataclass
class Endpoint:
    """A running server under test: its label in the tables, base URL, and the model id to ask for."""

    name: str
    url: str
    model: str


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


async def chat(session, target: Endpoint, messages, args, eos_id: int, record: TimedTurn, start: float):
    """One streamed chat request; fills `record` (first content, usage with cached tokens, the text)."""
    body = {
        "model": target.model,
        "messages": messages,
        "max_tokens": args.tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "logit_bias": {str(eos_id): -100.0},
    }
    parser = StreamParser()
    async with session.post(f"{target.url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            parser.feed(line, time.perf_counter() - start)
    record.finish_s = time.perf_counter() - start
    outcome, detail = parser.outcome()
    if outcome != "success":
        raise RuntimeError(f"{target.name}: user {record.user}, turn {record.turn}: {outcome} ({detail})")
    record.first_token_s = parser.first_content_s
    record.prompt_tokens = parser.prompt_tokens or 0
    record.output_tokens = parser.completion_tokens or 0
    record.cached_tokens = parser.cached_tokens or 0
    record.text = parser.text


# send(user index, turn, messages) -> its timed record; a user(send, index) -> its records.
Send = Callable[[int, int, list[dict[str, str]]], Awaitable[TimedTurn]]
UserTurns = Callable[[Send, int], Awaitable[list[TimedTurn]]]


async def run_users(
    target: Endpoint, args: argparse.Namespace, eos_id: int, user: UserTurns
) -> list[TimedTurn]:
    """`args.users` users side by side on one session and one clock; `user(send, index)` sends each request
    with `await send(index, turn, messages)`, which times it from the workload's start."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=900), connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        start = time.perf_counter()

        async def send(index: int, turn: int, messages: list[dict[str, str]]) -> TimedTurn:
            record = TimedTurn(index, turn, time.perf_counter() - start)
            await chat(session, target, messages, args, eos_id, record, start)
            return record

        per_user = await asyncio.gather(*(user(send, i) for i in range(args.users)))
    return [r for records in per_user for r in records]


async def multi_turn(target: Endpoint, args: argparse.Namespace, eos_id: int, seed: int) -> list[TimedTurn]:
    async def user(send: Send, index: int) -> list[TimedTurn]:
        rng = random.Random(seed * 1000 + index)
        history = [{"role": "system", "content": f"You are guide {index}. {words(rng, 12)}"}]
        out = []
        for turn in range(1, args.turns + 1):
            history.append({"role": "user", "content": words(rng, args.turn_words)})
            record = await send(index, turn, history)
            history.append({"role": "assistant", "content": record.text})
            out.append(record)
            if turn < args.turns:
                await asyncio.sleep(args.think_s * rng.uniform(0.75, 1.25))
        return out

    return await run_users(target, args, eos_id, user)


async def shared_prefix(
    target: Endpoint, args: argparse.Namespace, eos_id: int, seed: int
) -> list[TimedTurn]:
    pool_rng = random.Random(seed)
    pool = [f"Shared context {k}. {words(pool_rng, args.prefix_words)}" for k in range(args.pool)]

    async def user(send: Send, index: int) -> list[TimedTurn]:
        rng = random.Random(seed * 1000 + index)
        out = []
        for turn in range(1, args.requests + 1):
            messages = [
                {"role": "system", "content": rng.choice(pool)},
                {"role": "user", "content": f"Question {index}.{turn}: {words(rng, 8)}"},
            ]
            out.append(await send(index, turn, messages))
        return out

    return await run_users(target, args, eos_id, user)


@dataclass
class Figures:
    tok_s: float
    ttft_p50_s: float
    ttft_p50_by_turn_s: dict[int, float]
    cached_share: float  # cached prompt tokens / prompt tokens


def figures(records: list[TimedTurn]) -> Figures:
    wall_s = max(r.end_s for r in records) - min(r.sent_s for r in records)
    by_turn: dict[int, list[float]] = {}
    for r in records:
        by_turn.setdefault(r.turn, []).append(r.ttft_s)
    prompt = sum(r.prompt_tokens for r in records)
    return Figures(
        sum(r.output_tokens for r in records) / wall_s,
        percentile([r.ttft_s for r in records], 0.5),
        {turn: percentile(values, 0.5) for turn, values in sorted(by_turn.items())},
        sum(r.cached_tokens for r in records) / prompt if prompt else float("nan"),
    )


def median_figures(runs: list[Figures]) -> Figures:
    turns = runs[0].ttft_p50_by_turn_s
    return Figures(
        statistics.median(f.tok_s for f in runs),
        statistics.median(f.ttft_p50_s for f in runs),
        {t: statistics.median(f.ttft_p50_by_turn_s[t] for f in runs) for t in turns},
        statistics.median(f.cached_share for f in runs),
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def print_workload(title: str, cells: dict[str, Figures], turn_label: str) -> None:
    names = list(cells)
    pairs = [(CACHE_ON, CACHE_OFF)] + ([(CACHE_ON, PEER)] if PEER in cells else [])
    head = " | ".join(names) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs)
    print(f"\n### {title}: TTFT p50 ms by {turn_label}\n")
    print(f"| {turn_label} | {head} |")
    print("|---" * (1 + len(names) + len(pairs)) + "|")
    for turn in cells[CACHE_ON].ttft_p50_by_turn_s:
        values = " | ".join(f"{1000 * cells[n].ttft_p50_by_turn_s[turn]:.0f}" for n in names)
        ratios = " | ".join(
            ratio(cells[a].ttft_p50_by_turn_s[turn], cells[b].ttft_p50_by_turn_s[turn]) for a, b in pairs
        )
        print(f"| {turn} | {values} | {ratios} |")
    print(f"\n### {title}: totals\n")
    print(f"| figure | {head} |")
    print("|---" * (1 + len(names) + len(pairs)) + "|")
    for label, field, scale, fmt in (
        ("output tok/s", "tok_s", 1, "{:.0f}"),
        ("TTFT p50 ms (all requests)", "ttft_p50_s", 1000, "{:.0f}"),
        ("cached / prompt tokens", "cached_share", 1, "{:.2f}"),
    ):
        values = " | ".join(fmt.format(scale * getattr(cells[n], field)) for n in names)
        ratios = " | ".join(ratio(getattr(cells[a], field), getattr(cells[b], field)) for a, b in pairs)
        print(f"| {label} | {values} | {ratios} |")


def cache_off_config(folder: Path) -> Path:
    raw = yaml.safe_load(RUNTIME_CONFIG.read_text())
    raw["prefix_cache"] = {**raw.get("prefix_cache", {}), "enabled": False}
    path = folder / "cache-off.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 users x 3 turns, short replies")
    parser.add_argument("--users", type=int, default=None, help="concurrent users (8)")
    parser.add_argument("--turns", type=int, default=None, help="turns per conversation (6)")
    parser.add_argument(
        "--turn-words", type=int, default=40, help="words per new question (~2.4 tokens each)"
    )
    parser.add_argument("--think-s", type=float, default=1.0, help="think time between turns, seconds")
    parser.add_argument("--tokens", type=int, default=None, help="output tokens per reply (48)")
    parser.add_argument("--pool", type=int, default=4, help="shared system prompts")
    parser.add_argument("--prefix-words", type=int, default=250, help="words per shared system prompt")
    parser.add_argument("--requests", type=int, default=None, help="shared-prefix requests per user (6)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per workload and system (median)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-peer", action="store_true", help="skip mlx_lm.server")
    args = parser.parse_args(argv)
    defaults = {"users": 3, "turns": 3, "tokens": 24, "requests": 3} if args.quick else {}
    defaults = {"users": 8, "turns": 6, "tokens": 48, "requests": 6} | defaults
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = build_embedded_model()
    eos_id = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    workloads = {"Multi-turn": multi_turn, "Shared prefix": shared_prefix}
    results: dict[str, dict[str, list[Figures]]] = {w: {} for w in workloads}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        targets = [
            Endpoint(CACHE_ON, stack.enter_context(running_server(RUNTIME_CONFIG)), "tiny-llama"),
            Endpoint(CACHE_OFF, stack.enter_context(running_server(cache_off_config(folder))), "tiny-llama"),
        ]
        if not args.no_peer:
            targets.append(Endpoint(PEER, stack.enter_context(peer_server(model_dir)), str(model_dir)))
        for target in targets:  # first-request costs out of the figures, with prompts nobody reuses
            warm = {**vars(args), "users": 2, "requests": 1, "pool": 2, "prefix_words": 8}
            asyncio.run(shared_prefix(target, argparse.Namespace(**warm), eos_id, seed=-1))
        for repeat in range(args.repeats):
            for w, (title, run) in enumerate(workloads.items()):
                shift = (repeat + w) % len(targets)  # rotated order: no system always runs first
                for target in targets[shift:] + targets[:shift]:
                    records = asyncio.run(run(target, args, eos_id, args.seed + repeat))
                    cell = figures(records)
                    results[title].setdefault(target.name, []).append(cell)
                    print(
                        f"[{title} #{repeat + 1}] {target.name}: {cell.tok_s:.0f} tok/s, TTFT p50 "
                        f"{1000 * cell.ttft_p50_s:.0f} ms, cached share {cell.cached_share:.2f}",
                        file=sys.stderr,
                    )
    order = [t.name for t in targets]
    print(
        f"\nMulti-turn: {args.users} users x {args.turns} turns, {args.turn_words}-word questions, think "
        f"{args.think_s:g} s; shared prefix: {args.users} users x {args.requests} requests over {args.pool} "
        f"system prompts of {args.prefix_words} words; {args.tokens} output tokens per reply; median of "
        f"{args.repeats} run(s)" + ("; mlx_lm.server skipped" if args.no_peer else "")
    )
    for title, label in (("Multi-turn", "turn"), ("Shared prefix", "request of a user")):
        cells = {name: median_figures(results[title][name]) for name in order}
        print_workload(title, cells, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
