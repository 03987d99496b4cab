"""The base simulated client: paces requests (closed or open loop), times them, reports one event each."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, ClassVar

import gevent
from locust import User, task
from locust.exception import LocustError, StopUser

from benchcore.loadgen.plugin import auth_headers, state_of
from benchcore.loadgen.transport import Connection, RequestSpec
from benchcore.prompts import Prompt
from benchcore.records import RequestRecord

log = logging.getLogger(__name__)


class RequestFailed(Exception):
    """What Locust's failure table shows: '<outcome>: <detail>', from a small fixed vocabulary."""


class OpenAIUser(User):
    """Sends one kind of OpenAI-compatible request in a loop. Subclasses set the endpoint and the body."""

    abstract = True
    scenario: ClassVar[str] = "abstract"
    path: ClassVar[str] = "/v1/chat/completions"
    stream: ClassVar[bool] = True

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self._run = state_of(environment)
        self._user_id = next(self._run.user_ids)
        self._rng = random.Random(f"{self._run.settings.seed}-{self._run.worker_id}-{self._user_id}")
        self._due_ts_s: float | None = None
        self._conn: Connection | None = None

    def payload(self, prompt: Prompt) -> dict[str, Any]:
        raise NotImplementedError

    def on_start(self) -> None:
        if not self.host:
            raise LocustError("no target: pass --host URL (e.g. --host http://127.0.0.1:8080)")
        if getattr(self.environment, "benchcore_not_ready", False):
            raise StopUser()  # the server was not ready (logged once by the plugin): send nothing
        s = self._run.settings
        self._conn = Connection(self.host, timeout_s=s.request_timeout_s, headers=auth_headers(s))
        # Item 6: output tokens by the run's tokenizer when the server sends no usage; strict length checks.
        target = getattr(self.environment, "benchcore_target", None)
        self._conn.token_counter = getattr(target, "counter", None)
        self._conn.ignore_eos = s.ignore_eos

    def on_stop(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def wait_time(self) -> float:
        """Closed loop: think time. Open loop: claim the next arrival slot and sleep until it is due."""
        schedule = self._run.schedule
        if schedule is None:
            return self._run.settings.think_time_s
        self._due_ts_s = schedule.next_due()
        return max(0.0, self._due_ts_s - time.time())

    def _scheduled_ts(self) -> float:
        due, self._due_ts_s = self._due_ts_s, None
        if due is None and self._run.schedule is not None:
            # The first task runs before any wait_time(): claim a slot here.
            due = self._run.schedule.next_due()
            gevent.sleep(max(0.0, due - time.time()))
        return due if due is not None else time.time()

    def _common(self, prompt: Prompt) -> dict[str, Any]:
        s = self._run.settings
        body: dict[str, Any] = {"max_tokens": prompt.max_tokens or s.max_tokens}
        if self._run.model:
            body["model"] = self._run.model
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if s.ignore_eos:
            body["ignore_eos"] = True
        if s.temperature is not None:
            body["temperature"] = s.temperature
        return body

    @task
    def send(self) -> None:
        assert self._conn is not None and self._run.prompts is not None
        scheduled = self._scheduled_ts()
        prompt = self._run.prompts.draw(self._rng)
        body = {**self._common(prompt), **self.payload(prompt)}
        spec = RequestSpec(
            self.scenario,
            self.path,
            json.dumps(body).encode(),
            self.stream,
            prompt.target_tokens,
            body["max_tokens"],
        )
        try:
            rec = self._conn.exchange(
                spec, scheduled_ts_s=scheduled, worker_id=self._run.worker_id, user_id=self._user_id
            )
        except gevent.GreenletExit:
            self._run.incomplete += 1  # stopped by the end of the test, not by the server
            raise
        self._run.add(rec)
        self._report(rec)

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
