"""`python -m server.demo`: build the embedded model, start the server (in this process, on a free port),
stream one chat completion with its timings, stop the server. The smallest end-to-end check that a fresh
clone works."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from server.app import create_app
from server.appkeys import WORKER_HANDLES
from server.models.embedded import ModelNotFoundError
from server.settings import ConfigError, Settings, load_settings
from server.worker_handle import WorkerUnavailable


def stream_one(base_url: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "model": requests.get(f"{base_url}/v1/models", timeout=10).json()["data"][0]["id"],
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent_s = time.perf_counter()
    ttft_s = None
    usage: dict[str, Any] = {}
    with requests.post(f"{base_url}/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text = choice["delta"].get("content")
                if text:
                    ttft_s = ttft_s or time.perf_counter() - sent_s
                    print(text, end="", flush=True)
    e2e_s = time.perf_counter() - sent_s
    print()
    return {"ttft_s": ttft_s, "e2e_s": e2e_s, **usage}


def describe(timings: dict) -> str:
    tokens = timings.get("completion_tokens", 0)
    ttft_s, e2e_s = timings["ttft_s"] or float("nan"), timings["e2e_s"]
    tpot_ms = 1000 * (e2e_s - ttft_s) / (tokens - 1) if tokens > 1 else float("nan")
    return (
        f"\nTTFT {1000 * ttft_s:.1f} ms | end to end {1000 * e2e_s:.1f} ms | TPOT {tpot_ms:.2f} ms | "
        f"{timings.get('prompt_tokens', '?')} prompt + {tokens} output tokens | "
        f"{tokens / e2e_s:.0f} output tok/s"
    )


async def serve_and_stream(settings: Settings, prompt: str, max_tokens: int) -> dict:
    """Run the server in this process (port 0: a free one), stream one completion, stop the server."""
    runner = web.AppRunner(create_app(settings))
    await runner.setup()  # starts the model workers
    try:
        await web.TCPSite(runner, settings.server.host, 0).start()
        host, port = runner.addresses[0][:2]
        await asyncio.gather(*(h.wait_ready() for h in runner.app[WORKER_HANDLES].values()))
        print(f"server ready at http://{host}:{port}; streaming one chat completion:\n")
        return await asyncio.to_thread(stream_one, f"http://{host}:{port}", prompt, max_tokens)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.demo", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config/runtime.yaml"))
    parser.add_argument("--prompt", default="Tell me a short story about a river.")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ConfigError.exit_code
    try:
        timings = asyncio.run(serve_and_stream(settings, args.prompt, args.max_tokens))
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (WorkerUnavailable, OSError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
