"""The embedded tiny models: their recipes and the build cache (stamped folders, built once, atomically).

Light to import: a recipe names its builder as "module:function", and only a build imports it (with
mlx, tokenizers and transformers), so finding a current build loads none of them.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from configkit import REPO_ROOT

logger = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
DEFAULT_EMBEDDED_NAME = "tiny-llama"
DEFAULT_MODEL_SPEC = f"{EMBEDDED_PREFIX}{DEFAULT_EMBEDDED_NAME}"
CACHE_DIR_ENV = "MLXBENCH_CACHE_DIR"
STAMP_FILE = "mlxbench-build.json"
# Bump when a builder's code changes in a way that changes its output.
BUILD_FORMAT = 1
# Libraries whose version can change the bytes written; a change triggers a rebuild.
BUILD_LIBRARIES = ("mlx", "mlx-lm", "tokenizers", "transformers")
# Recipe fields that enter the stamp only when set (see EmbeddedRecipe.payload).
LATER_FIELDS = ("processor_config", "libraries", "eos_logit_drop")

UNK, ENDOFTEXT, IM_START, IM_END = "<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, VISION_PAD = "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
# Qwen2-VL's special tokens, in Qwen's order; config.json names their ids.
QWEN_SPECIAL_TOKENS = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)


class ModelNotFoundError(ValueError):
    """A model spec that names nothing usable on this machine."""


@dataclass(frozen=True)
class EmbeddedRecipe:
    """How to build one embedded model. Every field except `builder` feeds the stamp hash."""

    name: str
    summary: str
    # "module:function" of the builder, imported only to build: checking a cached build stays light.
    builder: str = field(repr=False, compare=False)
    # Architecture settings for config.json; vocab_size is taken from the trained tokenizer.
    model_config: Mapping[str, Any] = field(default_factory=dict)
    tokenizer_vocab_size: int = 512
    special_tokens: tuple[str, ...] = (UNK, ENDOFTEXT, IM_START, IM_END)
    eos_token: str = IM_END
    corpus_lines: int = 4000
    seed: int = 20240917
    # GPT's 0.02 leaves the residual stream dominated by the input embedding, so greedy decoding repeats
    # one token forever; 0.1 gives varied text under greedy and sampling alike.
    init_std: float = 0.1
    # Image processor settings (preprocessor_config.json) for vision models.
    processor_config: Mapping[str, Any] = field(default_factory=dict)
    # Libraries beyond BUILD_LIBRARIES whose version can change this recipe's bytes.
    libraries: tuple[str, ...] = ()
    # Lower the EOS token's logit by about this many nats (0: off), so that random weights rarely end a
    # reply at once or early and a first run shows full-length replies (see _lower_eos_logit in
    # text_builder.py). llama only.
    eos_logit_drop: float = 0.0

    def payload(self) -> dict[str, Any]:
        """The recipe as plain JSON-able data, with the builder named rather than pickled.

        Fields added after format 1 appear only when set, so older recipes keep their fingerprint.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "builder"}
        data["model_config"] = dict(self.model_config)
        data["special_tokens"] = list(self.special_tokens)
        data["processor_config"] = dict(self.processor_config)
        data["libraries"] = list(self.libraries)
        data["builder"] = self.builder.rpartition(":")[2]  # the function's name, as before
        for name in LATER_FIELDS:
            if not data[name]:
                del data[name]
        return data


def default_cache_dir() -> Path:
    """`$MLXBENCH_CACHE_DIR`, else `<repo root>/.cache/models` (git-ignored)."""
    if env := os.environ.get(CACHE_DIR_ENV):
        return Path(env).expanduser()
    return REPO_ROOT / ".cache" / "models"


