"""Builds the embedded tiny-llama: tokenizer, config and random weights in mlx-lm's layout."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models import llama

from server.models.bpe import set_tokenizer_class, token_id, train_ascii_tokenizer
from server.models.embedded import ENDOFTEXT, EmbeddedRecipe, write_json


def build_tiny_llama(recipe: EmbeddedRecipe, folder: Path) -> None:
    """Tokenizer first: the model's vocab_size must equal the tokenizer's full size."""
    tokenizer = train_ascii_tokenizer(recipe)
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    # The old alias loads in both transformers 4.x and 5.x.
    set_tokenizer_class(folder / "tokenizer_config.json", "PreTrainedTokenizerFast")
    eos_id = token_id(tokenizer, recipe.eos_token)
    config = llama_config(recipe, vocab_size=len(tokenizer), eos_token_id=eos_id)
    write_json(folder / "config.json", config)
    write_json(
        folder / "generation_config.json", {"eos_token_id": eos_id, "pad_token_id": config["pad_token_id"]}
    )
    model = llama.Model(llama.ModelArgs.from_dict(config))
    randomize(model, seed=recipe.seed, std=recipe.init_std)
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


def randomize(model: nn.Module, seed: int, std: float) -> None:
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
