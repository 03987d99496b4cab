"""Locust event listeners: options, per-process state, record shipping to the master, the run folder.

Message flow in distributed mode (--processes N, or --master/--worker):
  master test_start: the shard count is fixed (the workers connected then) and a ShardBook is opened;
  worker test_start -> "loadgen_hello" (its clock) -> the master assigns it a shard by worker id and
  answers "loadgen_config" (start time, shards, its shard, model, the master's clock). A worker that
  reconnects or joins late says hello again and gets the config again. Workers piggyback records on
  Locust's periodic stats report and send the rest in "loadgen_final" at their test_stop; the master
  waits for every configured worker's final batch before it writes the run folder, and names the missing
  ones in summary.json. When the master stops on --run-time it has not told workers to stop yet, so it
  sends "loadgen_stop" first.
The server's metrics (--server-metrics) are scraped by the master or the single process only, in one
greenlet from test_start (before any request) to test_stop (after the last one ended).
"""

from __future__ import annotations

import logging
import sys
import time
from argparse import ArgumentParser
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from locust import events
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from loadgen import options, output_check, output_refs, prepare, server_scrape, side_requests, webui
from loadgen.process_record import ProcessRecord, attach, current_environment, record_of
from loadgen.prompts import PromptError
from loadgen.receive_stamps import keep_on as keep_kernel_stamps_on
from loadgen.runstate import RunState, load_prompts
from loadgen.shards import ShardBook
from loadgen.workloads import setup as workloads

log = logging.getLogger(__name__)

HELLO_MSG, CONFIG_MSG = "loadgen_hello", "loadgen_config"
FINAL_MSG, STOP_MSG = "loadgen_final", "loadgen_stop"
REPORT_KEY = "loadgen"
FINAL_GRACE_S = 10.0  # beyond --stop-timeout, how long the master waits for workers' last records

# Set once on_init has built this process's RunState. A worker is connected to its master before Locust
# fires init, so a spawn (and the listeners it triggers) can come first: those wait for it.
_initialized = Event()
INIT_WAIT_S = 120.0


def process_of(environment: Environment) -> ProcessRecord:
    record = record_of(environment)  # made in on_init; one per process
    if record is None:
        _initialized.wait(INIT_WAIT_S)
        record = record_of(environment)
    if record is None:
        raise RuntimeError("the load generator's plugin was not initialized in this process")
    return record


def state_of(environment: Environment) -> RunState:
    return process_of(environment).state


def auth_headers(settings: options.LoadSettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}


def on_parser(parser: ArgumentParser, **_kw: Any) -> None:
    options.add_arguments(parser)


def on_init(environment: Environment, **_kw: Any) -> None:
    settings = options.LoadSettings.from_options(environment.parsed_options)
    classes = list(environment.user_classes or ())
    problems = settings.problems() + workloads.class_problems(classes, settings)
    problems += output_check.class_problems(classes, settings)
    if not problems:
        try:
            load_prompts(settings)
            workloads.check_files(settings)
        except PromptError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            log.error("invalid option: %s", problem)
        sys.exit(2)
    environment.stop_timeout = options.stop_timeout_s(environment.stop_timeout, settings.request_timeout_s)
    if environment.parsed_options is not None:
        environment.parsed_options.stop_timeout = environment.stop_timeout
    keep_kernel_stamps_on()  # before any clock: the kernel switches stamping on late (see the module)
    # gevent's loop caches "now" from its last iteration; after a slow start (imports on a busy machine)
    # it can be seconds old, and Locust's --run-time timer, set from it, then fires at once.
    gevent.get_hub().loop.update_now()
    record = ProcessRecord(RunState(settings, ready=Event(), stopped=Event()))
    attach(environment, record)
    _initialized.set()
    runner = environment.runner
    # Before preparing: messages can arrive while it waits on the network.
    if isinstance(runner, MasterRunner):
        runner.register_message(HELLO_MSG, _on_hello)
        runner.register_message(FINAL_MSG, _on_final)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(CONFIG_MSG, _on_config)
        runner.register_message(STOP_MSG, _on_stop_request, concurrent=True)
    if _prepares_at_init(environment):
        # Wait for the server, find the model, load the tokenizer, build the prompts: before Locust starts
        # its run-time clock (and, on a worker, before its first test); exit 2 if the server never comes.
        # A worker's runner already receives messages meanwhile: its test waits for this (`_ensure_target`).
        record.prepared = Event()
        try:
            host = environment.host or ""
            target = prepare.prepare(settings, host, auth_headers(settings))
        except prepare.NotReady as exc:
            log.error("%s", exc)
            sys.exit(2)
        record.target = _with_references(environment, settings, target)
        record.prepared.set()
        # Loading a tokenizer blocks the event loop without yielding, and the loop's cached clock would
        # then start Locust's --run-time timer that much in the past (a 4 s run ended at once).
        gevent.get_hub().loop.update_now()
    if environment.web_ui is not None:
        webui.install(environment.web_ui, record.state)