def recipe_fingerprint(recipe: EmbeddedRecipe) -> str:
    """sha256 of the recipe, the build format and the versions of the libraries that write the files."""
    versions = {lib: metadata.version(lib) for lib in (*BUILD_LIBRARIES, *recipe.libraries)}
    blob = json.dumps(
        {"format": BUILD_FORMAT, "recipe": recipe.payload(), "versions": versions}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _stamp_matches(folder: Path, fingerprint: str) -> bool:
    try:
        stamp = json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("recipe_sha256") == fingerprint


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def build_embedded_model(
    name: str = DEFAULT_EMBEDDED_NAME, cache_dir: Path | None = None, force: bool = False
) -> Path:
    """Build embedded model `name` into `cache_dir/name` unless its stamp is current; return the folder."""
    recipe = _embedded_recipe(name)
    cache_dir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).absolute()
    target = cache_dir / name
    fingerprint = recipe_fingerprint(recipe)
    if not force and _stamp_matches(target, fingerprint):
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Built beside the target so the final rename stays on one filesystem and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=cache_dir))
    try:
        started = time.perf_counter()
        builder_for(recipe)(recipe, tmp)
        # The stamp goes in last: a folder with a valid stamp is a complete build.
        write_json(tmp / STAMP_FILE, {"name": name, "recipe_sha256": fingerprint, "recipe": recipe.payload()})
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other folder
        if _install(tmp, target, fingerprint, force):
            logger.info("built %s in %.2f s: %s", name, time.perf_counter() - started, target)
        else:
            logger.info("another process built %s first; using its folder", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _embedded_recipe(name: str) -> EmbeddedRecipe:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelNotFoundError(
            f"unknown embedded model {name!r}: known names are {known} (use {EMBEDDED_PREFIX}NAME)"
        ) from None


def _install(tmp: Path, target: Path, fingerprint: str, force: bool, attempts: int = 5) -> bool:
    """Rename `tmp` to `target`; False if another process got there first with the same recipe."""
    for _ in range(attempts):
        try:
            # Succeeds when the target is missing (or an empty folder).
            tmp.rename(target)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if not force and _stamp_matches(target, fingerprint):
            return False
        _move_aside(target)
    raise RuntimeError(f"could not install {target}: it kept being replaced by other processes")


def _move_aside(target: Path) -> None:
    """Rename a stale build out of the way, then delete it; a concurrent mover may beat us to it."""
    trash = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        target.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def builder_for(recipe: EmbeddedRecipe) -> Callable[[EmbeddedRecipe, Path], None]:
    """Import the recipe's builder (mlx, tokenizers and transformers come with it)."""
    module, _, function = recipe.builder.partition(":")
    return getattr(importlib.import_module(module), function)


# With random weights, EOS is as likely as any token: a default run ended some replies at once (an empty
# reply) and most before max_tokens. 20 nats below the rest makes an EOS about e^-20 as likely.
EMBEDDED_EOS_LOGIT_DROP = 20.0

EMBEDDED_MODELS: dict[str, EmbeddedRecipe] = {
    "tiny-llama": EmbeddedRecipe(
        name="tiny-llama",
        summary="4-layer llama, hidden 256, ~512-token ASCII BPE vocab, random weights, EOS logit lowered",
        builder="server.models.text_builder:build_tiny_llama",
        eos_logit_drop=EMBEDDED_EOS_LOGIT_DROP,
        model_config={
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 688,
            "max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
        },
    ),
    "tiny-qwen2-vl": EmbeddedRecipe(
        name="tiny-qwen2-vl",
        summary="Qwen2-VL: 2-layer text model, hidden 128; 2-block vision tower; 4-16 tokens per image",
        builder="server.models.vision_builder:build_tiny_qwen2_vl",
        model_config={
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 344,
            "max_position_embeddings": 4096,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
            # Sums to head_dim / 2 = 16: the rotary frequencies split over time, height and width.
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
            "vision_config": {
                "model_type": "qwen2_vl",
                "depth": 2,
                "embed_dim": 64,
                "num_heads": 4,
                # The merger projects into the text model, so this is the text hidden size.
                "hidden_size": 128,
                # An int: transformers validates it strictly, and mlx-vlm hides that error.
                "mlp_ratio": 2,
                "patch_size": 14,
                "spatial_patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "in_channels": 3,
            },
        },
        special_tokens=QWEN_SPECIAL_TOKENS,
        processor_config={
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            # One image token covers 28x28 pixels: every image becomes 4 to 16 tokens.
            "min_pixels": 56 * 56,
            "max_pixels": 112 * 112,
        },
        libraries=("mlx-vlm",),
    ),
}
