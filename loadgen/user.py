"""The base simulated client: paces requests (closed or open loop), times them, reports one event each."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, ClassVar, cast

import gevent
from locust import User, task
from locust.env import Environment
from locust.exception import LocustError, StopUser

from loadgen.options import LoadSettings
from loadgen.plugin import auth_headers, state_of
from loadgen.process_record import record_of
from loadgen.prompts import IndexedPrompts, Prompt
from loadgen.transport import Connection, RequestSpec, common_body
from runfolder.records import CUT_DETAIL, RequestRecord

log = logging.getLogger(__name__)


class RequestFailed(Exception):
    """What Locust's failure table shows: '<outcome>: <detail>', from a small fixed vocabulary."""


class OpenAIUser(User):
    """Sends one kind of OpenAI-compatible request in a loop. Subclasses set the endpoint and the body."""

    abstract = True
    scenario: ClassVar[str] = "abstract"
    path: ClassVar[str] = "/v1/chat/completions"
    stream: ClassVar[bool] = True
    # --check-outputs: the request depends on its prompt alone (payload ignores the user), so its reply
    # alone can be recorded before any user exists (loadgen/output_refs.py). Scenarios that are not: False.
    checks_outputs: ClassVar[bool] = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._run = state_of(environment)
        self._user_id = next(self._run.user_ids)
        self._rng = random.Random(f"{self._run.settings.seed}-{self._run.worker_id}-{self._user_id}")
        self._conn: Connection | None = None

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        raise NotImplementedError

    def on_start(self) -> None:
        if not self.host:
            raise LocustError("no target: pass --host URL (e.g. --host http://127.0.0.1:8080)")
        process = record_of(self.environment)
        if process is not None and process.not_ready:
            raise StopUser()  # the server was not ready (logged once by the plugin): send nothing
        s = self._run.settings
        self._conn = Connection(self.host, timeout_s=s.request_timeout_s, headers=auth_headers(s))
        # Output tokens by the run's tokenizer when the server sends no usage; strict length checks.
        target = process.target if process is not None else None
        self._conn.token_counter = target.counter if target is not None else None
        self._conn.ignore_eos = s.ignore_eos

    def on_stop(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def wait_time(self) -> float:
        """Closed loop: think time. Open loop: none here; `send` claims a slot and waits until it is due."""
        return 0.0 if self._run.settings.open_loop else self._run.settings.think_time_s

    def _common(self, prompt: Prompt) -> dict[str, Any]:
        return common_body(self._run.settings, self._run.model, self.stream, prompt)

    @classmethod
    def reference_body(cls, prompt: Prompt, settings: LoadSettings, model: str | None) -> dict[str, Any]:
        """The body `send` sends for `prompt`, built without a user (output-check references, before the
        clock); only for `checks_outputs` scenarios, whose payload does not look at the user."""
        no_user = cast("OpenAIUser", None)
        return {**common_body(settings, model, cls.stream, prompt), **cls.payload(no_user, prompt)}

    def next_prompt(self, slot: int | None) -> Prompt:
        """This request's prompt; `slot`: the open-loop slot claimed (a trace replay's line)."""
        prompts = self._run.prompts
        assert prompts is not None
        index = getattr(self._run.schedule, "entry_index", None)
        if slot is not None and index is not None and isinstance(prompts, IndexedPrompts):
            line = index(slot)
            if line is not None:
                return prompts.at(line)
        return prompts.draw(self._rng)

    def on_reply(self, rec: RequestRecord, reply_text: str) -> None:
        """After each exchange (multi-turn users keep the reply)."""

    def _spec(self, slot: int | None = None) -> RequestSpec:
        check_index = None
        if self._run.outputs is not None:
            check_index, prompt = self._run.outputs.next_prompt()  # the checked prompts, in turn
        else:
            prompt = self.next_prompt(slot)
        body = {**self._common(prompt), **self.payload(prompt)}
        prefix_id = None
        if self._run.prefixes is not None:
            # A conversation keeps its system prompt on every turn: the pick is seeded by its id.
            rng = random.Random(f"{self._run.settings.seed}-{prompt.conversation_id}")
            prefix_id = self._run.prefixes.pick(rng if prompt.conversation_id else self._rng)
            if prefix_id is not None:
                body = self._run.prefixes.apply(body, prefix_id)
        return RequestSpec(
            self.scenario,
            self.path,
            json.dumps(body).encode(),
            self.stream,
            prompt.target_tokens,
            body["max_tokens"],
            conversation_id=prompt.conversation_id,
            turn_index=prompt.turn_index,
            shared_prefix_id=prefix_id,
            output_ref=check_index,
        )

    @task
    def send(self) -> None:
        assert self._conn is not None
        run = self._run
        if not run.wait_ready():
            return  # the test stopped before this worker got its configuration
        if run.past_end():
            run.stopped.wait()  # nothing is sent after the planned end: it would fall outside the window
            return
        due = slot = None
        if run.settings.open_loop:
            if run.schedule is None:
                run.stopped.wait()  # a worker without a share of the schedule (see docs/loadtest.md)
                return
            due = run.schedule.next_due()
            slot = run.schedule.claimed - 1
        # The body is built before the clock starts: closed loop starts it at the send, open loop at the slot.
        spec = self._spec(slot)
        if due is not None and not run.sleep_until(due):
            return  # the run ended before this slot fell due: not a request
        sent_ts_s = time.time()
        try:
            rec = self._conn.exchange(
                spec, scheduled_ts_s=due, worker_id=run.worker_id, user_id=self._user_id
            )
        except gevent.GreenletExit:
            # Stopped by the end of the test, not by the server: an outcome of its own, still counted.
            rec = cut_record(spec, due, sent_ts_s, run.worker_id, self._user_id)
            rec.output_check_prompt = spec.output_ref  # sent, never judged
            run.add(rec)
            self._report(rec)
            raise
        if spec.output_ref is not None and run.outputs is not None:
            run.outputs.apply(rec, spec.output_ref, self._conn.last_reply_text)  # after the clock stopped
        run.add(rec)
        self._report(rec)
        self.on_reply(rec, self._conn.last_reply_text)

    def _report(self, rec: RequestRecord) -> None:
        # Exactly one Locust event per real request; TTFT and tokens live in the records only.
        self.environment.events.request.fire(
            request_type="POST",
            name=self.scenario,
            response_time=rec.e2e_s * 1000,
            response_length=rec.response_bytes,
            exception=None
            if rec.outcome == "success"
            else RequestFailed(f"{rec.outcome}: {rec.outcome_detail}"),
            context={"outcome": rec.outcome, "ttft_s": rec.ttft_s, "output_tokens": rec.output_tokens},
            response=None,
            start_time=rec.sent_ts_s,
            url=self.path,
        )


def cut_record(
    spec: RequestSpec, due_ts_s: float | None, sent_ts_s: float, worker_id: str, user_id: int
) -> RequestRecord:
    """A request that was still in flight when Locust stopped its user."""
    now = time.time()
    scheduled = due_ts_s if due_ts_s is not None else sent_ts_s
    return RequestRecord(
        scenario=spec.scenario,
        stream=spec.stream,
        scheduled_ts_s=scheduled,
        sent_ts_s=sent_ts_s,
        end_ts_s=now,
        schedule_lag_s=sent_ts_s - scheduled,
        e2e_s=now - scheduled,
        outcome="cut",
        outcome_detail=CUT_DETAIL,
        prompt_tokens_target=spec.prompt_tokens_target,
        max_tokens=spec.max_tokens,
        worker_id=worker_id,
        user_id=user_id,
        conversation_id=spec.conversation_id,
        turn_index=spec.turn_index,
        shared_prefix_id=spec.shared_prefix_id,
    )
