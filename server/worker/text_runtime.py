"""The text runtime: the worker's continuous batch over an mlx-lm model.

Requests join the `BatchGenerator` between decode steps and leave when they finish or are cancelled.
Text goes back to the HTTP process in buffers (first token at once, then every `batch_tokens` tokens or
`flush_ms`), so IPC costs a message per buffer instead of a message per token.
Vision-language models run the same loop through `server.worker.vision_runtime.VisionRuntime`.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server import ipc
from server.ipc import RuntimeOptions
from server.worker.prefix_cache import PrefixCache, reusable

log = logging.getLogger(__name__)


class StopStringMatcher:
    """Finds stop strings in streamed text, holding back just enough text to never leak a partial one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold_chars = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; returns (text safe to send, whether a stop string was found)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        cut = max(len(self.pending) - self.hold_chars, 0)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Waiting:
    """A request accepted by the worker, not yet in the generator."""

    sub: ipc.Submit
    tokens: Any
    arrived_s: float
    announced: bool = True  # its Started event has been sent


@dataclass
class Sequence:
    request_id: str
    uid: int
    prompt_tokens: int
    detokenizer: Any
    stops: StopStringMatcher
    ignore_eos: bool = False
    cached_tokens: int = 0  # prompt tokens reused from the prefix cache
    completion_tokens: int = 0
    buffered_text: str = ""
    buffered_tokens: int = 0
    sent_first: bool = False
    last_flush_s: float = field(default_factory=time.perf_counter)


Loader = Callable[[], tuple[Any, Any]]


