"""One settings model for the server: YAML file < environment < command line.

Validated once at start; any unknown or mistyped key raises `ConfigError`, which the command line turns
into exit code 2 with the key's dotted path in the message.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from configkit import REPO_ROOT, Strict, merge, read_yaml, validation_message

log = logging.getLogger(__name__)

MIGRATION_DOC = "docs/MIGRATION_V1.2.md"
API_KEY_ENV = "MLXBENCH_API_KEY"
COMPAT_V111 = "v1.1.1"


class ConfigError(Exception):
    """A config file or option is wrong; the command line exits with `exit_code`."""

    exit_code = 2


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_key: str | None = None
    shutdown_grace_s: float = Field(30.0, ge=0)


class ModelSettings(Strict):
    # "embedded:tiny-llama", a local mlx-lm/mlx-vlm folder, or a Hugging Face repo id in the local cache.
    path: str = "embedded:tiny-llama"
    # text (mlx-lm) or vision (mlx-vlm); auto reads the model's config.json (a vision_config means vision).
    kind: Literal["auto", "text", "vision"] = "auto"
    # The id clients send as `model`; defaults to the last part of `path`.
    name: str | None = None
    # v1.1.1 limiter tier; default: from the parameter count in the weights, else a size in the name.
    tier: Tier | None = None

    @property
    def served_name(self) -> str:
        return self.name or self.path.rstrip("/").split("/")[-1].split(":")[-1]


class EngineSettings(Strict):
    # false: load the model for each request and drop it after (what the guide says mlx-engine did).
    persistent: bool = True
    max_batch_size: int = Field(32, ge=1, le=1024)
    # Prompts prefilled together at most (mlx-lm's default is 8; the release profiles keep 8).
    prefill_batch_size: int = Field(32, ge=1, le=1024)
    prefill_step_size: int = Field(2048, ge=16)
    max_kv_size: int | None = Field(None, ge=16)
    # Scheduling (docs/operations.md, "Scheduling"). At most this many sequences in the batch (prefilling
    # or decoding); later requests wait in the worker's FIFO. null: max_batch_size; "auto": the smallest
    # batch size whose decode tok/s, timed at start on this machine, is within 5% of the best.
    decode_batch_cap: int | Literal["auto"] | None = None
    # With sequences decoding, hold a new arrival up to this long so that arrivals join (and are
    # prefilled) together, up to prefill_batch_size; 0 joins each one at the next step.
    prefill_wait_ms: float = Field(0.0, ge=0, le=1000)
    # split: the worker hands mlx-lm one group of prompts at a time, the next once the previous has its
    # first tokens out, a burst in two groups (the first just over half); mlx: all at once, mlx-lm groups
    # them prefill_batch_size at a time (what the releases ran).
    prefill_schedule: Literal["split", "mlx"] = "split"
    # Send a prompt's first token at the end of the step that finished its prefill, a decode step sooner.
    early_first_token: bool = True
    # A crashed worker restarts after restart_delay_s, doubling up to 8 s; after max_restarts in a row
    # without a successful load the model is marked failed.
    max_restarts: int = Field(5, ge=0)
    restart_delay_s: float = Field(0.5, ge=0)

    @field_validator("decode_batch_cap", mode="before")
    @classmethod
    def _cap_is_a_size_or_auto(cls, value: Any) -> Any:
        if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
            if isinstance(value, int) and value < 1:
                raise ValueError("must be at least 1")
            return value
        raise ValueError("must be a whole number of sequences, 'auto' or null")

    @model_validator(mode="after")
    def _cap_within_batch(self) -> EngineSettings:
        cap = self.decode_batch_cap
        if isinstance(cap, int) and cap > self.max_batch_size:
            raise ValueError(
                f"engine.decode_batch_cap ({cap}) must not exceed "
                f"engine.max_batch_size ({self.max_batch_size})"
            )
        return self


class PrefixCacheSettings(Strict):
    """Reuse of the KV of earlier prompts and replies (docs/operations.md, "Prefix cache"); text only."""

    enabled: bool = True
    max_entries: int = Field(64, ge=1, le=100_000)  # cached sequences, least recently used out first
    max_bytes: int = Field(256 << 20, ge=1 << 20)  # KV bytes held by the cache (not counting running ones)
    # A shorter common prefix is not reused (a miss): a chat template's first few tokens save nothing.
    min_tokens: int = Field(4, ge=1)


class StreamingSettings(Strict):
    # IPC token buffering: the first token goes out at once, then up to `batch_tokens` tokens per message,
    # or whatever is buffered after `flush_ms`, whichever comes first.
    batch_tokens: int = Field(16, ge=1, le=4096)
    flush_ms: float = Field(20.0, ge=0)


class ImageSettings(Strict):
    max_bytes: int = Field(4 << 20, ge=1024)  # per image, after base64 decoding
    max_images_per_request: int = Field(4, ge=0)
    # Checked from the image header before anything is decoded: refuses decompression bombs.
    max_pixels: int = Field(4096 * 4096, ge=1)
    # `file://` or plain paths, only below this folder; off unless set.
    local_files_root: str | None = None
    # Fetching http(s) URLs on a client's behalf is a server-side request forgery hole: off by default.
    allow_remote_urls: bool = False
    remote_timeout_s: float = Field(10.0, gt=0)


class LimitSettings(Strict):
    max_body_bytes: int = Field(8 << 20, ge=1024)
    max_prompt_tokens: int = Field(4096, ge=1)
    max_tokens_cap: int = Field(4096, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    max_stop_strings: int = Field(8, ge=0)
    # A JSON body nested deeper than this, or holding more values (array items and object members, at any
    # depth) than this, is refused with 400 before any work is done: parsing cost stays bounded.
    max_json_depth: int = Field(32, ge=4, le=512)
    max_json_elements: int = Field(100_000, ge=16)
    # Requests beyond max_batch_size wait inside the engine; past this many waiting, 429 server_overloaded,
    # so memory cannot grow without bound.
    max_waiting_requests: int = Field(1024, ge=0)
    # A request still running after this long ends with request_timeout (504, or an error event).
    request_timeout_s: float = Field(600.0, gt=0)
    # A client that does not take a chunk within this long is dropped (a slow reader holds memory).
    write_timeout_s: float = Field(30.0, gt=0)


Tier = Literal["30B+", "13-27B", "7-13B", "3-7B", "<3B"]


class TierLimit(Strict):
    """Overrides for one tier; a key left out keeps v1.1.1's value (server/admission.py)."""

    max_concurrent: int | None = Field(None, ge=1)
    queue_depth: int | None = Field(None, ge=0)
    queue_timeout_ms: int | None = Field(None, ge=1)


