"""VisionRuntime in-process on the embedded tiny Qwen2-VL: images reach the model, requests batch, and the
worker's behaviours (stop strings, ignore_eos, sampling, cancellation, engine.persistent) hold."""

from __future__ import annotations

import io
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import mlx.core as mx
import pytest
from PIL import Image

from server import ipc
from server.ipc import RuntimeOptions
from server.models.embedded import build_embedded_model
from server.worker.main import load_text, open_runtime
from server.worker.text_runtime import BatchRuntime
from server.worker.vision_runtime import VisionRuntime, VisionTokenizer, load_vision

QUESTION = "What is in the picture?"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_embedded_model("tiny-qwen2-vl", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def loaded(folder: Path) -> tuple[Any, VisionTokenizer]:
    return load_vision(str(folder))


@pytest.fixture
def make_runtime(loaded: tuple[Any, VisionTokenizer], folder: Path) -> Callable[..., VisionRuntime]:
    def make(**options) -> VisionRuntime:
        loader = lambda: load_vision(str(folder))  # noqa: E731
        return VisionRuntime(*loaded, RuntimeOptions(**options), send=None, loader=loader)

    return make


def png(color: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def submit(
    request_id: str,
    *images: bytes,
    max_tokens: int = 24,
    temperature: float = 0.0,
    stop: tuple[str, ...] = (),
    ignore_eos: bool = True,
) -> ipc.Submit:
    content = [{"type": "text", "text": QUESTION}, *({"type": "image"} for _ in images)]
    return ipc.Submit(
        request_id=request_id,
        messages=[{"role": "user", "content": content}],
        prompt=None,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=1.0,
        stop=list(stop),
        ignore_eos=ignore_eos,
        max_prompt_tokens=4096,
        images=images,
    )


class Run:
    """Every event a runtime sent, by request."""

    def __init__(self, events: list):
        self.events = events

    def chunks(self, request_id: str) -> list[ipc.Tokens]:
        return [e for e in self.events if isinstance(e, ipc.Tokens) and e.request_id == request_id]

    def text(self, request_id: str) -> str:
        return "".join(chunk.text for chunk in self.chunks(request_id))

    def streamed_tokens(self, request_id: str) -> int:
        return sum(chunk.token_count for chunk in self.chunks(request_id))

    def end(self, request_id: str) -> ipc.Finished | ipc.Failed:
        (end,) = [
            e for e in self.events if isinstance(e, ipc.Finished | ipc.Failed) and e.request_id == request_id
        ]
        return end

    def finished(self, request_id: str) -> ipc.Finished:
        end = self.end(request_id)
        assert isinstance(end, ipc.Finished), end
        return end

    def max_decoding(self) -> int:
        return max((e.decoding for e in self.events if isinstance(e, ipc.BatchStats)), default=0)


def drive(runtime: VisionRuntime, *submits: ipc.Submit, then: dict[int, list] | None = None) -> Run:
    """Hand the runtime its commands and step it until idle; `then` adds commands after N steps."""
    events: list = []
    runtime.send = events.extend
    for command in submits:
        runtime.send_events(runtime.handle(command))
    steps = 0
    while runtime.sequences or (then and steps <= max(then)):
        for command in (then or {}).get(steps, []):
            runtime.send_events(runtime.handle(command))
        runtime.send_events(runtime.step())
        steps += 1
    return Run(events)


def serve(runtime: VisionRuntime | BatchRuntime, first: list, next_after_finish: list) -> Run:
    """Run `serve` on a queue: `first` at once, then one more command as each request finishes."""
    inbox: queue.Queue = queue.Queue()
    events: list = []
    pending = [*next_after_finish, ipc.Shutdown()]

    def send(batch: list) -> None:
        events.extend(batch)
        for event in batch:
            if isinstance(event, ipc.Finished | ipc.Failed) and pending:
                inbox.put(pending.pop(0))

    runtime.send = send
    for command in first:
        inbox.put(command)
    runtime.serve(inbox)
    return Run(events)


# ---------------------------------------------------------------- images reach the model


def test_red_and_blue_images_give_different_greedy_outputs(make_runtime):
    runtime = make_runtime()
    run = drive(runtime, submit("red", png("red")), submit("blue", png("blue")))
    again = drive(runtime, submit("red", png("red")))
    assert run.text("red") != run.text("blue")
    assert again.text("red") == run.text("red")  # greedy: the difference is the image, not chance


def test_image_changes_the_logits(loaded: tuple[Any, VisionTokenizer]):
    runtime = VisionRuntime(*loaded, RuntimeOptions(), send=None)
    logits = {}
    for color in ("red", "blue"):
        prompt = runtime.tokenize(submit(color, png(color)))
        kwargs = runtime.embed(prompt)
        output = runtime.model.language_model(mx.array([prompt.tokens]), **kwargs)
        logits[color] = output.logits[0, -1]
    difference = mx.abs(logits["red"] - logits["blue"]).max().item()
    assert isinstance(difference, float) and difference > 0.1


def test_prompt_holds_one_pad_token_per_image_token(make_runtime, loaded):
    runtime = make_runtime()
    image_pad = loaded[0].config.image_token_id
    sizes = {(64, 64): 4, (200, 50): 14, (500, 500): 16}  # max_pixels caps large images at 16 tokens
    for size, expected in sizes.items():
        prompt = runtime.tokenize(submit("r", png("red", size)))
        assert prompt.tokens.count(image_pad) == expected


# ---------------------------------------------------------------- batching


def test_concurrent_image_requests_batch_and_match_their_solo_runs(make_runtime):
    runtime = make_runtime()
    small, wide = submit("small", png("red"), max_tokens=20), submit("wide", png("green", (200, 50)))
    together = drive(runtime, small, wide)
    assert together.max_decoding() == 2  # both decoded in the same steps
    for sub in (small, wide):
        end = together.finished(sub.request_id)
        assert (end.finish_reason, end.completion_tokens) == ("length", sub.max_tokens)
        assert together.streamed_tokens(sub.request_id) == sub.max_tokens
        # Prompts of different lengths are left-padded together; greedy output must not notice.
        assert together.text(sub.request_id) == drive(runtime, sub).text(sub.request_id)
    assert together.finished("wide").prompt_tokens > together.finished("small").prompt_tokens


def test_request_joining_a_running_batch_matches_its_solo_run(make_runtime):
    runtime = make_runtime()
    first, joiner = submit("first", png("red"), max_tokens=40), submit("joiner", png("blue", (200, 50)))
    run = drive(runtime, first, then={5: [joiner]})
    assert run.text("joiner") == drive(runtime, joiner).text("joiner")
    assert run.text("first") == drive(runtime, first).text("first")


def test_text_only_and_token_id_prompts(make_runtime):
    runtime = make_runtime()
    text_only = submit("text", max_tokens=8)
    ids = runtime.tokenize(text_only).tokens
    by_ids = text_only._replace(request_id="ids", messages=None, prompt=ids)
    run = drive(runtime, text_only, submit("image", png("red"), max_tokens=8), by_ids)
    assert run.finished("text").completion_tokens == run.finished("image").completion_tokens == 8
    assert run.text("ids") == run.text("text")


# ---------------------------------------------------------------- per-request behaviour


def generated_tokens(runtime: VisionRuntime, sub: ipc.Submit) -> list[int]:
    tokens: list[int] = []
    advance = runtime.advance

    def spy(seq, token, *args):
        tokens.append(token)
        advance(seq, token, *args)

    with mock.patch.object(runtime, "advance", spy):
        drive(runtime, sub)
    return tokens


def test_eos_stops_only_requests_that_do_not_ignore_it(make_runtime):
    runtime = make_runtime()
    tokens = generated_tokens(runtime, submit("probe", png("red")))
    # Random weights rarely emit EOS; make a token of the greedy output play EOS instead.
    at = next(i for i in range(3, len(tokens)) if tokens[i] not in tokens[:i])
    runtime.eos_ids = {tokens[at]}
    stopping, ignoring = submit("stops", png("red")), submit("ignores", png("red"), ignore_eos=True)
    run = drive(runtime, stopping._replace(ignore_eos=False), ignoring)
    assert (run.finished("stops").finish_reason, run.finished("stops").completion_tokens) == ("stop", at)
    assert (run.finished("ignores").finish_reason, run.finished("ignores").completion_tokens) == (
        "length",
        24,
    )
    assert run.text("ignores").startswith(run.text("stops"))


def test_stop_string_ends_the_stream_before_it(make_runtime):
    runtime = make_runtime()
    full = drive(runtime, submit("full", png("blue"), max_tokens=32)).text("full")
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    run = drive(runtime, submit("stopped", png("blue"), max_tokens=32, stop=(stop,)))
    assert run.finished("stopped").finish_reason == "stop"
    assert run.text("stopped") == full[: full.index(stop)]


def test_sampling_is_per_request(make_runtime):
    runtime = make_runtime()
    greedy = submit("greedy", png("red"))
    mx.random.seed(0)
    run = drive(runtime, greedy, submit("sampled", png("red"), temperature=1.0))
    assert run.text("greedy") == drive(runtime, greedy).text("greedy")
    assert run.text("sampled") != run.text("greedy")
    assert run.finished("sampled").completion_tokens == 24


def test_cancel_leaves_the_other_request_running(make_runtime):
    runtime = make_runtime()
    keep = submit("keep", png("red"))
    run = drive(runtime, keep, submit("gone", png("blue"), max_tokens=100), then={3: [ipc.Cancel("gone")]})
    assert not [e for e in run.events if isinstance(e, ipc.Finished) and e.request_id == "gone"]
    assert run.text("keep") == drive(runtime, keep).text("keep")
    assert not runtime.sequences


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (submit("bad", b"not an image"), "could not be decoded"),
        (submit("bad", png("red"))._replace(images=()), "1 image parts but the request carries 0"),
        (submit("bad", png("red"))._replace(messages=None, prompt="hi"), "only be sent in chat"),
        (
            submit("bad")._replace(messages=[{"role": "user", "content": [{"type": "audio"}]}]),
            "Unsupported content part",
        ),
    ],
)
def test_bad_requests_fail_with_400(make_runtime, sub: ipc.Submit, message: str):
    run = drive(make_runtime(), sub)
    failed = run.end("bad")
    assert isinstance(failed, ipc.Failed)
    assert (failed.status, failed.code) == (400, "invalid_prompt")
    assert message in failed.message