def _prepares_at_init(environment: Environment) -> bool:
    """Headless runs prepare at start-up: the master (or single process), and workers that know the host
    (`--processes`). A test started from the web UI, or a worker told the host later, prepares then."""
    if not getattr(environment.parsed_options, "headless", False):
        return False
    return not isinstance(environment.runner, WorkerRunner) or bool(environment.host)


def _ensure_target(
    environment: Environment, state: RunState, model: str | None = None
) -> prepare.Target | None:
    """Readiness, the model (--model, else the first id the server lists), token counter and prompts.

    Done at init when `_prepares_at_init`; else here, per test (the web UI may have changed the options).
    None when the server is not ready: logged, the test stopped, and no user sends anything.
    """
    record = process_of(environment)
    if record.prepared is not None:
        record.prepared.wait()  # init is still preparing (a worker's first test can start meanwhile)
    target = record.target
    if target is None or not _prepares_at_init(environment):
        try:
            headers = auth_headers(state.settings)
            host = environment.host or ""
            target = prepare.prepare(state.settings, host, headers, model=model, wait=not model)
        except prepare.NotReady as exc:
            log.error("%s", exc)
            record.not_ready = True  # users stop at once: no request goes out
            gevent.spawn(environment.runner.stop)  # type: ignore[union-attr]  # a test runs: a runner
            return None
        target = _with_references(environment, state.settings, target)
        gevent.get_hub().loop.update_now()  # a tokenizer load blocked the loop (see on_init)
        record.target = target
    record.not_ready = False
    return target


def _with_references(
    environment: Environment, settings: options.LoadSettings, target: prepare.Target
) -> prepare.Target:
    """--check-outputs: the master (or the single process) sends each check prompt alone, before the clock;
    workers get the references with their configuration (loadgen/output_refs.py says why)."""
    if settings.check_outputs and not isinstance(environment.runner, WorkerRunner):
        classes = environment.user_classes or ()
        host = environment.host or ""
        target.outputs = output_refs.record(settings, target, classes, host, auth_headers(settings))
    return target


def _install(state: RunState, target: prepare.Target, model: str | None = None) -> None:
    """After `state.begin`, with no yield in between: a worker's users draw prompts once it is ready.
    A worker keeps the model its master sent (`model`)."""
    state.model, state.server, state.prompts = model or target.model, target.server, target.prompts
    state.prefixes, state.outputs = target.prefixes, target.outputs


