"""Builds the embedded tiny Qwen2-VL: tokenizer, processor files, config and random weights for mlx-vlm."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from server.models.bpe import set_tokenizer_class, token_id, train_byte_level_ascii_tokenizer
from server.models.embedded import (
    ENDOFTEXT,
    IMAGE_PAD,
    QWEN_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_PAD,
    VISION_START,
    EmbeddedRecipe,
    write_json,
)
from server.models.text_builder import randomize

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


def build_tiny_qwen2_vl(recipe: EmbeddedRecipe, folder: Path) -> None:
    """A Qwen2-VL checkpoint in the layout mlx_vlm.load reads, with every file it would otherwise fetch."""
    tokenizer = train_byte_level_ascii_tokenizer(recipe, QWEN2_VL_TEMPLATE)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    # mlx-vlm's Qwen2-VL processor loads the tokenizer through AutoTokenizer, as for the real model.
    set_tokenizer_class(folder / "tokenizer_config.json", "Qwen2Tokenizer")
    token_ids = {token: token_id(tokenizer, token) for token in QWEN_SPECIAL_TOKENS}
    config = qwen2_vl_config(recipe, vocab_size=len(tokenizer), token_ids=token_ids)
    write_json(folder / "config.json", config)
    write_json(
        folder / "generation_config.json",
        {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"]},
    )
    for name, data in qwen2_vl_processor_files(recipe).items():
        write_json(folder / name, data)
    model = qwen2_vl_model(config)
    randomize(model, seed=recipe.seed, std=recipe.init_std)
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
