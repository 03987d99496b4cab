"""The workload options of `locust -f loadtest`, registered beside the others and checked
before the run (exit 2 naming the option)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadgen.workloads.dataset import MODES
from loadgen.workloads.trace import DEFAULT_BLOCK_TOKENS

OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--turns",), {"metavar": "N", "type": int, "default": 4,
                    "help": "MultiTurnChatUser: turns per conversation (default: 4)"}),
    (("--turns-spread",), {"metavar": "N", "type": int, "default": 0,
                           "help": "MultiTurnChatUser: conversations of --turns +/- N turns (uniform)"}),
    (("--shared-prefixes",), {"metavar": "K", "type": int, "default": 0,
                              "help": "a pool of K shared system prompts (default: 0, none)"}),
    (("--shared-prefix-tokens",), {"metavar": "L", "type": int, "default": 256,
                                   "help": "tokens of each shared system prompt (default: 256)"}),
    (("--shared-prefix-share",), {"metavar": "F", "type": float, "default": 1.0,
                                  "help": "share of requests (conversations) that use one (default: 1)"}),
    (("--trace",), {"metavar": "JSONL", "help": "--arrival trace: a Mooncake trace to replay open loop"}),
    (("--trace-time-scale",), {"metavar": "X", "type": float, "default": 1.0,
                               "help": "multiplies the trace's time gaps (0.5: twice as fast; default 1)"}),
    (("--trace-block-tokens",), {"metavar": "B", "type": int, "default": DEFAULT_BLOCK_TOKENS,
                                 "help": f"prompt tokens per trace hash id ({DEFAULT_BLOCK_TOKENS})"}),
    (("--dataset",), {"metavar": "JSON", "help": "ShareGPT-style conversations (a local JSON array)"}),
    (("--dataset-mode",), {"choices": list(MODES), "default": "first-turn",
                           "help": "first-turn: the first user message; conversation: all of it"}),
    (("--dataset-limit",), {"metavar": "N", "type": int, "default": 1000,
                            "help": "use the first N usable conversations (default: 1000)"}),
]  # fmt: skip


def problems(s: Any) -> list[str]:
    out = []
    if s.turns < 1 or s.turns_spread < 0 or s.turns_spread >= s.turns:
        out.append("--turns must be at least 1 and --turns-spread in [0, --turns)")
    if s.shared_prefixes < 0:
        out.append("--shared-prefixes cannot be negative")
    if s.shared_prefixes and s.shared_prefix_tokens < 1:
        out.append("--shared-prefix-tokens must be at least 1")
    if not 0 <= s.shared_prefix_share <= 1:
        out.append("--shared-prefix-share must be in [0, 1]")
    if s.arrival == "trace" and not s.trace:
        out.append("--arrival trace needs --trace FILE")
    if s.trace and s.arrival != "trace":
        out.append("--trace is replayed with --arrival trace")
    if s.trace and not Path(s.trace).is_file():
        out.append(f"--trace {s.trace}: no such file")
    if not s.trace_time_scale > 0:
        out.append("--trace-time-scale must be positive")
    if s.trace_block_tokens < 1:
        out.append("--trace-block-tokens must be at least 1")
    if s.dataset and not Path(s.dataset).is_file():
        out.append(f"--dataset {s.dataset}: no such file")
    if s.dataset and (s.prompt_file or s.trace):
        out.append("--dataset cannot be combined with --prompt-file or --trace")
    if s.dataset_limit < 1:
        out.append("--dataset-limit must be at least 1")
    return out
