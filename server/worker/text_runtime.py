"""The text runtime: the worker's batch loop (`server.worker.batch_loop`) over an mlx-lm model."""

from __future__ import annotations

import functools

from server import ipc
from server.worker.batch_loop import BatchLoop


class BatchRuntime(BatchLoop[list[int]]):
    """The batch loop over mlx-lm's `BatchGenerator`; prompts are token ids."""

    runs_mlx_lm = True

    def make_generator(self):
        from mlx_lm.generate import BatchGenerator, StopSequences

        self.eos_stops = StopSequences([[t] for t in self.eos_ids])
        self.no_stops = StopSequences()
        return BatchGenerator(
            self.model,
            completion_batch_size=self.options.max_batch_size,
            prefill_batch_size=min(self.options.prefill_batch_size, self.options.max_batch_size),
            prefill_step_size=self.options.prefill_step_size,
            max_kv_size=self.options.max_kv_size,
        )

    def tokenize(self, sub: ipc.Submit) -> list[int]:
        if sub.messages is not None:
            text = self.tokenizer.apply_chat_template(
                sub.messages, add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        if isinstance(sub.prompt, list):
            return self.token_ids(sub.prompt)
        return list(self.tokenizer.encode(sub.prompt or ""))

    def insert(self, sub: ipc.Submit, tokens: list[int]) -> int:
        stops = self.no_stops if sub.ignore_eos else self.eos_stops
        sampler = shared_sampler(sub.temperature, sub.top_p)
        reuse = self.prefix_cache.lookup(tokens) if self.prefix_cache is not None else None
        cached = reuse.cached_tokens if reuse else 0
        (uid,) = self.generator.insert(
            [tokens[cached:]],
            max_tokens=[sub.max_tokens],
            caches=[reuse.kv if reuse else None],
            all_tokens=[tokens[:cached]],
            samplers=[sampler],
            stop_sequences=[stops],
        )
        self.cached_tokens_by_uid[uid] = cached
        return uid


@functools.lru_cache(maxsize=256)
def shared_sampler(temperature: float, top_p: float):
    """One sampler object per (temperature, top_p): the generator samples a batch in one call only when
    its sequences share the same sampler object, and falls back to one call per row otherwise."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0)
