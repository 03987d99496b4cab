"""`python -m server.demo`: build the embedded model, start the server, stream one chat completion with
its timings, stop the server. The smallest end-to-end check that a fresh clone works."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import requests


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
    usage = {}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.demo", description=__doc__)
    parser.add_argument("--config", type=Path, default=Path("config/runtime.yaml"))
    parser.add_argument("--prompt", default="Tell me a short story about a river.")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    # The one launcher lives above the server (orchestrate/); imported here only, so server/ never loads it.
    from orchestrate.processes import running_server

    try:
        with running_server(args.config) as base_url:
            print(f"server ready at {base_url}; streaming one chat completion:\n")
            timings = stream_one(base_url, args.prompt, args.max_tokens)
    except (RuntimeError, subprocess.SubprocessError, requests.RequestException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe(timings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
