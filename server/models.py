"""Model specs for the server: the embedded tiny models, built offline, and local or cached models.

`python -m server.models build` builds the embedded model and prints its folder;
`python -m server.models resolve SPEC` prints the folder a spec resolves to.
"""

from __future__ import annotations

import argparse
import copy
import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PRETOKENIZE_REGEX

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
METASPACE = "\u2581"
# Printable ASCII plus newline and tab; the metaspace stands in for " ", so every piece is complete text.
ASCII_ALPHABET = (*(chr(c) for c in range(0x21, 0x7F)), "\n", "\t", METASPACE)
ASCII_TEXT_CHARS = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n\t"

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- if message['content'] is not string -%}"
    "{{- raise_exception('Only plain-text (string) message content is supported') -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# ChatML with OpenAI content parts: each image part becomes Qwen2-VL's image placeholder, which the
# processor expands to one <|image_pad|> per image token.
QWEN2_VL_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('Unsupported role: ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('Unsupported content part: ' + part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)
# CLIP's normalization, as Qwen2-VL's image processor uses.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Seed words for the synthetic training corpus; the tokenizer's merges come from these.
CORPUS_TEXT = (
    "the of and to in is was that for it with as on be at by this had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any my "
    "now such like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very make world "
    "still own see men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three model token server "
    "request stream latency answer question small large fast slow number value water light house city river "
    "story music night morning learn write read think speak open close start finish begin end again always"
)
CORPUS_WORDS = tuple(CORPUS_TEXT.split())
CORPUS_PUNCTUATION = (".", ".", ".", ",", "!", "?", ";", ":")

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


class ModelNotFoundError(ValueError):
    """A model spec that names nothing usable on this machine."""


@dataclass(frozen=True)
class EmbeddedRecipe:
    """How to build one embedded model. Every field except `builder` feeds the stamp hash."""

    name: str
    summary: str
    builder: Callable[[EmbeddedRecipe, Path], None] = field(repr=False, compare=False)
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
    # reply at once or early and a first run shows full-length replies (see _lower_eos_logit). llama only.
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
        data["builder"] = self.builder.__name__
        for name in LATER_FIELDS:
            if not data[name]:
                del data[name]
        return data


# ---------------------------------------------------------------- paths and stamps


def default_cache_dir() -> Path:
    """`$MLXBENCH_CACHE_DIR`, else `<repo root>/.cache/models` (git-ignored)."""
    if env := os.environ.get(CACHE_DIR_ENV):
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / ".cache" / "models"


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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- building


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
        recipe.builder(recipe, tmp)
        # The stamp goes in last: a folder with a valid stamp is a complete build.
        _write_json(
            tmp / STAMP_FILE, {"name": name, "recipe_sha256": fingerprint, "recipe": recipe.payload()}
        )
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


def build_tiny_llama(recipe: EmbeddedRecipe, folder: Path) -> None:
    """Tokenizer first: the model's vocab_size must equal the tokenizer's full size."""
    tokenizer = train_ascii_tokenizer(recipe)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    # The old alias loads in both transformers 4.x and 5.x.
    _set_tokenizer_class(folder / "tokenizer_config.json", "PreTrainedTokenizerFast")
    eos_id = tokenizer.convert_tokens_to_ids(recipe.eos_token)
    config = llama_config(recipe, vocab_size=len(tokenizer), eos_token_id=eos_id)
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json", {"eos_token_id": eos_id, "pad_token_id": config["pad_token_id"]}
    )
    model = llama.Model(llama.ModelArgs.from_dict(config))
    _randomize(model, seed=recipe.seed, std=recipe.init_std)
    if recipe.eos_logit_drop:
        _lower_eos_logit(model, eos_id, recipe.eos_logit_drop, recipe.init_std)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))


def llama_config(recipe: EmbeddedRecipe, vocab_size: int, eos_token_id: int) -> dict[str, Any]:
    """config.json: every llama.ModelArgs field, plus the token ids transformers and mlx-lm look for."""
    args = llama.ModelArgs.from_dict({"model_type": "llama", **recipe.model_config, "vocab_size": vocab_size})
    return {
        "architectures": ["LlamaForCausalLM"],
        **asdict(args),
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": eos_token_id,
        "pad_token_id": recipe.special_tokens.index(ENDOFTEXT),
    }


def build_tiny_qwen2_vl(recipe: EmbeddedRecipe, folder: Path) -> None:
    """A Qwen2-VL checkpoint in the layout mlx_vlm.load reads, with every file it would otherwise fetch."""
    tokenizer = train_byte_level_ascii_tokenizer(recipe, QWEN2_VL_TEMPLATE)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    # mlx-vlm's Qwen2-VL processor loads the tokenizer through AutoTokenizer, as for the real model.
    _set_tokenizer_class(folder / "tokenizer_config.json", "Qwen2Tokenizer")
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = qwen2_vl_config(recipe, vocab_size=len(tokenizer), token_ids=token_ids)
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"]},
    )
    for name, data in qwen2_vl_processor_files(recipe).items():
        _write_json(folder / name, data)
    model = qwen2_vl_model(config)
    _randomize(model, seed=recipe.seed, std=recipe.init_std)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))


