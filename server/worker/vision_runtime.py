"""The vision-language runtime: mlx-vlm's continuous batching behind the worker's `BatchLoop`.

Everything after a sequence starts (IPC events, token buffering, stop strings, cancellation, statistics,
engine.persistent) is `BatchLoop`'s; this module builds prompts with images, runs the vision encoder
when a request starts, and adapts mlx-vlm's `BatchGenerator`:

- its sampler is one for the whole batch, so each request's temperature and top-p become a logits
  processor that draws the token itself (the batch sampler is argmax);
- its stop criterion is one for the whole batch too, so EOS is checked per request (`ignore_eos`);
- each request's image embeddings are computed on their own, so images of any size share a batch:
  prompts of different lengths are left-padded together at prefill, as mlx-vlm's server does.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import jinja2
import mlx.core as mx
from PIL import Image, UnidentifiedImageError

from server import ipc
from server.worker.batch_loop import BatchLoop
from server.worker.replies import Sequence
from server.worker.text_runtime import shared_sampler

log = logging.getLogger(__name__)


class VisionTokenizer(NamedTuple):
    """What a vision model needs besides its weights."""

    processor: Any  # mlx-vlm's processor: image preprocessing, image-token expansion, chat template
    text: Any  # mlx-lm's TokenizerWrapper: EOS ids and streaming detokenizers, as for text models


def load_vision(model_path: str) -> tuple[Any, VisionTokenizer]:
    """The model (vision tower and language model) and its processor, loaded with mlx-vlm."""
    import mlx_vlm
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    model, processor = mlx_vlm.load(model_path)
    # mlx-lm's detokenizers release each token's text at once; mlx-vlm's hold it back until a space.
    text = load_tokenizer(Path(model_path), eos_token_ids=getattr(model.config, "eos_token_id", None))
    return model, VisionTokenizer(processor, text)


@dataclass
class VisionPrompt:
    """A tokenized prompt with its processor outputs (pixel values, image grids), embedded at start."""

    tokens: list[int]
    inputs: dict[str, Any]

    def __len__(self) -> int:
        return len(self.tokens)


class RequestSampler:
    """One request's temperature and top-p as an mlx-vlm logits processor.

    It draws the token with mlx-lm's sampler and leaves only that token possible, so the batch's
    argmax picks it.
    """

    def __init__(self, temperature: float, top_p: float):
        self.sample = shared_sampler(temperature, top_p)

    def __call__(self, tokens: mx.array | None, logits: mx.array) -> mx.array:
        token = self.sample(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        chosen = mx.arange(logits.shape[-1]) == token[:, None]
        return mx.where(chosen, mx.array(0.0, logits.dtype), mx.array(-mx.inf, logits.dtype))

    def process_last_token(self, last_token: int, logits: mx.array) -> mx.array:
        # mlx-vlm prefers this form while decoding: it spares building the token history each step.
        return self(None, logits)


class _NeverStop:
    """mlx-vlm's stop criterion applies to every sequence alike, so it is disabled here."""

    eos_token_ids: list[int] = []

    def add_eos_token_ids(self, new_eos_token_ids=None) -> None:
        pass

    def __call__(self, token: int) -> bool:
        return False


class VlmGenerator:
    """mlx-vlm's `BatchGenerator` with mlx-lm's `remove(uids)`, the call `BatchLoop` makes."""

    def __init__(self, generator):
        self.generator = generator

    def insert(self, *args, **kwargs) -> list[int]:
        return self.generator.insert(*args, **kwargs)

    def next(self):
        return self.generator.next()

    def remove(self, uids: list[int]) -> None:
        for uid in uids:
            self.generator.remove(uid)

    def close(self) -> None:
        self.generator.close()


