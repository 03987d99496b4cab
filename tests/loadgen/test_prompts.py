"""Prompt sources and token counters, with the embedded model's real tokenizer."""

from __future__ import annotations

import dataclasses
import random

import pytest

from loadgen.options import LoadSettings
from loadgen.prepare import NotReady, build_prompts, check_context
from loadgen.prompts import (
    CalibratedPrompts,
    ExactPrompts,
    FilePrompts,
    LengthFit,
    PromptError,
    fit_lengths,
)
from loadgen.tokens import LocalTokenizer, TokenizerError


@pytest.fixture(scope="module")
def tokenizer() -> LocalTokenizer:
    from server.models.embedded import build_embedded_model

    return LocalTokenizer(str(build_embedded_model()))


LENGTHS = [(16, "fixed", 0), (64, "uniform", 30), (300, "normal", 50)]


@pytest.mark.parametrize(("mean", "dist", "spread"), LENGTHS)
def test_exact_prompts_tokenize_to_their_target_for_chat_and_completions(tokenizer, mean, dist, spread):
    prompts = ExactPrompts(tokenizer, mean, dist, spread)
    rng = random.Random(7)
    drawn = [prompts.draw(rng) for _ in range(40)]
    for prompt in drawn:
        assert tokenizer.count_chat(prompt.messages) == prompt.target_tokens  # template included
        assert tokenizer.count_completion_prompt(prompt.text) == prompt.target_tokens
    assert len({p.text for p in drawn}) == len(drawn)  # every prompt differs
    if dist != "fixed":
        assert len({p.target_tokens for p in drawn}) > 5


def test_a_target_below_the_chat_template_is_refused(tokenizer):
    overhead = tokenizer.count_chat([{"role": "user", "content": "a"}]) - tokenizer.count_text("a")
    with pytest.raises(PromptError, match=f"chat template alone is {overhead} tokens"):
        ExactPrompts(tokenizer, overhead)
    assert ExactPrompts(tokenizer, overhead + 1).draw(random.Random(0)).target_tokens == overhead + 1


def test_a_missing_tokenizer_names_itself_and_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(TokenizerError, match="no-such-owner/no-such-tokenizer"):
        LocalTokenizer("no-such-owner/no-such-tokenizer")
    with pytest.raises(TokenizerError, match="not a usable tokenizer folder"):
        LocalTokenizer(str(tmp_path))


def test_calibration_fit_and_its_prompts():
    fit = fit_lengths([(16, 15 + 16 * 2), (32, 15 + 32 * 2)])
    assert fit == LengthFit(15.0, 2.0) and fit.words_for(79) == 32
    assert fit_lengths([(10, 25), (10, 25)]) == LengthFit(0.0, 2.5)  # one word count: a ratio
    prompts = CalibratedPrompts({"chat": fit, "completion": LengthFit(0.0, 2.0)}, 79)
    prompt = prompts.draw(random.Random(1))
    assert len(prompt.messages[0]["content"].split()) == 32 and len(prompt.text.split()) == 40
    assert prompts.length_method == "calibrated"


def test_prompt_file_lengths_are_measured_with_a_counter(tokenizer, tmp_path):
    path = tmp_path / "p.jsonl"
    chat = '{"messages": [{"role": "user", "content": "hi"}]}'
    path.write_text('{"prompt": "the water of the city"}\n' + chat + "\n")
    measured = FilePrompts(path, tokenizer)
    assert measured.length_method == "tokenizer"
    assert [p.target_tokens for p in measured.prompts] == [
        tokenizer.count_chat([{"role": "user", "content": "the water of the city"}]),
        tokenizer.count_chat([{"role": "user", "content": "hi"}]),
    ]
    plain = FilePrompts(path)
    assert plain.length_method == "words" and plain.prompts[0].target_tokens is None


@pytest.mark.parametrize("bad", ['"8"', "0", "true", "1.5"])
def test_prompt_file_max_tokens_must_be_a_positive_integer(tmp_path, bad):
    path = tmp_path / "p.jsonl"
    path.write_text(f'{{"prompt": "x", "max_tokens": {bad}}}\n')
    with pytest.raises(PromptError, match="max_tokens"):
        FilePrompts(path)


def test_max_tokens_is_checked_against_the_context(tokenizer, tmp_path):
    limit = tokenizer.max_model_len
    assert limit == 4096
    fits = LoadSettings(prompt_tokens=4000, max_tokens=96)
    check_context(fits, tokenizer, build_prompts(fits, tokenizer))
    too_long = LoadSettings(prompt_tokens=3000, prompt_dist="uniform", prompt_tokens_spread=1000)
    too_long = dataclasses.replace(too_long, max_tokens=97)
    with pytest.raises(NotReady, match="exceeds the model's context of 4096"):
        check_context(too_long, tokenizer, build_prompts(too_long, tokenizer))
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "x", "max_tokens": 5000}\n')
    from_file = LoadSettings(prompt_file=str(path))
    with pytest.raises(NotReady, match=r"p\.jsonl max_tokens 5000"):
        check_context(from_file, tokenizer, build_prompts(from_file, tokenizer))
