"""The worker process's entry point: load the model, report it, then serve the batch until told to stop.

Only `server.worker_handle` starts it (in a spawned process); it talks to the HTTP process through
`server.ipc` messages.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from server import ipc
from server.ipc import RuntimeOptions
from server.worker.describe import context_length, count_parameters, quantization_bits
from server.worker.text_runtime import BatchRuntime

if TYPE_CHECKING:
    import mlx.nn as nn
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from server.worker.vision_runtime import VisionRuntime

log = logging.getLogger(__name__)


def load_text(model_path: str) -> tuple[nn.Module, TokenizerWrapper]:
    from mlx_lm import load

    # A third item, the config, comes only with return_config=True.
    model, tokenizer, *_ = load(model_path)
    return model, tokenizer


def open_runtime(
    kind: str, model_path: str, options: RuntimeOptions, send
) -> tuple[BatchRuntime | VisionRuntime, ipc.Ready]:
    """Load the model once (to check it and describe it) and build the runtime for `kind`."""
    load: Callable[[str], tuple[Any, Any]]
    runtime_class: type[BatchRuntime | VisionRuntime]
    if kind == "text":
        load, runtime_class = load_text, BatchRuntime
    elif kind == "vision":
        from server.worker.vision_runtime import VisionRuntime, load_vision

        load, runtime_class = load_vision, VisionRuntime
    else:
        raise ValueError(f"unknown model kind {kind!r}: expected 'text' or 'vision'")
    model, tokenizer = load(model_path)
    ready = ipc.Ready(
        model_path, count_parameters(model, quantization_bits(model_path)), context_length(model)
    )
    # The runtime holds the only references, so engine.persistent: false can free the model.
    return runtime_class(model, tokenizer, options, send, loader=partial(load, model_path)), ready


def run_worker(
    model_path: str, options: RuntimeOptions, inbox, outbox, log_level: str = "INFO", kind: str = "text"
) -> None:
    """Entry point of the worker process; `kind` is "text" (mlx-lm) or "vision" (mlx-vlm)."""
    # Ctrl-C and a group-wide SIGTERM reach this process too; shutdown is the HTTP process's to run,
    # so that in-flight streams can finish first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s worker %(levelname)s %(message)s")
    try:
        runtime, ready = open_runtime(kind, model_path, options, outbox.send)
        outbox.send([ready])
    except Exception as exc:
        log.exception("model load failed")
        outbox.send([ipc.WorkerError(f"cannot load model from {model_path}: {exc}")])
        return
    try:
        runtime.serve(inbox)
    except (EOFError, BrokenPipeError, OSError):
        log.info("HTTP process went away; worker exits")
    finally:
        import mlx.core as mx

        mx.clear_cache()