class LimiterSettings(Strict):
    """v1.1.1's model concurrency limiter; only honoured under `compat: v1.1.1`."""

    enabled: bool = True
    # http: 429 / 503 with distinct codes (ours). in_stream: a 200 reply carrying an error event under one
    # generic code, as v1.1.1 answered (clients could not tell a rejection from a timeout).
    error_mode: Literal["http", "in_stream"] = "http"
    retry_after_s: int = Field(1, ge=0)
    # name: v1.1.1's rule (the first number before `b` in the model's name; none -> 7-13B with a warning).
    # weights: the parameter count read from the loaded weights (what v1.1.1 should have done).
    tier_source: Literal["name", "weights"] = "name"
    # code_defaults: the table in v1.1.1's code (2/10, 4/20, 6/30, 8/40, 10/50), probably what ran, since
    # its runtime.yaml's snake_case keys were never read. runtime_yaml: that file's "M3 Max" table.
    tier_table: Literal["code_defaults", "runtime_yaml"] = "code_defaults"
    tier_limits: dict[Tier, TierLimit] = {}
    # Multiplies every tier's queue_depth and queue_timeout_ms (after tier_limits; rounded, at least 1).
    # Both scale together, so the timeout keeps its ratio to the time a full queue takes to drain at any
    # service rate, and the overload shares stay those of the release; only the time the queue needs to
    # fill (and a benchmark point to reach steady state) shrinks. 1: v1.1.1's own values.
    queue_scale: float = Field(1.0, gt=0, le=1)