def qwen2_vl_config(recipe: EmbeddedRecipe, vocab_size: int, token_ids: Mapping[str, int]) -> dict[str, Any]:
    """config.json: text settings at the root (as Qwen2-VL ships them), `vision_config`, special token ids."""
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        **copy.deepcopy(dict(recipe.model_config)),
        "vocab_size": vocab_size,
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": token_ids[recipe.eos_token],
        "pad_token_id": token_ids[ENDOFTEXT],
        "vision_start_token_id": token_ids[VISION_START],
        "vision_end_token_id": token_ids[VISION_END],
        "vision_token_id": token_ids[VISION_PAD],
        "image_token_id": token_ids[IMAGE_PAD],
        "video_token_id": token_ids[VIDEO_PAD],
    }


def qwen2_vl_processor_files(recipe: EmbeddedRecipe) -> dict[str, dict[str, Any]]:
    """The processor's JSON files; mlx-vlm asks the hub for any that is missing, so all are written."""
    settings = {
        **recipe.processor_config,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    return {
        "preprocessor_config.json": {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor",
            **settings,
        },
        "video_preprocessor_config.json": {
            "video_processor_type": "Qwen2VLVideoProcessor",
            "processor_class": "Qwen2VLProcessor",
            **settings,
        },
        "processor_config.json": {"processor_class": "Qwen2VLProcessor"},
    }


def qwen2_vl_model(config: Mapping[str, Any]) -> nn.Module:
    """The model exactly as mlx_vlm.utils.load_model builds it from `config`."""
    from mlx_vlm.models import qwen2_vl
    from mlx_vlm.utils import update_module_configs

    raw = copy.deepcopy(dict(config))  # from_dict adds text_config to the dict it is given
    model_config = qwen2_vl.ModelConfig.from_dict(raw)
    model_config = update_module_configs(model_config, qwen2_vl, raw, ["text", "vision"])
    return qwen2_vl.Model(model_config)


def _randomize(model: nn.Module, seed: int, std: float) -> None:
    """Draw every matrix from its own key under `seed`; zero the biases.

    Explicit keys keep the bytes independent of mlx-lm's init order and leave the global RNG alone;
    other vectors (norm weights, ones) stay as built. Biases are zeroed because nn.Linear draws them
    from the global RNG (llama has none; Qwen2-VL has several).
    """
    params = dict(tree_flatten(model.parameters()))
    names = sorted(name for name, value in params.items() if value.ndim >= 2)
    keys = mx.random.split(mx.random.key(seed), len(names))
    drawn = {
        name: mx.random.normal(params[name].shape, dtype=params[name].dtype, key=keys[i]) * std
        for i, name in enumerate(names)
    }
    drawn |= {name: mx.zeros_like(value) for name, value in params.items() if name.endswith(".bias")}
    model.load_weights(list(drawn.items()), strict=False)
    mx.eval(model.parameters())


EOS_PROBE_TOKENS = 64  # positions of the fixed probe sequence that sets the EOS drop


def _lower_eos_logit(model: nn.Module, eos_id: int, drop_nats: float, value: float) -> None:
    """Make EOS's logit about `drop_nats` lower than every other token's, at every position.

    llama has no output bias, so one hidden dimension (0) is made a constant: every token's embedding
    holds +value there (EOS's holds -value), and no layer writes into it (row 0 of each o_proj and
    down_proj is zeroed), so the residual stream keeps +value at every generated position. The final
    norm then scales it by w0 / rms(x); with tied embeddings each logit gains h0 * embedding[0], the same
    shift for every token (softmax ignores it) except EOS, which loses 2 * value * h0. w0 is set from the
    residual's rms on a fixed probe sequence, so the build stays deterministic.
    """
    args = model.args
    embed = np.array(model.model.embed_tokens.weight)
    embed[:, 0] = value
    embed[eos_id, 0] = -value
    updates = [("model.embed_tokens.weight", mx.array(embed))]
    for i, layer in enumerate(model.model.layers):
        writers = {"self_attn.o_proj": layer.self_attn.o_proj, "mlp.down_proj": layer.mlp.down_proj}
        for name, module in writers.items():
            weight = np.array(module.weight)
            weight[0, :] = 0.0
            updates.append((f"model.layers.{i}.{name}.weight", mx.array(weight)))
    model.load_weights(updates, strict=False)
    norm = model.model.norm
    model.model.norm = nn.Identity()  # the residual stream itself, before the final norm
    try:
        probe = mx.array([[(7 * k + 3) % args.vocab_size for k in range(EOS_PROBE_TOKENS)]])
        residual = model.model(probe)
    finally:
        model.model.norm = norm
    rms = float(mx.sqrt(mx.mean(residual.astype(mx.float32) ** 2, axis=-1)).max())
    weight = np.array(norm.weight)
    weight[0] = drop_nats * rms / (2 * value * value)
    model.load_weights([("model.norm.weight", mx.array(weight))], strict=False)
    mx.eval(model.parameters())


# ---------------------------------------------------------------- tokenizer


def train_ascii_tokenizer(recipe: EmbeddedRecipe) -> PreTrainedTokenizerFast:
    """BPE over printable ASCII with a metaspace for " ": every token decodes to complete text.

    The decoder is exactly mlx-lm's SentencePiece shape without the leading-space strip, so mlx-lm
    streams it with SPMStreamingDetokenizer, which releases each token's text as soon as it arrives.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
    # "never": no space is invented in front of the text, so encode/decode round-trips ASCII exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=METASPACE, prepend_scheme="never", split=True
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(METASPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    # Only the ASCII alphabet: anything else (accents, CJK, emoji) becomes <unk>.
    _train_bpe(tokenizer, recipe, ASCII_ALPHABET)
    return _wrap_tokenizer(tokenizer, recipe, CHATML_TEMPLATE, unk_token=UNK)


def train_byte_level_ascii_tokenizer(recipe: EmbeddedRecipe, chat_template: str) -> PreTrainedTokenizerFast:
    """Qwen2's byte-level BPE pipeline over an ASCII-only alphabet: every token decodes to complete text.

    transformers 5 rebuilds a Qwen2Tokenizer's pipeline from its vocab and merges (its own regex split,
    ByteLevel), so the tokenizer is trained with that same pipeline. Non-ASCII input maps to bytes
    outside the vocab, which Qwen's BPE (no unk token) drops.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    _train_bpe(tokenizer, recipe, byte_level_chars(ASCII_TEXT_CHARS))
    return _wrap_tokenizer(tokenizer, recipe, chat_template, unk_token=ENDOFTEXT)


