"""Command-line options of `locust -f loadtest` (shown in --help and in the web UI) and their record."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen.arrival_schedule import OPEN_LOOP_MODES
from loadgen.images import ImageOptionError, folder_images, parse_size
from loadgen.workloads import options as workload_options

DEFAULT_SCENARIO = "ChatStreamUser"
DEFAULT_MAX_TOKENS = 128
GROUP_TITLE = "mlx-serving-bench load test"
# Seconds between scrapes of the server's metrics: under 0.2 % of a core of our server (docs/loadtest.md).
SERVER_METRICS_INTERVAL_S = 1.0
# Locust's own --stop-timeout default (0) kills the requests in flight at the end of a run, so a healthy
# server's first run shows failures. Ours: unset means "until the request deadline" (resolved in
# stop_timeout_s); a negative number marks "not given" (Locust turns the value into a float before our
# listeners run, so None is not possible). An explicit 0 keeps the hard stop.
STOP_TIMEOUT_UNSET = -1.0
# Beyond --request-timeout-s: the request's own deadline fires (outcome "timeout") before Locust kills it.
STOP_TIMEOUT_MARGIN_S = 1.0
GROUP_DESCRIPTION = (
    "Scenarios (pick by class name at the end of the command line): ChatStreamUser (default, streaming "
    "chat), ChatUser (non-streaming chat), CompletionStreamUser (streaming /v1/completions), "
    "VisionChatStreamUser (streaming chat with images), MultiTurnChatUser (streaming multi-turn "
    "conversations). "
    "Results go to a run folder (records.csv, summary.json, metadata.json); see docs/loadtest.md."
)

# (flags, argparse keyword arguments); web-UI visibility is set on each action below.
_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--run-dir",), {"metavar": "PATH", "help": "run folder to write (default: results/<time>-<label>)"}),
    (
        ("--label",),
        {
            "metavar": "NAME",
            "default": "run",
            "help": "name of the run, e.g. the server profile (default: run)",
        },
    ),
    (
        ("--model",),
        {"metavar": "ID", "help": "model id to request (default: the first id from GET /v1/models)"},
    ),
    (
        ("--max-tokens",),
        {
            "metavar": "N",
            "type": int,
            "default": DEFAULT_MAX_TOKENS,
            "help": f"max_tokens per request (default: {DEFAULT_MAX_TOKENS})",
        },
    ),
    (("--ignore-eos",), {"action": "store_true", "help": "send ignore_eos: true (fixed-length outputs)"}),
    (
        ("--temperature",),
        {"metavar": "T", "type": float, "help": "sampling temperature to send (default: server's)"},
    ),
    (
        ("--prompt-tokens",),
        {
            "metavar": "N",
            "type": int,
            "default": 64,
            "help": "mean synthetic prompt length, tokens as the server counts them (chat template included)",
        },
    ),
    (
        ("--tokenizer",),
        {
            "metavar": "PATH|ID",
            "help": "tokenizer for exact prompt lengths and output token counts: a local folder or a Hugging "
            "Face id already in the local cache (never downloaded); default: the server's POST /tokenize, "
            "else a calibration on the server's usage (approximate)",
        },
    ),
    (
        ("--prompt-dist",),
        {"choices": ["fixed", "uniform", "normal"], "default": "fixed", "help": "prompt length distribution"},
    ),
    (
        ("--prompt-tokens-spread",),
        {
            "metavar": "N",
            "type": int,
            "default": 0,
            "help": "uniform: +/- this many; normal: standard deviation",
        },
    ),
    (
        ("--prompt-file",),
        {"metavar": "JSONL", "help": 'prompts, one {"prompt"|"messages", "max_tokens"?} per line'},
    ),
    (
        ("--arrival",),
        {
            "choices": ["closed", "constant", "poisson", "poisson-exact", "trace"],
            "default": "closed",
            "help": "closed: users wait for answers (+ think time); constant/poisson: open loop at --rate; "
            "poisson-exact: Poisson times, exactly rate x 5 s arrivals in every 5 s; "
            "trace: open loop on the --trace file's timestamps",
        },
    ),
    (
        ("--rate",),
        {"metavar": "R", "type": float, "help": "open-loop arrival rate, requests/s for the whole run"},
    ),
    (
        ("--seed",),
        {
            "metavar": "N",
            "type": int,
            "default": 0,
            "help": "seed for prompts and Poisson arrivals (default: 0)",
        },
    ),
    (
        ("--warmup-s",),
        {"metavar": "S", "type": float, "default": 0.0, "help": "seconds at the start excluded from results"},
    ),
    (
        ("--ready-timeout-s",),
        {
            "metavar": "S",
            "type": float,
            "default": 120.0,
            "help": "before the run, wait this long for the server to be ready (default: 120)",
        },
    ),
    (
        ("--request-timeout-s",),
        {
            "metavar": "S",
            "type": float,
            "default": 60.0,
            "help": "client deadline for a whole request, stream included (default: 60)",
        },
    ),
    (
        ("--think-time-s",),
        {
            "metavar": "S",
            "type": float,
            "default": 0.0,
            "help": "closed loop: pause between a user's requests",
        },
    ),
    (
        ("--image-size",),
        {
            "metavar": "WxH",
            "default": "64x64",
            "help": "VisionChatStreamUser: size of the generated images (default: 64x64)",
        },
    ),
    (
        ("--image-dir",),
        {"metavar": "PATH", "help": "VisionChatStreamUser: send the images in this folder instead"},
    ),
    (
        ("--images-per-request",),
        {
            "metavar": "N",
            "type": int,
            "default": 1,
            "help": "VisionChatStreamUser: images per request (default: 1)",
        },
    ),
    (
        ("--server-metrics",),
        {
            "metavar": "URL|auto|off",
            "default": "auto",
            "help": "Prometheus endpoint to scrape during the run into server_metrics.csv (default auto: the "
            "target's /metrics, off with a note when it does not answer Prometheus text)",
        },
    ),
    (
        ("--server-metrics-interval-s",),
        {
            "metavar": "S",
            "type": float,
            "default": SERVER_METRICS_INTERVAL_S,
            "help": f"seconds between scrapes of --server-metrics (default: {SERVER_METRICS_INTERVAL_S:g})",
        },
    ),
    (
        ("--check-outputs",),
        {
            "action": "store_true",
            "help": "greedy requests (temperature 0, top_p 1) on a bounded set of prompts, each answered "
            "alone before the clock; every reply under load is compared with that reference "
            "(summary.json output_check)",
        },
    ),
    (
        ("--check-outputs-prompts",),
        {
            "metavar": "N",
            "type": int,
            "default": 16,
            "help": "--check-outputs: distinct prompts, sent in turn under load (default: 16)",
        },
    ),
    (("--slo-ttft-ms",), {"metavar": "MS", "type": float, "help": "goodput SLO on time to first token"}),
    (("--slo-tpot-ms",), {"metavar": "MS", "type": float, "help": "goodput SLO on time per output token"}),
    (("--slo-e2e-ms",), {"metavar": "MS", "type": float, "help": "goodput SLO on end-to-end latency"}),
]


def _in_web_ui(action: argparse.Action, *, secret: bool = False) -> None:
    # Locust's web UI lists actions with these attributes; only its own parser.add_argument sets them,
    # and ours go through an argument group (for a section of their own in --help). They are Locust's,
    # unknown to argparse.Action, hence setattr.
    web_ui = {"include_in_web_ui": True, "is_secret": secret, "is_required": False, "is_multiple": False}
    for name, value in web_ui.items():
        setattr(action, name, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(GROUP_TITLE, GROUP_DESCRIPTION)
    for flags, kwargs in [*_OPTIONS, *workload_options.OPTIONS]:
        _in_web_ui(group.add_argument(*flags, **kwargs))
    key = group.add_argument(
        "--api-key",
        env_var="MLXBENCH_API_KEY",
        help="sent as 'Authorization: Bearer KEY' (env MLXBENCH_API_KEY)",
    )
    _in_web_ui(key, secret=True)
    # Streaming chat is the default scenario; naming classes on the command line or in LOCUST_USER_CLASSES
    # still selects others.
    if not os.environ.get("LOCUST_USER_CLASSES"):
        parser.set_defaults(user_classes=[DEFAULT_SCENARIO])
    _stop_timeout_default(parser)


def _stop_timeout_default(parser: argparse.ArgumentParser) -> None:
    """Make Locust's --stop-timeout default ours: let requests in flight finish, bounded by their deadline."""
    for action in parser._actions:
        if action.dest == "stop_timeout":
            action.default = STOP_TIMEOUT_UNSET
            action.help = (
                "seconds the requests in flight at the end of the run may take to finish (default: "
                "--request-timeout-s + 1, so none is cut); 0 stops them at once (outcome 'cut')"
            )