# ---------------------------------------------------------------- the worker's loop and engine.persistent


def test_persistent_runtime_loads_nothing_per_request(make_runtime):
    runtime = make_runtime()
    run = serve(runtime, [submit("a", png("red"))], [submit("b", png("blue"))])
    assert [run.finished(r).completion_tokens for r in "ab"] == [24, 24]
    assert runtime.loads == 0 and runtime.model is not None


def test_non_persistent_runtime_loads_for_each_request(make_runtime):
    runtime = make_runtime(persistent=False)
    a, b = submit("a", png("red")), submit("b", png("blue"))
    memory = mx.get_active_memory()
    run = serve(runtime, [a], [b])
    assert runtime.loads == 2  # the model given at start is dropped while idle, then loaded per request
    assert runtime.model is None and runtime.generator is None and runtime.processor is None
    assert mx.get_active_memory() < memory + 256 * 1024  # the per-request copies (2.7 MB each) are freed
    persistent = make_runtime()
    assert run.text("a") == drive(persistent, a).text("a")
    assert run.text("b") == drive(persistent, b).text("b")


def test_non_persistent_requests_arriving_together_share_a_load(make_runtime):
    runtime = make_runtime(persistent=False)
    run = serve(runtime, [submit("a", png("red")), submit("b", png("blue"))], [])
    assert runtime.loads == 1
    assert run.max_decoding() == 2


def test_open_runtime_describes_the_vision_model(folder: Path):
    runtime, ready = open_runtime("vision", str(folder), RuntimeOptions(), send=None)
    assert isinstance(runtime, VisionRuntime)
    assert ready.context_length == 4096
    # The vision tower counts too: more than the text model's weights alone.
    text_only = sum(v.size for _, v in _flat(runtime.model.language_model.parameters()))
    assert ready.parameter_count > text_only


def _flat(params):
    from mlx.utils import tree_flatten

    return tree_flatten(params)


def test_text_runtime_also_loads_per_request(tmp_path: Path):
    folder = str(build_embedded_model(cache_dir=tmp_path))
    runtime = BatchRuntime(
        *load_text(folder), RuntimeOptions(persistent=False), send=None, loader=lambda: load_text(folder)
    )
    chat = submit("a")._replace(messages=[{"role": "user", "content": "Hello"}], images=())
    run = serve(runtime, [chat], [chat._replace(request_id="b")])
    assert [run.finished(r).completion_tokens for r in "ab"] == [24, 24]
    assert runtime.loads == 2 and runtime.model is None
