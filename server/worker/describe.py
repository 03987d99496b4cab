"""What the worker reports about a loaded model: parameter count, context length, quantization."""

from __future__ import annotations

import json
from pathlib import Path


def count_parameters(model, quantization_bits: int | None) -> int:
    """Parameter count from the weights (a VLM's vision tower included); quantized matrices count
    unpacked, their scales not at all."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    params = dict(tree_flatten(model.parameters()))
    total = 0
    for name, array in params.items():
        if name.endswith((".scales", ".biases")):
            continue  # quantization metadata, not parameters
        packed = array.dtype == mx.uint32 and quantization_bits
        total += array.size * 32 // quantization_bits if packed else array.size
    return total


def context_length(model) -> int | None:
    """max_position_embeddings from an mlx-lm model's args or an mlx-vlm model's text config."""
    args = getattr(model, "args", None)
    if args is None:
        config = getattr(model, "config", None)
        args = getattr(config, "text_config", config)
    return getattr(args, "max_position_embeddings", None)


def quantization_bits(model_path: str) -> int | None:
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization") or config.get("quantization_config") or {}
    return int(quant["bits"]) if isinstance(quant, dict) and "bits" in quant else None
