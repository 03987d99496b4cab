"""Locust event listeners: options, per-process state, record shipping to the master, the run folder.

Message flow in distributed mode (--processes N, or --master/--worker):
  master test_start -> "benchcore_config" to workers (start time, shard count, model);
  workers piggyback records on Locust's periodic stats report, and send the rest in "benchcore_final" at
  their test_stop; the master waits for every worker's final batch before it writes the run folder. When
  the master stops on --run-time it has not told workers to stop yet, so it sends "benchcore_stop" first.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import gevent
from gevent.event import Event
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from benchcore.loadgen import options, prepare
from benchcore.loadgen.runstate import RunState, load_prompts
from benchcore.prompts import PromptError

log = logging.getLogger(__name__)

CONFIG_MSG, FINAL_MSG, STOP_MSG = "benchcore_config", "benchcore_final", "benchcore_stop"
REPORT_KEY = "benchcore"
FINAL_GRACE_S = 10.0  # beyond --stop-timeout, how long the master waits for workers' last records

# report_to_master and worker_report listeners receive no environment: keep this process's one here.
_process: dict[str, Any] = {}


def state_of(environment) -> RunState:
    return environment.benchcore_state  # set in on_init; one per process


def auth_headers(settings: options.LoadSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


@events.init_command_line_parser.add_listener
def on_parser(parser, **_kw) -> None:
    options.add_arguments(parser)


@events.init.add_listener
def on_init(environment, **_kw) -> None:
    settings = options.LoadSettings.from_options(environment.parsed_options)
    problems = settings.problems()
    if not problems:
        try:
            load_prompts(settings)
        except PromptError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            log.error("invalid option: %s", problem)
        sys.exit(2)
    _process["env"] = environment
    environment.benchcore_state = RunState(settings)
    environment.benchcore_finals = set()
    runner = environment.runner
    # Before preparing: messages can arrive while it waits on the network.
    if isinstance(runner, MasterRunner):
        runner.register_message(FINAL_MSG, _on_final)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(CONFIG_MSG, _on_config)
        runner.register_message(STOP_MSG, _on_stop_request, concurrent=True)
    if _prepares_at_init(environment):
        # Wait for the server, find the model, load the tokenizer, build the prompts: before Locust starts
        # its run-time clock (and, on a worker, before its first test); exit 2 if the server never comes.
        # A worker's runner already receives messages meanwhile: its test waits for this (`_resolve_model`).
        environment.benchcore_prepared = Event()
        try:
            host = environment.host or ""
            environment.benchcore_target = prepare.prepare(settings, host, auth_headers(settings))
        except prepare.NotReady as exc:
            log.error("%s", exc)
            sys.exit(2)
        environment.benchcore_prepared.set()
        # Loading a tokenizer blocks the event loop without yielding, and the loop's cached clock would
        # then start Locust's --run-time timer that much in the past (a 4 s run ended at once).
        gevent.get_hub().loop.update_now()


def _prepares_at_init(environment) -> bool:
    """Headless runs prepare at start-up: the master (or single process), and workers that know the host
    (`--processes`). A test started from the web UI, or a worker told the host later, prepares then."""
    if not getattr(environment.parsed_options, "headless", False):
        return False
    return not isinstance(environment.runner, WorkerRunner) or bool(environment.host)


def _resolve_model(environment, state: RunState, *, model: str | None = None) -> None:
    """Readiness, the model (--model, else the first id the server lists), token counter and prompts.

    Done at init when `_prepares_at_init`; else here, per test (the web UI may have changed the options).
    A worker keeps the model its master sent (`model`).
    """
    prepared = getattr(environment, "benchcore_prepared", None)
    if prepared is not None:
        prepared.wait()  # init is still preparing (a worker's first test can start meanwhile)
    target = getattr(environment, "benchcore_target", None)
    if target is None or not _prepares_at_init(environment):
        try:
            headers = auth_headers(state.settings)
            host = environment.host or ""
            target = prepare.prepare(state.settings, host, headers, model=model, wait=not model)
        except prepare.NotReady as exc:
            log.error("%s", exc)
            environment.benchcore_not_ready = True  # users stop at once: no request goes out
            gevent.spawn(environment.runner.stop)
            return
        gevent.get_hub().loop.update_now()  # a tokenizer load blocked the loop (see on_init)
        environment.benchcore_target = target
    environment.benchcore_not_ready = False
    # No yield from here on: a worker's users start drawing prompts once its state is ready.
    state.model, state.server, state.prompts = model or target.model, target.server, target.prompts


@events.test_start.add_listener
def on_test_start(environment, **_kw) -> None:
    runner = environment.runner
    state = state_of(environment)
    state.settings = options.LoadSettings.from_options(environment.parsed_options)  # the web UI may edit them
    if isinstance(runner, WorkerRunner):
        state.worker_id = f"w{max(runner.worker_index, 0)}"
        state.shard = max(runner.worker_index, 0)
        configured = bool(state.start_ts_s)
        # Without a config message (an older master) this worker runs on its own clock and model lookup.
        state.begin(state.start_ts_s if configured else time.time())
        _resolve_model(environment, state, model=state.model if configured else None)
        return
    state.begin(time.time())
    _resolve_model(environment, state)
    environment.benchcore_finals = set()
    if isinstance(runner, MasterRunner):
        workers = runner.clients.ready + runner.clients.running + runner.clients.spawning
        environment.benchcore_expected = {w.id for w in workers}
        state.shards = len(workers) or 1
        runner.send_message(
            CONFIG_MSG, {"start_ts_s": state.start_ts_s, "shards": state.shards, "model": state.model}
        )


def _on_config(environment, msg, **_kw) -> None:
    state = state_of(environment)
    state.start_ts_s = msg.data["start_ts_s"]
    state.shards = max(int(msg.data["shards"]), 1)
    state.model = msg.data["model"]


def _on_stop_request(environment, msg, **_kw) -> None:
    environment.runner.stop()  # fires test_stop here, which sends our final records


@events.test_stopping.add_listener
def on_test_stopping(environment, **_kw) -> None:
    state_of(environment).stop_ts_s = time.time()


@events.report_to_master.add_listener
def on_report_to_master(client_id, data, **_kw) -> None:
    env = _process.get("env")
    if env is not None and isinstance(env.runner, WorkerRunner):
        state = state_of(env)
        data[REPORT_KEY] = {"records": state.drain(), "incomplete": state.incomplete}
        state.incomplete = 0


@events.worker_report.add_listener
def on_worker_report(client_id, data, **_kw) -> None:
    env = _process.get("env")
    if REPORT_KEY in data and env is not None:
        state_of(env).merge(data[REPORT_KEY])


def _on_final(environment, msg, **_kw) -> None:
    state_of(environment).merge(msg.data)
    environment.benchcore_finals.add(msg.node_id)


@events.test_stop.add_listener
def on_test_stop(environment, **_kw) -> None:
    runner = environment.runner
    state = state_of(environment)
    if isinstance(runner, WorkerRunner):
        runner.send_message(FINAL_MSG, {"records": state.drain(), "incomplete": state.incomplete})
        state.incomplete, state.start_ts_s = 0, 0.0
        return
    if isinstance(runner, MasterRunner):
        _await_finals(environment, runner)
    state.finish(environment)


def _await_finals(environment, runner) -> None:
    expected = getattr(environment, "benchcore_expected", set())
    if expected - environment.benchcore_finals:
        runner.send_message(STOP_MSG)  # workers that already stopped ignore it
    deadline = time.monotonic() + (environment.stop_timeout or 0) + FINAL_GRACE_S
    while expected - environment.benchcore_finals and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if missing := expected - environment.benchcore_finals:
        log.warning("no final records from %d worker(s); their last requests are missing", len(missing))


@events.quitting.add_listener
def on_quitting(environment, **_kw) -> None:
    state = getattr(environment, "benchcore_state", None)
    if state is not None and state.write_failed and environment.process_exit_code in (None, 0):
        environment.process_exit_code = 2