class VisionRuntime(BatchLoop[VisionPrompt]):
    """`BatchLoop` for mlx-vlm models; `tokenizer` is a `VisionTokenizer`."""

    def attach(self, model, tokenizer: VisionTokenizer) -> None:
        self.processor = tokenizer.processor
        super().attach(model, tokenizer.text)

    def detach(self) -> None:
        super().detach()
        self.processor = None

    def make_generator(self) -> VlmGenerator:
        from mlx_vlm.generate.ar import BatchGenerator

        if self.options.max_kv_size is not None:
            log.warning("engine.max_kv_size is not supported for vision models; ignored")
        generator = BatchGenerator(
            self.model.language_model,
            SimpleNamespace(tokenizer=SimpleNamespace(stopping_criteria=_NeverStop())),
            completion_batch_size=self.options.max_batch_size,
            prefill_batch_size=min(self.options.prefill_batch_size, self.options.max_batch_size),
            prefill_step_size=self.options.prefill_step_size,
            compute_logprobs=False,
        )
        return VlmGenerator(generator)

    # -- prompts --------------------------------------------------------------------------------------
    def tokenize(self, sub: ipc.Submit) -> VisionPrompt:
        images = [decode_image(data, i) for i, data in enumerate(sub.images)]
        if sub.messages is not None:
            check_image_parts(sub.messages, len(images))
            return self.process(self.chat_text(sub.messages), images, add_special_tokens=False)
        if images:
            raise ValueError("Images can only be sent in chat messages.")
        if isinstance(sub.prompt, list):
            tokens = self.token_ids(sub.prompt)
            ids = mx.array([tokens])
            return VisionPrompt(tokens, {"input_ids": ids, "attention_mask": mx.ones_like(ids)})
        return self.process(sub.prompt or "", [], add_special_tokens=True)

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        # Vision models often keep their chat template on the processor rather than the tokenizer.
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        try:
            return owner.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except jinja2.TemplateError as exc:
            raise ValueError(f"The messages do not fit this model's chat template: {exc}") from exc

    def process(self, text: str, images: list[Image.Image], add_special_tokens: bool) -> VisionPrompt:
        """Tokenize, expanding each image placeholder to the image's token count, and preprocess pixels."""
        from mlx_vlm.utils import prepare_inputs

        inputs = prepare_inputs(
            self.processor,
            images=images or None,
            prompts=[text],
            image_token_index=getattr(self.model.config, "image_token_id", None),
            add_special_tokens=add_special_tokens,
        )
        return VisionPrompt(inputs["input_ids"][0].tolist(), dict(inputs))

    # -- starting -------------------------------------------------------------------------------------
    def insert(self, sub: ipc.Submit, prompt: VisionPrompt) -> int:
        processors = [RequestSampler(sub.temperature, sub.top_p)] if sub.temperature > 0 else []
        (uid,) = self.generator.insert(
            [prompt.tokens],
            max_tokens=[sub.max_tokens],
            prompt_kwargs=[self.embed(prompt)],
            logits_processors=[processors],
        )
        prompt.inputs = {}  # the pixels are in the embeddings now
        return uid

    def embed(self, prompt: VisionPrompt) -> dict[str, Any]:
        """Run the vision encoder and merge its features into the prompt embeddings (as mlx-vlm's server)."""
        inputs = dict(prompt.inputs)
        input_ids = inputs.pop("input_ids")
        pixel_values = inputs.pop("pixel_values", None)
        mask = inputs.pop("attention_mask", None)
        features = self.model.get_input_embeddings(input_ids, pixel_values, mask=mask, **inputs)
        return {**inputs, **{k: v for k, v in features.to_dict().items() if v is not None}}

    # -- decoding -------------------------------------------------------------------------------------
    def advance(self, seq: Sequence, token: int, finish_reason: str | None, now: float, events: list) -> None:
        if token in self.eos_ids and not seq.ignore_eos:
            if finish_reason is None:  # still in the batch; at max_tokens it has left already
                self.generator.remove([seq.uid])
            finish_reason = "stop"
        super().advance(seq, token, finish_reason, now, events)


def decode_image(data: bytes, index: int) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"Image {index} could not be decoded: {exc}") from exc


def check_image_parts(messages: list[dict[str, Any]], image_count: int) -> None:
    """Each {"type": "image"} part stands for the next image, so the counts must agree."""
    parts = sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )
    if parts != image_count:
        raise ValueError(
            f"The messages have {parts} image parts but the request carries {image_count} images."
        )
