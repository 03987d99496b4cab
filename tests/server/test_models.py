"""The embedded model builds offline, loads in mlx-lm, streams token by token, and specs resolve."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import jinja2
import mlx.core as mx
import mlx_lm
import pytest
from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer

from server.models import embedded
from server.models.__main__ import main as models_main
from server.models.embedded import (
    DEFAULT_MODEL_SPEC,
    EMBEDDED_MODELS,
    EMBEDDED_PREFIX,
    STAMP_FILE,
    ModelNotFoundError,
    build_embedded_model,
    default_cache_dir,
)
from server.models.resolve import resolve_model_path

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello there, how is the river today?"},
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def folder(cache_dir: Path) -> Path:
    return build_embedded_model(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def loaded(folder: Path):
    return mlx_lm.load(str(folder))


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def no_eos(tokenizer):
    """A logits processor that bans EOS, since random weights may pick it at any step."""
    banned = mx.array(sorted(tokenizer.eos_token_ids))

    def processor(tokens: mx.array, logits: mx.array) -> mx.array:
        logits[..., banned] = -mx.inf
        return logits

    return processor


# ---------------------------------------------------------------- the built model


def test_default_spec_names_the_embedded_tiny_llama():
    assert DEFAULT_MODEL_SPEC == "embedded:tiny-llama"
    assert DEFAULT_MODEL_SPEC.removeprefix(EMBEDDED_PREFIX) in EMBEDDED_MODELS


def test_model_and_tokenizer_sizes_match(folder: Path, loaded):
    model, tokenizer = loaded
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == len(tokenizer) == model.model.embed_tokens.weight.shape[0]
    assert 400 <= len(tokenizer) <= 600
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in tokenizer.eos_token_ids


def test_chat_template_renders_chatml(loaded):
    _, tokenizer = loaded
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello there, how is the river today?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert tokenizer.decode(ids) == text


def test_chat_template_rejects_non_text_content(loaded):
    _, tokenizer = loaded
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    with pytest.raises(jinja2.TemplateError, match="plain-text"):
        tokenizer.apply_chat_template(parts, tokenize=False)


def test_non_ascii_input_becomes_unk(loaded):
    _, tokenizer = loaded
    ids = tokenizer.encode("caf\u00e9 \u65e5\u672c \U0001f642", add_special_tokens=False)
    assert tokenizer.unk_token_id in ids


def test_every_token_streams_as_its_own_text(loaded):
    _, tokenizer = loaded
    detokenizer = tokenizer.detokenizer
    # mlx-lm picks this detokenizer from the tokenizer.json decoder; it never holds text back.
    assert isinstance(detokenizer, SPMStreamingDetokenizer)
    ids = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    random.Random(0).shuffle(ids)
    segments = []
    for token in ids:
        detokenizer.add_token(token)
        segments.append(detokenizer.last_segment)
    detokenizer.finalize()
    assert all(segments)
    assert detokenizer.last_segment == ""
    assert "".join(segments) == tokenizer.decode(ids)


def test_stream_generate_yields_text_per_token(loaded):
    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    responses = list(
        mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=32, logits_processors=[no_eos(tokenizer)])
    )
    assert len(responses) == 32
    assert all(r.text for r in responses)
    assert len({r.text for r in responses}) > 4  # varied text, not one token repeated


# ---------------------------------------------------------------- building


def test_builds_are_deterministic(folder: Path, tmp_path: Path):
    again = build_embedded_model(cache_dir=tmp_path)
    assert again == tmp_path / "tiny-llama"
    assert file_hashes(again) == file_hashes(folder)


def test_second_build_reuses_the_folder(folder: Path, cache_dir: Path):
    stamp = (folder / STAMP_FILE).stat()
    assert build_embedded_model(cache_dir=cache_dir) == folder
    assert (folder / STAMP_FILE).stat().st_mtime_ns == stamp.st_mtime_ns
    assert (folder / STAMP_FILE).stat().st_ino == stamp.st_ino


def test_force_and_recipe_changes_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = build_embedded_model(cache_dir=tmp_path)
    first = file_hashes(folder)
    inode = (folder / STAMP_FILE).stat().st_ino

    build_embedded_model(cache_dir=tmp_path, force=True)
    assert (folder / STAMP_FILE).stat().st_ino != inode
    assert file_hashes(folder) == first

    reseeded = dataclasses.replace(EMBEDDED_MODELS["tiny-llama"], seed=7)
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-llama", reseeded)
    build_embedded_model(cache_dir=tmp_path)
    rebuilt = file_hashes(folder)
    assert rebuilt["model.safetensors"] != first["model.safetensors"]
    assert rebuilt[STAMP_FILE] != first[STAMP_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-llama"]  # no temp or stale folders left


def test_race_loser_keeps_the_winners_folder(folder: Path, tmp_path: Path):
    target = tmp_path / "tiny-llama"
    winner = build_embedded_model(cache_dir=tmp_path)
    inode = winner.stat().st_ino
    loser = tmp_path / ".tiny-llama.building-x"
    loser.mkdir()
    (loser / "config.json").write_text("{}")
    fingerprint = embedded.recipe_fingerprint(EMBEDDED_MODELS["tiny-llama"])
    assert not embedded._install(loser, target, fingerprint, force=False)
    assert target.stat().st_ino == inode
    assert file_hashes(target) == file_hashes(folder)


@pytest.mark.slow
def test_two_processes_building_at_once_agree(tmp_path: Path):
    command = [sys.executable, "-m", "server.models", "build", "--cache-dir", str(tmp_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [str(tmp_path / "tiny-llama")] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-llama"]


# ---------------------------------------------------------------- specs


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("MLXBENCH_CACHE_DIR", raising=False)
    assert default_cache_dir() == Path(__file__).resolve().parents[2] / ".cache" / "models"
    monkeypatch.setenv("MLXBENCH_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path


HEAVY_MODULES = ("mlx", "mlx_lm", "mlx_vlm", "transformers", "tokenizers")


def test_resolving_a_built_model_imports_nothing_heavy(folder: Path, cache_dir: Path):
    # A fresh process: this one has loaded mlx already. The HTTP process resolves its models this way.
    script = (
        "import sys\n"
        "from server.models.resolve import resolve_model_path\n"
        f"print(resolve_model_path({DEFAULT_MODEL_SPEC!r}, {str(cache_dir)!r}))\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == [str(folder), "[]"]


def test_resolve_embedded_and_local_folders(folder: Path, cache_dir: Path):
    assert resolve_model_path(DEFAULT_MODEL_SPEC, cache_dir) == folder
    assert resolve_model_path(str(folder)) == folder


def test_resolve_unknown_embedded_name_lists_known_names(cache_dir: Path):
    with pytest.raises(ModelNotFoundError, match=r"'nope'.*tiny-llama"):
        resolve_model_path("embedded:nope", cache_dir)


def test_resolve_missing_or_bad_folder(tmp_path: Path):
    assert issubclass(ModelNotFoundError, ValueError)
    missing = str(tmp_path / "no" / "such" / "model")
    with pytest.raises(ModelNotFoundError, match="not a local folder") as info:
        resolve_model_path(missing)
    assert missing in str(info.value)
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        resolve_model_path(str(tmp_path))


def test_resolve_repo_id_not_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # so the repo id cannot match a local folder
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path("nobody/tiny-model")
    message = str(info.value)
    assert "'nobody/tiny-model'" in message
    assert "hf download nobody/tiny-model" in message
    assert str(tmp_path / "hub") in message


# ---------------------------------------------------------------- command line


def test_cli_build_prints_the_folder(folder: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert models_main(["build", "--cache-dir", str(cache_dir)]) == 0
    assert capsys.readouterr().out == f"{folder}\n"


@pytest.mark.parametrize(
    "argv", [["build", "--name", "nope"], ["resolve", "embedded:nope"], ["build", "--bogus"]]
)
def test_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        models_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    problem = err.strip().splitlines()[-1]  # argparse prints usage first, then one line naming the problem
    assert "error:" in problem
    assert argv[-1].removeprefix(EMBEDDED_PREFIX) in problem


# ---------------------------------------------------------------- the embedded vision model


@pytest.fixture(scope="module")
def vlm_folder(cache_dir: Path) -> Path:
    return build_embedded_model("tiny-qwen2-vl", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def vlm_loaded(vlm_folder: Path):
    import mlx_vlm

    return mlx_vlm.load(str(vlm_folder))


def test_vlm_loads_with_qwen_tokens_and_matching_sizes(vlm_folder: Path, vlm_loaded):
    model, processor = vlm_loaded
    tokenizer = processor.tokenizer
    config = json.loads((vlm_folder / "config.json").read_text())
    assert (config["model_type"], type(tokenizer).__name__) == ("qwen2_vl", "Qwen2Tokenizer")
    assert config["vocab_size"] == len(tokenizer) == model.language_model.model.embed_tokens.weight.shape[0]
    assert tokenizer.convert_tokens_to_ids(list(embedded.QWEN_SPECIAL_TOKENS)) == list(range(8))
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids(embedded.IMAGE_PAD)
    assert config["eos_token_id"] == tokenizer.convert_tokens_to_ids(embedded.IM_END)
    assert model.config.vision_config.hidden_size == config["hidden_size"]


def test_vlm_chat_template_renders_image_parts(vlm_loaded):
    _, processor = vlm_loaded
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is it?<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_vlm_every_token_streams_as_ascii_text(vlm_folder: Path):
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tokenizer = load_tokenizer(vlm_folder)
    detokenizer = tokenizer.detokenizer
    assert isinstance(detokenizer, BPEStreamingDetokenizer)
    ids = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    random.Random(0).shuffle(ids)
    lone_space = tokenizer.convert_tokens_to_ids("\u0120")
    segments = []
    for token in ids:
        detokenizer.add_token(token)
        segments.append(detokenizer.last_segment)
    detokenizer.finalize()
    # mlx-lm holds a lone space back until the next token; every other token is released at once.
    assert all(segment for token, segment in zip(ids, segments, strict=True) if token != lone_space)
    text = "".join(segments) + detokenizer.last_segment
    # Like mlx-lm with any byte-level BPE model, the stream drops the first token's leading space.
    assert text == tokenizer.decode(ids).removeprefix(" ") and text.isascii()


def test_vlm_builds_are_deterministic(vlm_folder: Path, tmp_path: Path):
    again = build_embedded_model("tiny-qwen2-vl", cache_dir=tmp_path)
    assert file_hashes(again) == file_hashes(vlm_folder)
    stamp = (again / STAMP_FILE).stat().st_ino
    assert build_embedded_model("tiny-qwen2-vl", cache_dir=tmp_path) == again
    assert (again / STAMP_FILE).stat().st_ino == stamp


def test_mlx_vlm_version_is_in_the_vlm_fingerprint_only(monkeypatch: pytest.MonkeyPatch):
    before = {name: embedded.recipe_fingerprint(recipe) for name, recipe in EMBEDDED_MODELS.items()}
    real_version = embedded.metadata.version
    monkeypatch.setattr(
        embedded.metadata, "version", lambda lib: "0.0.0" if lib == "mlx-vlm" else real_version(lib)
    )
    after = {name: embedded.recipe_fingerprint(recipe) for name, recipe in EMBEDDED_MODELS.items()}
    assert after["tiny-llama"] == before["tiny-llama"]
    assert after["tiny-qwen2-vl"] != before["tiny-qwen2-vl"]
    assert "libraries" not in EMBEDDED_MODELS["tiny-llama"].payload()  # its stamp predates the field