class MlxSettings(Strict):
    # The two v1.1.1 knobs, ignored (with a deprecation warning) unless `compat: v1.1.1`.
    concurrency_limit: int | None = Field(None, ge=1)
    force_metal_sync: bool | None = None  # accepted and without effect, as in v1.1.1 (parsed, never used)
    # A device synchronization (mx.synchronize) after every decode step: what force_metal_sync promised.
    # Its own knob, off in every profile; a switch for measuring what such a sync costs.
    device_sync_every_step: bool = False
    # Accepted for compatibility with mlx-serving config files; they change nothing here.
    default_context_length: int | None = Field(None, ge=1)
    cache_weights: bool | None = None


class StreamRegistrySettings(Strict):
    """v1.2.0's stream registry cap (its `stream_registry.max_active_streams`, default 10), in the HTTP
    process: beyond it a new stream is refused at once (no queue). Off (null) unless a profile sets it."""

    max_active_streams: int | None = Field(None, ge=1)
    # in_stream: as v1.2.0 answered (its registry threw, and the error reached the caller inside the reply
    # under the same generic code as the limiter's refusals); http: 429 max_active_streams_exceeded.
    error_mode: Literal["http", "in_stream"] = "in_stream"
    retry_after_s: int = Field(1, ge=0)


class PythonRuntimeSettings(Strict):
    """What v1.2.0's Python runtime still did after the TypeScript side dropped `mlx.concurrency_limit`:
    it read the key with a default of 1, so text generation stayed one sequence at a time."""

    concurrency_limit: int | None = Field(None, ge=1)  # at most N sequences generating; null: no limit


class TestingSettings(Strict):
    """Settings that make the server worse on purpose, to test the tools that must notice (the CI gate's
    error rates are measured against a server made a known amount slower). Off by default; a release
    profile (config/profiles/) refuses them, so no comparison of releases can carry one by mistake."""

    # Each cycle of the worker (its commands, one engine step, the events sent: one token of every running
    # sequence) takes this much longer: after it, the worker waits for the engine's step in flight, then
    # keeps the engine busy (small matrix products on its stream, CPU burnt as by slower code) for this
    # share of the cycle's time (server/worker/batch_loop.py, slow_down; measured cost: docs/reports.md).
    slowdown_pct: float = Field(0.0, ge=0.0, le=1000.0)


class Settings(Strict):
    compat: Literal["v1.2.0", "v1.1.1"] = "v1.2.0"
    # The profile it runs, by name (the --profile file's name, e.g. guide-promise, whose compat is v1.2.0):
    # what /health reports as `profile`, so that run folders and reports name what ran.
    profile: str | None = None
    server: ServerSettings = ServerSettings()
    model: ModelSettings | None = None
    # Several models, each in its own worker process, routed by the request's `model`.
    models: list[ModelSettings] = []
    engine: EngineSettings = EngineSettings()
    prefix_cache: PrefixCacheSettings = PrefixCacheSettings()
    streaming: StreamingSettings = StreamingSettings()
    limits: LimitSettings = LimitSettings()
    images: ImageSettings = ImageSettings()
    mlx: MlxSettings = MlxSettings()
    model_concurrency_limiter: LimiterSettings | None = None
    stream_registry: StreamRegistrySettings = StreamRegistrySettings()
    python_runtime: PythonRuntimeSettings = PythonRuntimeSettings()
    testing: TestingSettings = TestingSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> Settings:
        if self.model is not None and self.models:
            raise ValueError("give either 'model' or 'models', not both")
        names = [m.served_name for m in self.served_models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"models: two models are served as {', '.join(duplicates)}; set distinct 'name's"
            )
        return self

    @property
    def served_models(self) -> list[ModelSettings]:
        return self.models or [self.model or ModelSettings()]

    @field_validator("limits")
    @classmethod
    def _default_within_cap(cls, limits: LimitSettings) -> LimitSettings:
        if limits.default_max_tokens > limits.max_tokens_cap:
            raise ValueError("default_max_tokens must not exceed max_tokens_cap")
        return limits


