"""Kill the model worker (SIGKILL) repeatedly under load; print each recovery time.

    python -m benchmarks.crash_recovery [--kills 5] [--streams 8]

Recovery time: from the kill until /health answers 200 again (restart back-off + model load), and the
server's own `last_recovery_s`. Also counts how in-flight requests ended: none may end as a success
without [DONE], none may hang.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import requests

from benchmarks.soak import one_stream, server_pid_for
from configkit import RUNTIME_CONFIG
from orchestrate.processes import running_server


def worker_pid(server_pid: int) -> int | None:
    for child in psutil.Process(server_pid).children(recursive=True):
        if "spawn_main" in " ".join(child.cmdline()):
            return child.pid
    return None


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


async def crash_loop(url: str, kills: int, streams: int) -> tuple[list[float], dict[str, int]]:
    server_pid = server_pid_for(url)
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    async def user(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            outcome = await one_stream(session, url, 256)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome != "success":
                await asyncio.sleep(0.1)

    recoveries: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        users = [asyncio.create_task(user(session)) for _ in range(streams)]
        for _ in range(kills):
            await asyncio.sleep(2.0)  # under load
            pid = worker_pid(server_pid)
            assert pid is not None, "the server has no worker process to kill"
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(0.05)
            while not await asyncio.to_thread(healthy, url):
                await asyncio.sleep(0.05)
            recoveries.append(time.monotonic() - killed)
        stop.set()
        await asyncio.gather(*users)
    return recoveries, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--config", type=Path, default=RUNTIME_CONFIG)
    args = parser.parse_args(argv)
    with running_server(args.config) as url:
        recoveries, outcomes = asyncio.run(crash_loop(url, args.kills, args.streams))
        health = requests.get(f"{url}/health", timeout=5).json()["models"]
    model = next(iter(health.values()))
    print(f"{args.kills} worker kills under {args.streams} concurrent streams")
    print("recovery s (kill -> /health 200): " + ", ".join(f"{r:.2f}" for r in recoveries))
    print(f"longest {max(recoveries):.2f} s; server restarts_total {model['restarts_total']}")
    print(f"request outcomes: {outcomes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