def byte_level_chars(text: str) -> tuple[str, ...]:
    """The characters byte-level BPE uses for `text`'s bytes (printable ASCII maps to itself, " " to "Ġ")."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return tuple("".join(piece for piece, _ in byte_level.pre_tokenize_str(text)))


def _train_bpe(tokenizer: Tokenizer, recipe: EmbeddedRecipe, alphabet: Sequence[str]) -> None:
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.tokenizer_vocab_size,
        special_tokens=list(recipe.special_tokens),
        initial_alphabet=list(alphabet),
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tokenizer.train_from_iterator(synthetic_corpus(recipe.corpus_lines, recipe.seed), trainer)


def _wrap_tokenizer(
    tokenizer: Tokenizer, recipe: EmbeddedRecipe, chat_template: str, unk_token: str
) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=unk_token,
        eos_token=recipe.eos_token,
        pad_token=ENDOFTEXT,
        chat_template=chat_template,
        clean_up_tokenization_spaces=False,
        model_max_length=int(recipe.model_config.get("max_position_embeddings", 4096)),
    )


def _set_tokenizer_class(path: Path, name: str) -> None:
    # transformers 5 writes its new backend class name; loaders pick the class from this field.
    config = json.loads(path.read_text())
    config["tokenizer_class"] = name
    _write_json(path, config)


def synthetic_corpus(lines: int, seed: int) -> Iterator[str]:
    """English-like lines from a fixed word list: same seed, same text."""
    rng = random.Random(seed)
    for _ in range(lines):
        words = [rng.choice(CORPUS_WORDS) for _ in range(rng.randint(3, 16))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2048)))
        if rng.random() < 0.1:
            words[-1] = f"({words[-1]})"
        sentence = " ".join(words) + rng.choice(CORPUS_PUNCTUATION)
        yield sentence + ("\n" if rng.random() < 0.3 else "")


# ---------------------------------------------------------------- specs


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


# ---------------------------------------------------------------- registry and CLI

# With random weights, EOS is as likely as any token: a default run ended some replies at once (an empty
# reply) and most before max_tokens. 20 nats below the rest makes an EOS about e^-20 as likely.
EMBEDDED_EOS_LOGIT_DROP = 20.0

EMBEDDED_MODELS: dict[str, EmbeddedRecipe] = {
    "tiny-llama": EmbeddedRecipe(
        name="tiny-llama",
        summary="4-layer llama, hidden 256, ~512-token ASCII BPE vocab, random weights, EOS logit lowered",
        builder=build_tiny_llama,
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
        builder=build_tiny_qwen2_vl,
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build an embedded model and print its folder")
    build.add_argument("--name", default=DEFAULT_EMBEDDED_NAME, choices=sorted(EMBEDDED_MODELS))
    build.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: ${CACHE_DIR_ENV} or .cache/models"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the stamp is current")
    resolve = commands.add_parser("resolve", help="print the folder a model spec resolves to")
    resolve.add_argument("spec", help=f"{DEFAULT_MODEL_SPEC}, a local folder, or a cached owner/name repo id")
    resolve.add_argument("--cache-dir", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "build":
            folder = build_embedded_model(args.name, args.cache_dir, force=args.force)
        else:
            folder = resolve_model_path(args.spec, args.cache_dir)
    except ModelNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