DEPRECATIONS = {
    "mlx.concurrency_limit": (
        "mlx.concurrency_limit is deprecated in v1.2.0+ and will be ignored.\n"
        "MLX now uses native Metal scheduler."
    ),
    "mlx.force_metal_sync": "mlx.force_metal_sync is deprecated in v1.2.0+ and will be ignored.",
    "model_concurrency_limiter": (
        "model_concurrency_limiter is deprecated in v1.2.0+ and will be ignored.\n"
        "Trust MLX's native Metal scheduler for better performance (+3-5% throughput)."
    ),
}


def deprecation_warnings(raw: dict[str, Any]) -> list[str]:
    """The guide's warning lines for each legacy key present in a raw config mapping."""
    mlx = raw.get("mlx") or {}
    present = {
        "mlx.concurrency_limit": isinstance(mlx, dict) and "concurrency_limit" in mlx,
        "mlx.force_metal_sync": isinstance(mlx, dict) and "force_metal_sync" in mlx,
        "model_concurrency_limiter": "model_concurrency_limiter" in raw,
    }
    return [
        f"[mlx-serving] DEPRECATION WARNING: {DEPRECATIONS[key]} See {MIGRATION_DOC} for details."
        for key, is_present in present.items()
        if is_present
    ]


def _strip_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """Drop the v1.1.1 keys so that nothing downstream can act on them."""
    cleaned = {k: v for k, v in raw.items() if k != "model_concurrency_limiter"}
    if isinstance(cleaned.get("mlx"), dict):
        cleaned["mlx"] = {
            k: v for k, v in cleaned["mlx"].items() if k not in ("concurrency_limit", "force_metal_sync")
        }
    return cleaned


def build_settings(
    raw: dict[str, Any], source: str = "config", overrides: dict[str, Any] | None = None, warn=None
) -> Settings:
    """Validate a raw mapping (file contents), apply environment then command-line overrides."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    if raw.get("compat") != COMPAT_V111:
        for line in deprecation_warnings(raw):
            warn(line)
        raw = _strip_legacy(raw)
    env: dict[str, Any] = {}
    if os.environ.get(API_KEY_ENV):
        env = {"server": {"api_key": os.environ[API_KEY_ENV]}}
    merged = merge(merge(raw, env), overrides or {})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_message(exc)}") from None


PROFILES_DIR = REPO_ROOT / "config" / "profiles"


def profile_path(name_or_path: str) -> Path:
    """A profile is found by name in config/profiles/ (`v1.1.1`), or given as a path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown profile '{name_or_path}' (known: {known})")
    return path


def load_settings(
    path: Path | None, overrides: dict[str, Any] | None = None, warn=None, profile: str | None = None
) -> Settings:
    """The config file, with a profile overlaid section by section, then environment and overrides."""
    raw = read_yaml(path, "config file", ConfigError) if path is not None else {}
    source = str(path or "defaults")
    release: Path | None = None
    if path is not None and not profile:
        # No overlay: the config file is what runs (runtime.yaml: "runtime"), not the compat it declares.
        raw.setdefault("profile", Path(path).stem)
    if profile:
        overlay = profile_path(profile)
        raw = merge(raw, read_yaml(overlay, "config file", ConfigError))
        raw.setdefault("profile", Path(overlay).stem)
        source += f" + {overlay}"
        if overlay.resolve().parent == PROFILES_DIR.resolve():
            release = overlay
    settings = build_settings(raw, source, overrides, warn)
    if release is not None and settings.testing != TestingSettings():
        raise ConfigError(
            f"{source}: testing.* settings make the server slower on purpose and the release profile "
            f"{release.stem} refuses them; use them without a release profile (e.g. --profile "
            f"config/testing/slowdown-10.yaml over config/runtime.yaml)"
        )
    return settings
