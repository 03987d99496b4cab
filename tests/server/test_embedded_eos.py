"""The embedded tiny-llama's lowered EOS logit: deterministic, keyed in the build stamp,
and far enough down that random weights do not end replies at once."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from server.models.embedded import EMBEDDED_MODELS, build_embedded_model, recipe_fingerprint


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_option_is_in_the_stamp_only_when_set():
    recipe = EMBEDDED_MODELS["tiny-llama"]
    assert recipe.eos_logit_drop > 0 and recipe.payload()["eos_logit_drop"] == recipe.eos_logit_drop
    plain = dataclasses.replace(recipe, eos_logit_drop=0.0)
    assert "eos_logit_drop" not in plain.payload()  # a recipe without it keeps its old fingerprint
    assert recipe_fingerprint(plain) != recipe_fingerprint(recipe)  # the change rebuilds


def test_builds_are_deterministic_and_idempotent(tmp_path):
    first = build_embedded_model(cache_dir=tmp_path / "a")
    second = build_embedded_model(cache_dir=tmp_path / "b")
    assert _hashes(first) == _hashes(second)
    weights = first / "model.safetensors"
    stamp_mtime = weights.stat().st_mtime_ns
    assert build_embedded_model(cache_dir=tmp_path / "a") == first  # current stamp: nothing rebuilt
    assert weights.stat().st_mtime_ns == stamp_mtime


def test_eos_logit_is_far_below_every_other_token(tmp_path):
    from server.worker.main import load_text

    model, tokenizer = load_text(str(build_embedded_model(cache_dir=tmp_path)))
    eos = tokenizer.eos_token_id
    rng = random.Random(0)
    words = ["the", "of", "water", "city", "model", "stream", "answer"]
    gaps = []
    for k in range(8):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        cache = make_prompt_cache(model)  # each step feeds one token, as generation does
        feed = ids
        for step in range(16):
            logits = model(mx.array([feed]), cache=cache)[0, -1]
            others = mx.concatenate([logits[:eos], logits[eos + 1 :]])
            gaps.append(float(others.max() - logits[eos]))
            feed = [int(mx.random.categorical(logits, key=mx.random.key(100 * k + step)))]
    # 15 nats: EOS is less likely than the top token by a factor of over three million, at every step
    assert min(gaps) > 15, min(gaps)
