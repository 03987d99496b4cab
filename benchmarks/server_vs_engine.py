"""Aggregate output tok/s and TTFT at several concurrencies: our server against mlx-lm's in-process batch
engine (the ceiling) and against `mlx_lm.server` (the peer), same model and prompts, side by side in one run.

    python benchmarks/server_vs_engine.py [--concurrency 1 8 16] [--tokens 128] [--repeats 3]

Every request is fixed-length: `ignore_eos` for our server, a -100 logit bias on EOS for mlx_lm.server,
no stop tokens for the in-process engine. The figure kept per cell is the median of the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from server.launch import _wait_healthy, running_server, stop_server
from server.models import build_embedded_model

REPO = Path(__file__).resolve().parent.parent
PROMPT = "Tell me a story about a city by a river, with many people and music at night."


def prompt_for(i: int) -> str:
    # A distinct start per request, so no server can answer from a prompt (prefix) cache.
    return f"Story number {i} of {i * 7919 % 1000}. {PROMPT}"


def engine_ceiling(model_dir: Path, concurrency: int, tokens: int) -> tuple[float, float]:
    """(aggregate tok/s, mean TTFT s) for one batch through mlx-lm's BatchGenerator, in this process."""
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    model, tokenizer = _loaded(model_dir, load)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer.encode(text, add_special_tokens=False)
    generator = BatchGenerator(model)
    start = time.perf_counter()
    generator.insert([prompt] * concurrency, max_tokens=[tokens] * concurrency)
    first_token_s: dict[int, float] = {}
    produced = 0
    while responses := generator.next_generated():
        now = time.perf_counter() - start
        for response in responses:
            first_token_s.setdefault(response.uid, now)
        produced += len(responses)
    elapsed = time.perf_counter() - start
    generator.close()
    return produced / elapsed, statistics.mean(first_token_s.values())


_MODEL_CACHE: dict = {}
_COUNTER = itertools.count()


def _loaded(model_dir: Path, load):
    if model_dir not in _MODEL_CACHE:
        _MODEL_CACHE[model_dir] = load(str(model_dir))
    return _MODEL_CACHE[model_dir]


async def _one_stream(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, int]:
    body = {**body, "messages": [{"role": "user", "content": prompt_for(next(_COUNTER))}]}
    start = time.perf_counter()
    ttft_s, tokens = None, 0
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if ttft_s is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft_s = time.perf_counter() - start
    return ttft_s or float("nan"), tokens


async def http_load(url: str, model: str, concurrency: int, tokens: int, eos_id: int) -> tuple[float, float]:
    body = {
        "model": model,
        "max_tokens": tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "logit_bias": {str(eos_id): -100.0},
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one_stream(session, url, body) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return sum(t for _, t in results) / elapsed, statistics.mean(ttft for ttft, _ in results)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def peer_server(model_dir: Path) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir), "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, url, 120)
        yield url
    finally:
        stop_server(process)


def median_of(repeats: int, measure) -> tuple[float, float]:
    runs = [measure() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "runtime.yaml")
    args = parser.parse_args(argv)

    model_dir = build_embedded_model()
    eos_id = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    rows = []
    with running_server(args.config) as ours, peer_server(model_dir) as peer:
        for url, name in ((ours, "tiny-llama"), (peer, str(model_dir))):  # warm both
            asyncio.run(http_load(url, name, 2, 8, eos_id))
        engine_ceiling(model_dir, 2, 8)
        for n in args.concurrency:
            ceiling = median_of(args.repeats, lambda n=n: engine_ceiling(model_dir, n, args.tokens))
            server = median_of(
                args.repeats, lambda n=n: asyncio.run(http_load(ours, "tiny-llama", n, args.tokens, eos_id))
            )
            mlx = median_of(
                args.repeats, lambda n=n: asyncio.run(http_load(peer, str(model_dir), n, args.tokens, eos_id))
            )
            rows.append((n, ceiling, server, mlx))

    print(f"\n{args.tokens} output tokens per request, median of {args.repeats} runs\n")
    print(
        "| streams | engine in-process tok/s | our server tok/s | mlx_lm.server tok/s | ours / engine | "
        "ours / mlx_lm.server | TTFT engine ms | TTFT ours ms | TTFT mlx_lm.server ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, ceiling, server, mlx in rows:
        rates = f"| {n} | {ceiling[0]:.0f} | {server[0]:.0f} | {mlx[0]:.0f} "
        ratios = f"| {server[0] / ceiling[0]:.2f} | {server[0] / mlx[0]:.2f} "
        ttfts = f"| {1000 * ceiling[1]:.0f} | {1000 * server[1]:.0f} | {1000 * mlx[1]:.0f} |"
        print(rates + ratios + ttfts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