def stop_timeout_s(given: float | None, request_timeout_s: float) -> float:
    """The stop timeout to use: the one given (0 included), else the request deadline plus a margin."""
    if given is None or given < 0:
        return request_timeout_s + STOP_TIMEOUT_MARGIN_S
    return given


@dataclass(frozen=True, slots=True)
class LoadSettings:
    run_dir: str | None = None
    label: str = "run"
    model: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    ignore_eos: bool = False
    temperature: float | None = None
    prompt_tokens: int = 64
    prompt_dist: str = "fixed"
    prompt_tokens_spread: int = 0
    prompt_file: str | None = None
    tokenizer: str | None = None
    ready_timeout_s: float = 120.0
    arrival: str = "closed"
    rate: float | None = None
    seed: int = 0
    warmup_s: float = 0.0
    request_timeout_s: float = 60.0
    think_time_s: float = 0.0
    image_size: str = "64x64"
    image_dir: str | None = None
    images_per_request: int = 1
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_e2e_ms: float | None = None
    check_outputs: bool = False
    check_outputs_prompts: int = 16
    api_key: str | None = None
    # ---- the server's metrics during the run (loadgen.server_scrape) ----
    server_metrics: str = "auto"
    server_metrics_interval_s: float = SERVER_METRICS_INTERVAL_S
    # ---- workloads (loadgen.workloads.options) ----
    turns: int = 4
    turns_spread: int = 0
    shared_prefixes: int = 0
    shared_prefix_tokens: int = 256
    shared_prefix_share: float = 1.0
    trace: str | None = None
    trace_time_scale: float = 1.0
    trace_block_tokens: int = 512
    dataset: str | None = None
    dataset_mode: str = "first-turn"
    dataset_limit: int = 1000

    @classmethod
    def from_options(cls, options: Any) -> LoadSettings:
        return cls(**{name: getattr(options, name) for name in cls.__slots__ if hasattr(options, name)})

    @property
    def open_loop(self) -> bool:
        return self.arrival != "closed"

    def problems(self) -> list[str]:
        out = []
        if self.arrival in OPEN_LOOP_MODES and not (self.rate and self.rate > 0):
            out.append(f"--arrival {self.arrival} needs --rate > 0")
        if self.max_tokens < 1:
            out.append("--max-tokens must be at least 1")
        if self.prompt_tokens < 1:
            out.append("--prompt-tokens must be at least 1")
        if self.request_timeout_s <= 0:
            out.append("--request-timeout-s must be positive")
        if self.ready_timeout_s <= 0:
            out.append("--ready-timeout-s must be positive")
        if self.warmup_s < 0 or self.think_time_s < 0:
            out.append("--warmup-s and --think-time-s cannot be negative")
        if self.prompt_file and not Path(self.prompt_file).is_file():
            out.append(f"--prompt-file {self.prompt_file}: no such file")
        if self.server_metrics_interval_s <= 0:
            out.append("--server-metrics-interval-s must be positive")
        if self.images_per_request < 1:
            out.append("--images-per-request must be at least 1")
        try:
            parse_size(self.image_size)
            if self.image_dir:
                folder_images(self.image_dir)
        except ImageOptionError as exc:
            out.append(str(exc))
        return out + self._check_problems() + workload_options.problems(self)

    def _check_problems(self) -> list[str]:
        """--check-outputs needs one right answer per prompt, and each prompt's body fixed in advance."""
        if not self.check_outputs:
            return []
        out = []
        if self.check_outputs_prompts < 1:
            out.append("--check-outputs-prompts must be at least 1")
        if self.temperature not in (None, 0.0):
            out.append(f"--check-outputs sends temperature 0 (greedy): --temperature {self.temperature:g} "
                       "contradicts it")  # fmt: skip
        if self.shared_prefixes:
            out.append("--check-outputs does not combine with --shared-prefixes (a prompt's body would vary)")
        if self.arrival == "trace":
            out.append("--check-outputs reuses a few prompts: it does not combine with --arrival trace")
        return out

    def public(self) -> dict[str, Any]:
        """For metadata.json: everything but the API key."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}
