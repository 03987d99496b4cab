"""Soak: N concurrent streams against a fresh server for a while; prints success rate and memory growth.

    python benchmarks/soak.py [--minutes 10] [--streams 16] [--max-tokens 128]

Memory is the resident set of the server and its model worker together, sampled every few seconds;
growth is the last sample minus the one taken after the first minute's warm-up (or the first sample,
for short runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from configkit import RUNTIME_CONFIG
from loadgen.options import LoadSettings
from orchestrate.processes import running_server


@dataclass
class SoakResult:
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, MiB)

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests if self.requests else 0.0

    def memory_growth_mib(self, warmup_s: float) -> float:
        after = [mib for t, mib in self.rss_mib if t >= warmup_s] or [mib for _, mib in self.rss_mib]
        return after[-1] - after[0] if after else 0.0


async def one_stream(session: aiohttp.ClientSession, url: str, max_tokens: int) -> str:
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as response:
            if response.status != 200:
                return f"http_{response.status}"
            done = False
            async for raw in response.content:
                line = raw.strip()
                if line == b"data: [DONE]":
                    done = True
                elif line.startswith(b'data: {"error"'):
                    return json.loads(line[6:])["error"].get("code") or "error_event"
            return "success" if done else "truncated"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


def server_rss_mib(server_pid: int) -> float:
    process = psutil.Process(server_pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


async def soak(url: str, server_pid: int, duration_s: float, streams: int, max_tokens: int) -> SoakResult:
    result = SoakResult()
    start = time.monotonic()
    stop_at = start + duration_s

    async def user(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            outcome = await one_stream(session, url, max_tokens)
            result.requests += 1
            if outcome == "success":
                result.successes += 1
            else:
                result.failures[outcome] = result.failures.get(outcome, 0) + 1

    async def sample_memory() -> None:
        while time.monotonic() < stop_at:
            result.rss_mib.append((time.monotonic() - start, server_rss_mib(server_pid)))
            await asyncio.sleep(min(5.0, duration_s / 10))

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=streams)
    ) as session:
        await asyncio.gather(sample_memory(), *(user(session) for _ in range(streams)))
    result.rss_mib.append((time.monotonic() - start, server_rss_mib(server_pid)))
    return result


def server_pid_for(url: str) -> int:
    port = int(url.rsplit(":", 1)[1])
    for process in psutil.process_iter():
        try:
            if any(
                c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections()
            ):
                return process.pid
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    raise RuntimeError(f"no process listens on port {port}")


def run(minutes: float, streams: int, max_tokens: int, config: Path) -> SoakResult:
    with running_server(config) as url:
        return asyncio.run(soak(url, server_pid_for(url), minutes * 60, streams, max_tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=LoadSettings().max_tokens)
    parser.add_argument("--config", type=Path, default=RUNTIME_CONFIG)
    args = parser.parse_args(argv)
    result = run(args.minutes, args.streams, args.max_tokens, args.config)
    warmup_s = 60.0 if args.minutes >= 2 else 0.0
    first, last = result.rss_mib[0][1], result.rss_mib[-1][1]
    print(f"soak: {args.minutes:g} min, {args.streams} concurrent streams of up to {args.max_tokens} tokens")
    rate = 100 * result.success_rate
    print(f"requests {result.requests}, success rate {rate:.2f}%, failures {result.failures}")
    print(
        f"server+worker RSS {first:.0f} MiB at start, {last:.0f} MiB at end; "
        f"growth after warm-up {result.memory_growth_mib(warmup_s):+.1f} MiB"
    )
    return 0 if result.success_rate == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
