"""Model specs to folders: `embedded:NAME` (built on first use), a local folder, or a cached hub repo id.

Imports nothing heavy (no mlx, transformers or tokenizers): the HTTP process resolves its models here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from server.models.embedded import (
    DEFAULT_MODEL_SPEC,
    EMBEDDED_PREFIX,
    ModelNotFoundError,
    build_embedded_model,
)

# Files an mlx-lm model needs from a Hugging Face snapshot (mirrors mlx_lm.utils.DEFAULT_ALLOW_PATTERNS),
# so a snapshot downloaded by mlx-lm is not reported as incomplete.
HF_ALLOW_PATTERNS = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "tokenizer.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
]
HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def resolve_model_path(spec: str, cache_dir: Path | None = None) -> Path:
    """`embedded:NAME`, a local folder with config.json, or a repo id already in the Hugging Face cache."""
    if spec.startswith(EMBEDDED_PREFIX):
        return build_embedded_model(spec.removeprefix(EMBEDDED_PREFIX), cache_dir)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.absolute()
        raise ModelNotFoundError(
            f"model folder {spec!r} has no config.json; give the folder of an mlx-lm model"
        )
    if path.exists():
        raise ModelNotFoundError(f"model spec {spec!r} is a file; give a model folder containing config.json")
    if HF_REPO_ID.match(spec):
        return _cached_snapshot(spec)
    raise ModelNotFoundError(
        f"model {spec!r} not found: it is not a local folder, not {EMBEDDED_PREFIX}NAME and not a "
        f"Hugging Face repo id (owner/name); use {DEFAULT_MODEL_SPEC}, a local model folder, "
        "or a cached repo id"
    )


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment on each call.

    huggingface_hub reads HF_HOME once at import; reading it here lets callers and tests redirect it.
    """
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    return Path(hf_constants.HF_HUB_CACHE)


def _cached_snapshot(repo_id: str) -> Path:
    cache = hf_hub_cache_dir()
    try:
        # local_files_only: this project never downloads from the hub.
        folder = Path(
            snapshot_download(
                repo_id, local_files_only=True, cache_dir=cache, allow_patterns=HF_ALLOW_PATTERNS
            )
        )
    except (LocalEntryNotFoundError, HFValidationError) as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} not found: no local folder of that name and no complete snapshot in the "
            f"Hugging Face cache {cache} ({type(exc).__name__}); nothing is downloaded here: run "
            f"`hf download {repo_id}` (or `huggingface-cli download {repo_id}`) on a machine with internet "
            f"and copy the cache (or set HF_HOME), give a local model folder, or use {DEFAULT_MODEL_SPEC}"
        ) from exc
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"cached snapshot of {repo_id!r} at {folder} has no config.json")
    return folder