def on_test_start(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    state = state_of(environment)
    state.settings = options.LoadSettings.from_options(environment.parsed_options)  # the web UI may edit them
    if isinstance(runner, WorkerRunner):
        state.worker_id = f"w{max(runner.worker_index, 0)}"
        state.ready.clear()
        state.stopped.clear()
        runner.send_message(HELLO_MSG, {"worker_ts_s": time.time(), "worker_id": state.worker_id})
        return
    record = process_of(environment)
    record.final_workers, record.expected_workers = set(), set()
    if isinstance(runner, MasterRunner):
        state.worker_id = "master"
        state.shards = max(len(_live_workers(runner)), 1)
        state.shard, state.workers = 0, {}
        record.shard_book = ShardBook(state.shards)
    target = _ensure_target(environment, state)  # may wait on the network: before the clock starts
    state.scraper = _start_scraper(environment, state.settings) if target is not None else None
    state.begin(time.time())
    run_time = getattr(environment.parsed_options, "run_time", None)
    state.end_ts_s = state.start_ts_s + run_time if run_time else None
    if target is not None:
        _install(state, target)


def _start_scraper(environment: Environment, settings: options.LoadSettings) -> server_scrape.Scraper:
    """The server's metrics (master or single process only): the first scrape, before any request is sent,
    then a greenlet that scrapes every interval until the test stops."""
    url = server_scrape.metrics_url(settings.server_metrics, environment.host or "")
    scraper = server_scrape.Scraper(url, settings.server_metrics_interval_s)
    loop = gevent.spawn(_scrape_every, scraper) if scraper.start() else None
    process_of(environment).scrape_loop = loop
    return scraper


def _scrape_every(scraper: server_scrape.Scraper) -> None:
    # On a fixed grid, so that a slow scrape does not shift the later ones; one that overran skips ahead.
    due = time.monotonic()
    while True:
        due = max(due + scraper.interval_s, time.monotonic())
        gevent.sleep(due - time.monotonic())
        scraper.scrape()


def _stop_scraper(environment: Environment, state: RunState) -> None:
    """Stop the periodic scrapes, then the last one (after every request has ended)."""
    record = process_of(environment)
    if record.scrape_loop is not None:
        record.scrape_loop.kill(block=True, timeout=server_scrape.TIMEOUT_S + 1)
        record.scrape_loop = None
    if state.scraper is not None:
        state.scraper.finish(gevent.sleep)


def _live_workers(runner: MasterRunner) -> set[str]:
    return {cid for cid, node in runner.clients.items() if node.state != STATE_MISSING}


def _on_hello(environment: Environment, msg: Message, **_kw: Any) -> None:
    """A worker started (or restarted) its test: give it its shard and the run's configuration."""
    record = process_of(environment)
    state = record.state
    runner = environment.runner
    assert isinstance(runner, MasterRunner)  # hellos are registered on the master only
    assert record.shard_book is not None  # opened at the master's test_start, before any hello
    assignment = record.shard_book.assign(msg.node_id, _live_workers(runner) | {msg.node_id})
    record.expected_workers.add(msg.node_id)
    record.final_workers.discard(msg.node_id)
    state.workers.setdefault(msg.data["worker_id"], {}).update(
        {"client_id": msg.node_id, "shard": assignment.shard}
    )
    if assignment.shard is None and state.settings.open_loop:
        log.warning("worker %s joined with every shard taken: its users send nothing", msg.data["worker_id"])
    runner.send_message(
        CONFIG_MSG,
        {
            "start_ts_s": state.start_ts_s,
            "end_ts_s": state.end_ts_s,
            "shards": state.shards,
            "shard": assignment.shard,
            "takeover": assignment.takeover,
            "model": state.model,
            "output_check": state.outputs.to_wire() if state.outputs is not None else None,
            "worker_ts_s": msg.data["worker_ts_s"],
            "master_ts_s": time.time(),
        },
        client_id=msg.node_id,
    )


def _on_config(environment: Environment, msg: Message, **_kw: Any) -> None:
    """Measure this worker's clock against the master's (NTP-style), then start this worker's test."""
    state = state_of(environment)
    now = time.time()
    data = msg.data
    rtt = now - data["worker_ts_s"]
    state.clock_offset_s = (data["worker_ts_s"] + now) / 2 - data["master_ts_s"]
    state.info = {"clock_offset_s": state.clock_offset_s, "rtt_s": rtt, "shard": data["shard"]}
    if state.ready.is_set() and state.start_ts_s == data["start_ts_s"]:
        return  # a repeated hello for the same test (reconnect): keep the schedule and the records
    state.shards = max(int(data["shards"]), 1)
    state.shard = data["shard"] if data["shard"] is not None else 0
    state.has_shard = data["shard"] is not None
    state.model = data["model"]
    state.end_ts_s = data.get("end_ts_s")
    target = _ensure_target(environment, state, model=state.model)  # may wait on the network: before begin
    state.begin(data["start_ts_s"])
    if target is not None:
        _install(state, target, model=data["model"])
        if data.get("output_check") is not None:  # the master's references: compared here, on the worker
            state.outputs = output_check.OutputCheck.from_wire(
                data["output_check"],
                ignore_eos=state.settings.ignore_eos,
                encode=output_refs.encoder_of(target.counter),
            )
    if data["takeover"] and state.schedule is not None:
        skipped = state.schedule.skip_until(time.time())
        log.info("took over shard %s late: %d slot(s) already past are left missed", data["shard"], skipped)


def _on_stop_request(environment: Environment, msg: Message, **_kw: Any) -> None:
    # Fires test_stop here, which sends our final records (a message came: there is a runner).
    environment.runner.stop()  # type: ignore[union-attr]


def on_test_stopping(environment: Environment, **_kw: Any) -> None:
    state = state_of(environment)
    state.stop_ts_s = time.time()
    state.stopped.set()


def _worker_payload(state: RunState, final: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"records": state.drain(), "worker_id": state.worker_id, "info": state.info}
    if final:
        payload["cpu"] = state.cpu_used()
        payload["side_requests"] = side_requests.LEDGER.take()  # this worker's probes, calibration, counts
    return payload


def on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    env = current_environment()
    if env is not None and isinstance(env.runner, WorkerRunner) and state_of(env).ready.is_set():
        data[REPORT_KEY] = _worker_payload(state_of(env), final=False)


def _merge(environment: Environment, payload: dict[str, Any]) -> None:
    state = state_of(environment)
    state.merge(payload)
    worker = payload.get("worker_id")
    if worker:
        state.workers.setdefault(worker, {}).update(payload.get("info") or {})
        if "cpu" in payload:
            state.cpu[worker] = payload["cpu"]
    side_requests.LEDGER.merge(payload.get("side_requests") or [])


def on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    env = current_environment()
    if REPORT_KEY in data and env is not None:
        _merge(env, data[REPORT_KEY])


def _on_final(environment: Environment, msg: Message, **_kw: Any) -> None:
    _merge(environment, msg.data)
    process_of(environment).final_workers.add(msg.node_id)


def on_test_stop(environment: Environment, **_kw: Any) -> None:
    runner = environment.runner
    state = state_of(environment)
    if isinstance(runner, WorkerRunner):
        if state.ready.is_set():
            runner.send_message(FINAL_MSG, _worker_payload(state, final=True))
        state.start_ts_s = 0.0
        state.ready.clear()
        return
    if isinstance(runner, MasterRunner):
        _await_finals(environment, runner)
    _stop_scraper(environment, state)
    state.finish(environment)


def _await_finals(environment: Environment, runner: MasterRunner) -> None:
    record = process_of(environment)
    expected = record.expected_workers
    if expected - record.final_workers:
        runner.send_message(STOP_MSG)  # workers that already stopped ignore it
    deadline = time.monotonic() + (environment.stop_timeout or 0) + FINAL_GRACE_S
    while expected - record.final_workers and time.monotonic() < deadline:
        gevent.sleep(0.05)
    state = record.state
    by_client = {w.get("client_id"): name for name, w in state.workers.items()}
    state.missing_workers = sorted(by_client.get(c, c) for c in expected - record.final_workers)


def on_quitting(environment: Environment, **_kw: Any) -> None:
    record = record_of(environment)
    if record is not None and record.state.write_failed and environment.process_exit_code in (None, 0):
        environment.process_exit_code = 2


def _listen(hook: Any, handler: Callable[..., None]) -> None:
    hook.add_listener(handler)


# Registered here rather than by decorator: Locust's event hooks carry no types.
_listen(events.init_command_line_parser, on_parser)
_listen(events.init, on_init)
_listen(events.test_start, on_test_start)
_listen(events.test_stopping, on_test_stopping)
_listen(events.report_to_master, on_report_to_master)
_listen(events.worker_report, on_worker_report)
_listen(events.test_stop, on_test_stop)
_listen(events.quitting, on_quitting)
