"""Tokenizer training for the embedded models: BPE over an ASCII alphabet on a synthetic corpus."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PRETOKENIZE_REGEX

from server.models.embedded import ENDOFTEXT, UNK, EmbeddedRecipe, write_json

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


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token (transformers types convert_tokens_to_ids for a token and a list alike)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise ValueError(f"{token!r} is not a token of the tokenizer")
    return found


def set_tokenizer_class(path: Path, name: str) -> None:
    # transformers 5 writes its new backend class name; loaders pick the class from this field.
    config = json.loads(path.read_text())
    config["tokenizer_class"] = name
    write_json(path, config)


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