class BatchRuntime:
    """Owns the model, the tokenizer and a `BatchGenerator`; one thread drives all of them.

    `loader` reloads the model and tokenizer; it is needed only when `options.persistent` is False.
    """

    def __init__(self, model, tokenizer, options: RuntimeOptions, send, loader: Loader | None = None):
        if not options.persistent and loader is None:
            raise ValueError("a non-persistent runtime needs a loader")
        self.options = options
        self.send = send
        self.loader = loader
        self.loads = 0  # loads done by this runtime (engine.persistent: false), not the first one
        self.sequences: dict[int, Sequence] = {}
        self.uid_by_request: dict[str, int] = {}
        # Accepted, waiting in FIFO order for a place in the generator: held back by the decode batch cap,
        # by `concurrency_limit` (v1.1.1's serialized generation), or collecting a prefill batch.
        self.held: deque[Waiting] = deque()
        self.decode_steps = 0
        self.decode_cap = options.max_batch_size
        self.last_batch_size = 0  # sequences decoded by the latest step that decoded any
        self.prefix_cache = self.make_prefix_cache()
        self.cached_tokens_by_uid: dict[int, int] = {}  # set by insert, taken by start
        self.attach(model, tokenizer)
        self.decode_cap = self.resolve_decode_cap()

    def resolve_decode_cap(self) -> int:
        """The cap in force: configured, measured ("auto"), or max_batch_size; within concurrency_limit."""
        cap = self.options.decode_batch_cap
        if cap == "auto":
            measured = calibrate_decode_cap(self)
            cap = measured.cap
            log.info("decode batch cap %d (engine.decode_batch_cap: auto): %s", cap, measured.describe())
        cap = min(int(cap or self.options.max_batch_size), self.options.max_batch_size)
        if self.options.concurrency_limit is not None:
            cap = min(cap, self.options.concurrency_limit)
        return cap

    # -- the model ------------------------------------------------------------------------------------
    def attach(self, model, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = set(tokenizer.eos_token_ids)
        self.generator = self.make_generator()

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

    def ensure_loaded(self) -> None:
        if self.model is not None:
            return
        started = time.perf_counter()
        self.attach(*self.loader())
        self.loads += 1
        log.info("loaded the model in %.3f s (engine.persistent: false)", time.perf_counter() - started)

    def release_if_idle(self) -> None:
        """Drop the model when nothing runs (engine.persistent: false); a no-op otherwise."""
        if self.options.persistent or self.model is None or self.sequences or self.held:
            return
        import mlx.core as mx

        self.detach()
        # Reference counting frees the weights here (no gc pass needed); the cache holds freed buffers.
        mx.clear_cache()

    def make_prefix_cache(self) -> PrefixCache | None:
        options = self.options
        if options.prefix_cache_entries <= 0:
            return None
        # Only mlx-lm's generator takes caches at insert; vision runtimes run without.
        if type(self).make_generator is not BatchRuntime.make_generator:
            return None
        if options.max_kv_size is not None:
            log.warning(
                "prefix_cache is off: engine.max_kv_size makes rotating KV caches, which cannot be cut"
            )
            return None
        return PrefixCache(
            options.prefix_cache_entries, options.prefix_cache_bytes, options.prefix_cache_min_tokens
        )

    def detach(self) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.clear()  # engine.persistent: false frees everything the model made
        self.generator.close()
        self.model = self.tokenizer = self.generator = None

    # -- commands -------------------------------------------------------------------------------------
    def handle(self, command) -> list:
        if isinstance(command, ipc.Submit):
            return self.submit(command)
        if isinstance(command, ipc.Cancel):
            self.cancel(command.request_id)
        return []

    def submit(self, sub: ipc.Submit) -> list:
        self.ensure_loaded()
        try:
            tokens = self.tokenize(sub)
        except ValueError as exc:
            return [ipc.Failed(sub.request_id, 400, "invalid_prompt", str(exc), "messages")]
        if not tokens:
            return [ipc.Failed(sub.request_id, 400, "invalid_prompt", "The prompt is empty.", "messages")]
        if len(tokens) > sub.max_prompt_tokens:
            message = (
                f"The prompt has {len(tokens)} tokens, more than this server's limit of "
                f"{sub.max_prompt_tokens}."
            )
            return [ipc.Failed(sub.request_id, 400, "context_length_exceeded", message, "messages")]
        # Accepted: the HTTP process may start its reply (a queued request that times out then ends
        # with an error event, as when mlx-lm's generator held the queue). Under mlx.concurrency_limit
        # (v1.1.1) a held request is announced only once it starts, as v1.1.1 did.
        announced = self.options.concurrency_limit is None
        self.held.append(Waiting(sub, tokens, time.perf_counter(), announced))
        events: list = [ipc.Started(sub.request_id, len(tokens))] if announced else []
        return events + self.admit_held()

    def start(self, sub: ipc.Submit, tokens) -> ipc.Started:
        uid = self.insert(sub, tokens)
        self.sequences[uid] = Sequence(
            request_id=sub.request_id,
            uid=uid,
            prompt_tokens=len(tokens),
            detokenizer=self.tokenizer.detokenizer,
            stops=StopStringMatcher(sub.stop),
            ignore_eos=sub.ignore_eos,
            cached_tokens=self.cached_tokens_by_uid.pop(uid, 0),
        )
        self.uid_by_request[sub.request_id] = uid
        return ipc.Started(sub.request_id, len(tokens))

    def insert(self, sub: ipc.Submit, tokens: list[int]) -> int:
        """Queue the prompt in the generator; returns its uid."""
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

    def tokenize(self, sub: ipc.Submit) -> list[int]:
        if sub.messages is not None:
            text = self.tokenizer.apply_chat_template(
                sub.messages, add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        if isinstance(sub.prompt, list):
            vocab = self.tokenizer.vocab_size
            if any(not 0 <= t < vocab for t in sub.prompt):
                raise ValueError(f"Prompt token ids must be in [0, {vocab}).")
            return list(sub.prompt)
        return list(self.tokenizer.encode(sub.prompt or ""))

    def cancel(self, request_id: str) -> None:
        uid = self.uid_by_request.pop(request_id, None)
        if uid is not None:
            self.generator.remove([uid])
            self.sequences.pop(uid, None)
        else:
            self.held = deque(item for item in self.held if item.sub.request_id != request_id)

    def admit_held(self) -> list:
        """Move waiting requests, oldest first, into the generator while there is room under the cap.

        With others decoding, a lone arrival may wait up to `prefill_wait_ms` for company: requests that
        join together are prefilled in one batch and join the decode batch in one step (one KV-cache merge,
        one extra forward pass) instead of one each."""
        free = self.decode_cap - len(self.sequences)
        if free <= 0 or not self.held:
            return []
        if self.sequences and self.options.prefill_wait_ms > 0:
            batch = min(free, self.options.prefill_batch_size)
            waited_ms = (time.perf_counter() - self.held[0].arrived_s) * 1000.0
            if len(self.held) < batch and waited_ms < self.options.prefill_wait_ms:
                return []
        events = []
        for item in self.popleft(min(free, len(self.held))):
            started = self.start(item.sub, item.tokens)
            if not item.announced:
                events.append(started)
        return events

    def popleft(self, count: int) -> list[Waiting]:
        return [self.held.popleft() for _ in range(count)]

    # -- decoding -------------------------------------------------------------------------------------
    def step(self) -> list:
        prompt_responses, responses = self.generator.next()
        if self.prefix_cache is not None:
            self.keep_prefixes(prompt_responses, responses)
        if self.options.force_sync:
            import mlx.core as mx

            mx.synchronize()
        if responses:
            self.decode_steps += 1
            self.last_batch_size = len(responses)
        now = time.perf_counter()
        events: list = []
        for response in responses:
            seq = self.sequences.get(response.uid)
            if seq is not None:
                self.advance(seq, response.token, response.finish_reason, now, events)
        events += self.admit_held()
        if events:
            events.append(self.stats())
        return events

    def slow_down(self, cycle_started: float) -> None:
        """testing.slowdown_pct: make the cycle that just ran (commands, step, events: all of the worker's
        work for one token of each sequence) that much longer, by spinning, so that generation runs at
        1 / (1 + pct/100) of its speed and CPU is burnt as by slower code (CPU-time figures see it too)."""
        if not self.options.slowdown_pct:
            return
        now = time.perf_counter()
        until = now + (now - cycle_started) * self.options.slowdown_pct / 100.0
        while time.perf_counter() < until:
            pass

    def keep_prefixes(self, prompt_responses, responses) -> None:
        """Store the KV of each prompt just prefilled (so that requests arriving while it decodes can
        share it) and of each finished sequence (prompt and reply: the next turn's history)."""
        import mlx.core as mx

        prefilled = [r.uid for r in prompt_responses if r.end_of_prompt]
        kept = [(tokens, kv) for kv, tokens in self.generator.extract_cache(prefilled).values()]
        kept += [(r.all_tokens, r.prompt_cache) for r in responses if r.prompt_cache is not None]
        for tokens, kv in kept:
            if reusable(kv):
                # Copied now, in the background (no sync point in the step): a lazy slice would keep the
                # whole batch's KV buffers alive for as long as the entry lives.
                mx.async_eval([(layer.keys, layer.values) for layer in kv])
                self.prefix_cache.store(tokens, kv)

    def stats(self) -> ipc.BatchStats:
        # The record keeps its meaning whatever the queue: requests queued for a batch slot (announced)
        # count as sequences waiting, as when mlx-lm's generator held them; `held` is concurrency_limit's.
        queued = sum(1 for item in self.held if item.announced)
        prefilling = sum(1 for seq in self.sequences.values() if seq.completion_tokens == 0)
        decoding = self.last_batch_size if len(self.sequences) > prefilling else 0
        return ipc.BatchStats(
            len(self.sequences) + queued,
            decoding,
            len(self.held) - queued,
            self.decode_steps,
            prefilling + queued,
            self.prefix_cache.stats() if self.prefix_cache is not None else None,
        )

    def advance(self, seq: Sequence, token: int, finish_reason: str | None, now: float, events: list) -> None:
        stopped = False
        # The EOS token ends the sequence but is not text: it never reaches the detokenizer.
        if not (finish_reason == "stop" and token in self.eos_ids):
            seq.completion_tokens += 1
            seq.buffered_tokens += 1
            seq.detokenizer.add_token(token)
            stopped = self.take_text(seq, seq.detokenizer.last_segment)
        if stopped and finish_reason is None:
            self.generator.remove([seq.uid])
            finish_reason = "stop"
        if finish_reason is None:
            due = (now - seq.last_flush_s) * 1000.0 >= self.options.flush_ms
            if not seq.sent_first or seq.buffered_tokens >= self.options.batch_tokens or due:
                self.flush(seq, now, events)
            return
        if not stopped:
            seq.detokenizer.finalize()
            if not self.take_text(seq, seq.detokenizer.last_segment):
                seq.buffered_text += seq.stops.flush()
        self.flush(seq, now, events)
        events.append(
            ipc.Finished(
                seq.request_id, finish_reason, seq.prompt_tokens, seq.completion_tokens, seq.cached_tokens
            )
        )
        self.sequences.pop(seq.uid, None)
        self.uid_by_request.pop(seq.request_id, None)

    @staticmethod
    def take_text(seq: Sequence, text: str) -> bool:
        """Buffer new text up to any stop string; returns whether a stop string was found."""
        safe, stopped = seq.stops.feed(text)
        seq.buffered_text += safe
        return stopped

    def flush(self, seq: Sequence, now: float, events: list) -> None:
        if seq.buffered_tokens or seq.buffered_text:
            events.append(ipc.Tokens(seq.request_id, seq.buffered_text, seq.buffered_tokens))
            seq.sent_first = True
        seq.buffered_text, seq.buffered_tokens, seq.last_flush_s = "", 0, now

    def fail_all(self, message: str) -> list:
        events = [ipc.Failed(s.request_id, 500, "engine_error", message) for s in self.sequences.values()]
        events += [ipc.Failed(item.sub.request_id, 500, "engine_error", message) for item in self.held]
        for uid in list(self.sequences):
            self.generator.remove([uid])
        self.sequences.clear()
        self.uid_by_request.clear()
        self.held.clear()
        return events

    # -- the loop -------------------------------------------------------------------------------------
    def serve(self, inbox) -> None:
        parent = os.getppid()
        while True:
            self.release_if_idle()
            busy = bool(self.sequences or self.held)
            commands = drain(inbox, block=not busy)
            cycle_started = time.perf_counter()  # after any idle wait: the cycle is the work
            before = (len(self.sequences), len(self.held))
            for command in commands:
                if isinstance(command, ipc.Shutdown):
                    return
                try:
                    self.send_events(self.handle(command))
                except Exception as exc:  # one bad request must not take the worker down
                    log.exception("command %s failed", type(command).__name__)
                    self.send_events(
                        [ipc.Failed(command.request_id, 500, "engine_error", f"The engine failed: {exc}")]
                    )
            if commands and (len(self.sequences), len(self.held)) != before:
                self.send_events([self.stats()])
            if not busy and os.getppid() != parent:
                log.warning("parent process is gone; worker exits")
                return
            if self.held and not self.sequences:
                self.send_events(self.admit_held())
            if self.sequences:
                try:
                    self.send_events(self.step())
                except Exception as exc:  # an engine fault must not leave requests hanging
                    log.exception("decode step failed")
                    self.send_events(self.fail_all(f"The engine failed: {exc}"))
                self.slow_down(cycle_started)

    def send_events(self, events: list) -> None:
        if events:
            self.send(events)


# Batch sizes tried by engine.decode_batch_cap: auto (up to max_batch_size, which is always tried).
CALIBRATION_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Sizes whose decode throughput is within this fraction of the best count as equally good; the smallest
# of them is the cap: more sequences in the batch would add no throughput, only time per token for every
# one of them. Past capacity that is what lets admitted requests finish before their clients give up
# (measured: README "Benchmark", the decode batch cap past capacity).
CALIBRATION_TOLERANCE = 0.05
# Each size decodes for at least this long (and at least CALIBRATION_MIN_STEPS steps) to be timed.
CALIBRATION_WINDOW_S = 0.15
CALIBRATION_MIN_STEPS = 4
CALIBRATION_PROMPT = "Calibrate decoding."


@dataclass
class Calibration:
    """Decode throughput measured at start, per batch size, and the cap chosen from it."""

    tok_s_by_size: dict[int, float]
    cap: int

    def describe(self) -> str:
        sizes = ", ".join(f"{size}: {tok_s:.0f}" for size, tok_s in self.tok_s_by_size.items())
        return f"decode tok/s by batch size {{{sizes}}}"


def choose_decode_cap(tok_s_by_size: dict[int, float], tolerance: float = CALIBRATION_TOLERANCE) -> int:
    """The smallest batch size whose decode throughput is within `tolerance` of the best one measured."""
    best = max(tok_s_by_size.values())
    return min(size for size, tok_s in tok_s_by_size.items() if tok_s >= (1.0 - tolerance) * best)


def calibration_sizes(max_batch_size: int) -> list[int]:
    return sorted({size for size in CALIBRATION_SIZES if size < max_batch_size} | {max_batch_size})


def measure_decode_tok_s(
    model, prompt: list[int], sizes: list[int], prefill_batch_size: int
) -> dict[int, float]:
    """Steady decode throughput at each batch size, prefill excluded: one generator, grown size by size,
    so that each prompt is prefilled once."""
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(
        model, completion_batch_size=max(sizes), prefill_batch_size=min(max(sizes), prefill_batch_size)
    )
    measured: dict[int, float] = {}
    running = 0
    try:
        for size in sizes:
            generator.insert([prompt] * (size - running), max_tokens=[1 << 20] * (size - running))
            running = size
            for _ in range(4 * size + 8):  # bounded: joining takes ceil(new / prefill_batch_size) + 2 steps
                if len(generator.next()[1]) == size:
                    break
            started, steps, tokens = time.perf_counter(), 0, 0
            while steps < CALIBRATION_MIN_STEPS or time.perf_counter() - started < CALIBRATION_WINDOW_S:
                tokens += len(generator.next()[1])
                steps += 1
            measured[size] = tokens / (time.perf_counter() - started)
    finally:
        generator.close()
    return measured


def calibrate_decode_cap(runtime: BatchRuntime) -> Calibration:
    """Time decode steps at each batch size up to max_batch_size on this machine, now (about a second
    or two for the tiny model); vision runtimes are not calibrated and keep max_batch_size."""
    options = runtime.options
    if type(runtime).make_generator is not BatchRuntime.make_generator:
        log.info("engine.decode_batch_cap: auto measures text models only; this one keeps max_batch_size")
        return Calibration({}, options.max_batch_size)
    prompt = list(runtime.tokenizer.encode(CALIBRATION_PROMPT))
    sizes = calibration_sizes(options.max_batch_size)
    measured = measure_decode_tok_s(runtime.model, prompt, sizes, options.prefill_batch_size)
    return Calibration(measured, choose_decode_cap(measured))


@functools.lru_cache(maxsize=256)
def shared_sampler(temperature: float, top_p: float):
    """One sampler object per (temperature, top_p): the generator samples a batch in one call only when
    its sequences share the same sampler object, and falls back to one call per row otherwise."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0)


def drain(inbox, block: bool) -> list:
    """Every command waiting in the inbox; when idle, wait (bounded, to notice a dead parent)."""
    commands = []
    try:
        if block:
            commands.append(inbox.get(timeout=1.0))
        while True:
            commands.append(inbox.get_nowait())
    except queue.Empty:
        pass
    return commands
