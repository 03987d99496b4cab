"""The worker's continuous batch, whatever the model: the loop both runtimes share.

Requests join the generator between decode steps, in the groups `prefill_schedule` chooses, and leave
when they finish or are cancelled; `replies` turns their tokens into text events, `decode_cap` measures
the batch cap at start, `prefix_cache` keeps KV for later prompts. The runtimes bring the generator and
the prompts: `server.worker.text_runtime.BatchRuntime` (mlx-lm) and
`server.worker.vision_runtime.VisionRuntime` (mlx-vlm).
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic

from server import ipc
from server.ipc import RuntimeOptions
from server.worker.decode_cap import calibrate_decode_cap
from server.worker.prefill_schedule import MLX, PrefillScheduler, PromptT, Waiting, sampled_first_tokens
from server.worker.prefix_cache import PrefixCache, keep_prefixes, prefix_cache_for
from server.worker.replies import ReplyStreaming, Sequence, StopStringMatcher

log = logging.getLogger(__name__)


Loader = Callable[[], tuple[Any, Any]]


class BatchLoop(ReplyStreaming, Generic[PromptT]):
    """Owns the model, the tokenizer and a generator; one thread drives all of them.

    `loader` reloads the model and tokenizer; it is needed only when `options.persistent` is False.
    Subclasses make the generator (`make_generator`), the prompts (`tokenize`) and start them (`insert`).
    """

    # Whether the generator is mlx-lm's (text models): calibration, the prefix cache and early first
    # tokens need it; vision runtimes bring their own.
    runs_mlx_lm = False

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
        # by `concurrency_limit` (v1.1.1's serialized generation), by the prefill schedule, or collecting
        # a prefill batch.
        self.held: deque[Waiting[PromptT]] = deque()
        # Vision models keep mlx-vlm's own grouping: the split schedule was measured on text models only.
        schedule = options.prefill_schedule if self.runs_mlx_lm else MLX
        self.scheduler = PrefillScheduler(schedule, options.prefill_batch_size)
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
        if cap == "auto" and not self.runs_mlx_lm:
            log.info("engine.decode_batch_cap: auto measures text models only; this one keeps max_batch_size")
            cap = None
        elif cap == "auto":
            measured = calibrate_decode_cap(self.model, self.tokenizer, self.options)
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

    def make_generator(self) -> Any:
        raise NotImplementedError

    def ensure_loaded(self) -> None:
        if self.model is not None:
            return
        # Only a non-persistent runtime drops its model, and the constructor gave that one a loader.
        assert self.loader is not None
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
        # Only mlx-lm's generator takes caches at insert; vision runtimes run without.
        return prefix_cache_for(self.options) if self.runs_mlx_lm else None

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

    def start(self, sub: ipc.Submit, tokens: PromptT) -> ipc.Started:
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

    def tokenize(self, sub: ipc.Submit) -> PromptT:
        """The request's prompt; a ValueError refuses the request (HTTP 400)."""
        raise NotImplementedError

    def insert(self, sub: ipc.Submit, prompt: PromptT) -> int:
        """Queue the prompt in the generator; returns its uid."""
        raise NotImplementedError

    def token_ids(self, prompt: list[int]) -> list[int]:
        """A prompt sent as token ids, checked against the vocabulary."""
        vocab = self.tokenizer.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"Prompt token ids must be in [0, {vocab}).")
        return list(prompt)

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
        in_prefill = sum(1 for seq in self.sequences.values() if not seq.has_first_token)
        waiting_tokens = [len(item.tokens) for item in self.held]
        count = self.scheduler.group_size(waiting_tokens, free, in_prefill, len(self.sequences))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "schedule: step %d, %d of %d waiting inserted (in prefill %d, running %d)",
                self.decode_steps,
                count,
                len(waiting_tokens),
                in_prefill,
                len(self.sequences),
            )
        events = []
        for item in self.popleft(count):
            started = self.start(item.sub, item.tokens)
            if not item.announced:
                events.append(started)
        return events

    def popleft(self, count: int) -> list[Waiting[PromptT]]:
        return [self.held.popleft() for _ in range(count)]

    # -- decoding -------------------------------------------------------------------------------------
    def step(self) -> list:
        if self.runs_mlx_lm:
            with self.generator.stats() as counted:
                prompt_responses, responses = self.generator.next()
            self.scheduler.costs.observe(
                counted.prompt_tokens, counted.prompt_time, counted.generation_tokens, counted.decode_time
            )
        else:
            prompt_responses, responses = self.generator.next()
        if self.prefix_cache is not None:
            keep_prefixes(self.prefix_cache, self.generator, prompt_responses, responses)
        if self.options.force_sync:
            self.wait_for_engine()
        if responses:
            self.decode_steps += 1
            self.last_batch_size = len(responses)
        now = time.perf_counter()
        events: list = []
        for response in responses:
            seq = self.sequences.get(response.uid)
            if seq is not None:
                self.advance(seq, response.token, response.finish_reason, now, events)
        if self.options.early_first_token and self.runs_mlx_lm:
            self.send_first_tokens([r.uid for r in prompt_responses if r.end_of_prompt], now, events)
        events += self.admit_held()
        if events:
            events.append(self.stats())
        return events

    def send_first_tokens(self, joined: list[int], now: float, events: list) -> None:
        """Each prompt whose prefill ended in this step: its first token, now rather than a step later."""
        for uid, token in sampled_first_tokens(self.generator, joined).items():
            seq = self.sequences.get(uid)
            # An EOS first token ends the reply: the generator's own response finishes it next step.
            if seq is None or seq.has_first_token or (token in self.eos_ids and not seq.ignore_eos):
                continue
            self.advance(seq, token, None, now, events)
            if uid in self.sequences:  # not ended by a stop string: the generator repeats it next step
                seq.early_token = token

    def wait_for_engine(self) -> None:
        """Wait until every computation the generator has started is done. mlx-lm's generator runs on a
        stream of its own (its `stream`), which `mx.synchronize()` without a stream does not wait for."""
        import mlx.core as mx

        stream = getattr(self.generator, "stream", None)
        if stream is not None:
            mx.synchronize(stream)
        else:
            mx.synchronize()

    def slow_down(self, cycle_started_s: float) -> None:
        """testing.slowdown_pct: make the cycle that just ran (commands, step, events: all of the worker's
        work for one token of each sequence) that much longer, with more work for the engine: small
        matrix products on the generator's own stream, as if its computation were slower (CPU burnt).

        It first waits for the step mlx-lm has already started on that stream. A spin beside it in this
        thread was hidden in the overlap (measured: 10 % cost 1-13 % end to end); a spin after the wait
        left the engine's thread idle long enough to fall asleep, and every cycle then paid its wake-up
        (10 % cost 13-17 %). Work on the stream keeps it as busy as a slower engine would
        (docs/reports.md, "The known regression", has the measured end-to-end cost)."""
        if not self.options.slowdown_pct:
            return
        import mlx.core as mx

        self.wait_for_engine()
        now_s = time.perf_counter()
        until_s = now_s + (now_s - cycle_started_s) * self.options.slowdown_pct / 100.0
        stream = getattr(self.generator, "stream", None) or mx.default_stream(mx.default_device())
        operand = mx.ones((64, 64))
        with mx.stream(stream):
            while time.perf_counter() < until_s:
                mx.eval(operand @ operand)

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
            cycle_started_s = time.perf_counter()  # after any idle wait: the cycle is the work
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
                self.slow_down(cycle_started_s)

    def send_events(self, events: list) -> None:
        if events:
            self.send(events)


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
