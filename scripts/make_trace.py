"""Write a small Mooncake-format trace (JSONL) for tests and demos: sessions whose requests share prefix
blocks, as a chat's or an agent's history does.

    python scripts/make_trace.py OUT.jsonl [--requests 12] [--sessions 3] [--gap-ms 250]
        [--block-tokens 16] [--output-length 8] [--seed 0]

Request k of a session repeats the session's first k+1 hash ids (a growing shared prefix) and adds one new
block; sessions take turns, one request every --gap-ms. Hash ids are unique per (session, block), so
equal ids mean equal blocks, as in Mooncake's traces (whose blocks are 512 tokens).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def make_trace(
    requests: int, sessions: int, gap_ms: float, block_tokens: int, output_length: int, seed: int
) -> list[dict]:
    rng = random.Random(seed)
    lines, turns = [], [0] * sessions
    for i in range(requests):
        s = i % sessions
        blocks = turns[s] + 2  # a system block, the history so far, and the new turn
        turns[s] += 1
        hash_ids = [s * 1000 + b for b in range(blocks)]
        # The last block is partly filled, as in real traces.
        input_length = (blocks - 1) * block_tokens + rng.randint(1, block_tokens)
        lines.append(
            {"timestamp": round(i * gap_ms), "input_length": input_length,
             "output_length": output_length, "hash_ids": hash_ids}
        )  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=250.0)
    parser.add_argument("--block-tokens", type=int, default=16)
    parser.add_argument("--output-length", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    if min(a.requests, a.sessions, a.block_tokens, a.output_length) < 1 or a.gap_ms < 0:
        parser.error("--requests, --sessions, --block-tokens and --output-length must be >= 1, --gap-ms >= 0")
    lines = make_trace(a.requests, a.sessions, a.gap_ms, a.block_tokens, a.output_length, a.seed)
    a.out.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    print(f"{a.out}: {len(lines)} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
