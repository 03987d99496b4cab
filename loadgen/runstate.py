"""Per-process state of a load test: settings, schedule, records; and turning records into a run folder."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from loadgen import receive_stamps, side_requests
from loadgen.arrival_schedule import ArrivalSchedule, due_slots
from loadgen.console import console_table
from loadgen.options import LoadSettings
from loadgen.prompts import FilePrompts, PromptSource, SyntheticPrompts
from loadgen.workloads import setup as workloads
from runfolder import metadata as meta
from runfolder.figures import Slo
from runfolder.folder import write_run
from runfolder.records import RequestRecord
from runfolder.server_metrics import SERVER_METRICS_FILE, client_counts, write_server_metrics
from runfolder.summary import MISSING_WORKER_RECORDS, add_warning, summarize

if TYPE_CHECKING:  # type-only: this module stays free of Locust and gevent (tests/loadgen/test_core.py)
    from locust.env import Environment

log = logging.getLogger(__name__)

LAG_WARNING_S = 0.1  # warn (at most every WARN_EVERY_S) when a request leaves this late
WARN_EVERY_S = 10.0
READY_TIMEOUT_S = 30.0
EARLY_WAKE_S = 0.002  # how long a worker's users wait for the master's configuration


def _scrubbed(argv: list[str]) -> list[str]:
    """The command line without the API key's value."""
    out, hide = [], False
    for arg in argv:
        out.append("***" if hide else ("--api-key=***" if arg.startswith("--api-key=") else arg))
        hide = arg == "--api-key"
    return out


def load_prompts(s: LoadSettings) -> SyntheticPrompts | FilePrompts:
    if s.prompt_file:
        return FilePrompts(Path(s.prompt_file))
    return SyntheticPrompts(s.prompt_tokens, s.prompt_dist, s.prompt_tokens_spread)  # type: ignore[arg-type]


@dataclass
class RunState:
    """Everything one Locust process knows about the current test.

    On a worker, `records` holds what has not yet been sent to the master; on the master and in a
    single process, it holds every record of the test.
    """

    settings: LoadSettings
    worker_id: str = "local"
    start_ts_s: float = 0.0
    stop_ts_s: float | None = None
    # The planned end (start + --run-time, master's clock): no open-loop slot due after it is sent, so
    # workers that hear of the stop a moment later send nothing outside the window.
    end_ts_s: float | None = None
    model: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    shards: int = 1
    shard: int = 0
    records: list[RequestRecord] = field(default_factory=list)
    incomplete: int = 0  # unused since cut requests are records (outcome "cut"); kept for old masters
    schedule: ArrivalSchedule | None = None
    prompts: PromptSource | None = None
    prefixes: Any = None  # the shared-prefix pool, None when off (loadgen.workloads.shared_prefix)
    outputs: Any = None  # --check-outputs: prompts and references (loadgen.output_check), None when off
    user_ids: itertools.count[int] = field(default_factory=itertools.count)
    written_dirs: list[Path] = field(default_factory=list)
    write_failed: bool = False
    # gevent Events made by the plugin (this module stays importable without gevent): the configuration
    # is known (a worker waits for the master's), and the test is stopping.
    ready: Any = None
    stopped: Any = None
    # A worker's clock minus the master's (seconds), measured when the configuration arrived; the
    # worker schedules on its own clock and ships records in the master's time.
    clock_offset_s: float = 0.0
    has_shard: bool = True
    info: dict[str, Any] = field(default_factory=dict)  # a worker's shard, clock offset, round trip
    # Distributed runs, on the master: per worker what it reported (shard, clock offset, CPU).
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_workers: list[str] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # process id -> {cpu_s, wall_s}
    # The server's metrics (loadgen.server_scrape.Scraper), on the master or single process only.
    scraper: Any = None
    _cpu_start: tuple[float, float] = (0.0, 0.0)
    _last_lag_warning_s: float = 0.0

    def begin(self, start_ts_s: float) -> None:
        """A new test: clear the records, start the arrival schedule at the run's start time."""
        s = self.settings
        self.start_ts_s, self.stop_ts_s = start_ts_s, None
        self.records, self.incomplete = [], 0
        self.cpu, self.missing_workers = {}, []
        self._cpu_start = (_process_cpu_s(), time.time())
        self.prompts = load_prompts(s)
        self.schedule = None
        if s.arrival == "trace" and self.has_shard:
            start = start_ts_s + self.clock_offset_s  # due times on this process's own clock
            self.schedule = workloads.schedule(s, start, self.shard % self.shards, self.shards)  # type: ignore[assignment]
        elif s.open_loop and self.has_shard:
            self.schedule = ArrivalSchedule(
                s.arrival,  # type: ignore[arg-type]
                s.rate or 0.0,
                start_ts_s + self.clock_offset_s,  # due times on this process's own clock
                seed=s.seed,
                shard=self.shard % self.shards,
                shards=self.shards,
            )
        if self.stopped is not None:
            self.stopped.clear()
        if self.ready is not None:
            self.ready.set()

    def wait_ready(self) -> bool:
        """Block a user until the configuration is known; False when the test stopped first."""
        if self.ready is None or self.ready.is_set():
            return True
        self.ready.wait(READY_TIMEOUT_S)
        if not self.ready.is_set():
            log.warning(
                "no configuration from the master after %.0f s: this worker sends nothing", READY_TIMEOUT_S
            )
            self.stopped.wait()
        return self.ready.is_set() and not self.stopped.is_set()

    def past_end(self) -> bool:
        """The run's planned end has passed (a worker may hear of the stop a moment later)."""
        return self.end_ts_s is not None and time.time() >= self.end_ts_s + self.clock_offset_s

    def sleep_until(self, due_ts_s: float) -> bool:
        """Wait for a slot; False if the test stopped before it fell due (it then never counts as due)."""
        # Timers wake up to a millisecond late (epoll counts in ms): sleep until just before the slot, then
        # yield to the other users until it is due.
        delay = due_ts_s - time.time() - EARLY_WAKE_S
        if delay > 0 and self.stopped is not None:
            self.stopped.wait(delay)
        elif delay > 0:
            time.sleep(delay)
        while time.time() < due_ts_s and not (self.stopped is not None and self.stopped.is_set()):
            time.sleep(0)  # gevent.sleep(0) once Locust has patched the standard library
        if self.end_ts_s is not None and due_ts_s >= self.end_ts_s + self.clock_offset_s:
            return False
        return not (self.stopped is not None and self.stopped.is_set() and due_ts_s >= time.time())

    def cpu_used(self) -> dict[str, float]:
        """CPU seconds this process used since the test began, and the wall seconds it took."""
        cpu0, wall0 = self._cpu_start
        return {"cpu_s": _process_cpu_s() - cpu0, "wall_s": time.time() - wall0}

    def add(self, rec: RequestRecord) -> None:
        self.records.append(rec)
        if rec.schedule_lag_s > LAG_WARNING_S and rec.sent_ts_s - self._last_lag_warning_s > WARN_EVERY_S:
            self._last_lag_warning_s = rec.sent_ts_s
            log.warning(
                "load generator is behind schedule: a request left %.3f s late; add users (-u) or processes",
                rec.schedule_lag_s,
            )

    def drain(self) -> list[dict[str, Any]]:
        """Records not yet sent to the master, as plain dicts in the master's time."""
        out = [r.to_dict() for r in self.records]
        self.records = []
        if self.clock_offset_s:
            for d in out:
                for key in ("scheduled_ts_s", "sent_ts_s", "end_ts_s"):
                    d[key] -= self.clock_offset_s
        return out

    def merge(self, payload: dict[str, Any]) -> None:
        self.records.extend(RequestRecord.from_dict(d) for d in payload.get("records", ()))

    # ---- the end of a test: master or single process only ----

    def finish(self, environment: Environment) -> Path | None:
        s = self.settings
        window_start = self.start_ts_s + s.warmup_s
        stop = self.stop_ts_s or max([time.time(), *(r.end_ts_s for r in self.records)])
        if self.end_ts_s is not None:
            stop = min(stop, self.end_ts_s)
        measured = [r for r in self.records if window_start <= r.scheduled_ts_s < stop]
        warmup = [r for r in self.records if r.scheduled_ts_s < window_start]
        after_stop = len(self.records) - len(measured) - len(warmup)
        slo = Slo(
            *(v / 1000 if v is not None else None for v in (s.slo_ttft_ms, s.slo_tpot_ms, s.slo_e2e_ms))
        )
        self.cpu.setdefault(self.worker_id, self.cpu_used())  # this process: "local" or "master"
        users = users_of(environment)
        summary = summarize(
            measured,
            window_start_s=window_start,
            window_end_s=stop,
            slo=slo,
            requested_rate_per_s=self._requested_rate(),
            due_slots=self._due_slots(window_start, stop),
            users=users,
            warmup_records=warmup,
            loadgen_processes=self.cpu,
            output_references=self.outputs.reference_counts() if self.outputs is not None else None,
            extra={
                "label": s.label,
                "warmup_requests": len(warmup),
                "after_stop_requests": after_stop,
                "workload": self.workload(environment, users),
                **self._server_metrics_summary(measured),
            },
        )
        summary["incomplete"] = summary["cuts"]  # the name before "cut" was an outcome; kept for readers
        if self.missing_workers:
            add_warning(
                summary,
                MISSING_WORKER_RECORDS,
                f"no final records from {len(self.missing_workers)} worker(s) "
                f"({', '.join(sorted(self.missing_workers))}): their last requests are missing from the run",
            )
        for warning in summary["warnings"]:
            log.warning(warning)
        path = self._target_dir()
        try:
            self._write_server_metrics(path)
            write_run(
                path, sorted(measured, key=lambda r: r.scheduled_ts_s), summary, self._metadata(environment)
            )
        except OSError as exc:
            log.error("cannot write the run folder %s: %s", path, exc)
            self.write_failed = True
            return None
        self.written_dirs.append(path)
        logging.getLogger("locust.stats_logger").info("%s\nrun folder: %s\n", console_table(summary), path)
        return path

    def _server_metrics_summary(self, measured: list[RequestRecord]) -> dict[str, Any]:
        """summary.json `server_metrics`: how the scrapes went, and the client's counts of the requests that
        records.csv leaves out (warm-up, after the stop), which the server's counters include."""
        if self.scraper is None:
            return {}
        inside = {id(r) for r in measured}
        outside = [r for r in self.records if id(r) not in inside]
        columns = (
            [r.outcome for r in outside],
            [r.outcome_detail for r in outside],
            [r.output_tokens for r in outside],
        )
        counts = client_counts(*columns)
        return {"server_metrics": {**self.scraper.describe(), "client_outside_window": counts}}

    def _write_server_metrics(self, path: Path) -> None:
        """server_metrics.csv before summary.json (whose presence means the folder is complete); a stale one
        from an earlier run in the same folder is removed."""
        target = path / SERVER_METRICS_FILE
        if self.scraper is not None and self.scraper.samples:
            write_server_metrics(target, self.scraper.samples)
        else:
            target.unlink(missing_ok=True)

    def _requested_rate(self) -> float | None:
        s = self.settings
        if s.arrival == "trace":
            return workloads.rate_per_s(s)
        return s.rate if s.open_loop else None

    def _due_slots(self, window_start: float, stop: float) -> int | None:
        s = self.settings
        if s.arrival == "trace":
            return workloads.due_slots(s, self.start_ts_s, window_start, stop)
        if not s.open_loop or not s.rate:
            return None
        return due_slots(
            s.arrival,  # type: ignore[arg-type]
            s.rate,
            self.start_ts_s,
            window_start,
            stop,
            seed=s.seed,
            shards=self.shards,
        )

    def prompt_length_method(self) -> str:
        """How prompt lengths were made: "tokenizer", "server_tokenize", "calibrated" or "words"."""
        return getattr(self.prompts, "length_method", "words")

    def workload(self, environment: Environment, users: int | None) -> dict[str, Any]:
        """The shape of the load, for comparing runs (summary.json "workload")."""
        s = self.settings
        classes = sorted(environment.user_classes, key=lambda u: u.__name__)
        streams = {bool(getattr(u, "stream", False)) for u in classes}
        shape = {
            "scenario": "+".join(str(getattr(u, "scenario", u.__name__)) for u in classes),
            "model": self.model,
            "stream": streams.pop() if len(streams) == 1 else None,
            "prompt_tokens_target": None if s.prompt_file or s.dataset or s.trace else s.prompt_tokens,
            "max_tokens": s.max_tokens,
            "ignore_eos": s.ignore_eos,
            "arrival": s.arrival,
            "rate_per_s": s.rate if s.open_loop else None,
            "users": users,
            "prompt_length_method": self.prompt_length_method(),
        }
        # what else shapes the load, present only when used (older runs compare unchanged)
        extra = {
            "turns": s.turns if any(getattr(u, "multi_turn", False) for u in classes) else None,
            "shared_prefixes": s.shared_prefixes or None,
            "shared_prefix_tokens": s.shared_prefix_tokens if s.shared_prefixes else None,
            "trace": Path(s.trace).name if s.trace else None,
            "dataset": Path(s.dataset).name if s.dataset else None,
            # --check-outputs: greedy requests on a few prompts, each sent in turn
            "check_outputs": len(self.outputs.prompts) if self.outputs is not None else None,
        }
        return {**shape, **{k: v for k, v in extra.items() if v is not None}}

    def _target_dir(self) -> Path:
        s = self.settings
        if s.run_dir:
            base = Path(s.run_dir)
        else:
            stamp = datetime.fromtimestamp(self.start_ts_s).strftime("%Y%m%d-%H%M%S")
            base = Path("results") / f"{stamp}-{s.label}"
        # A second test in the same process (web UI) must not overwrite the first one's folder.
        path, n = base, 1
        while path in self.written_dirs or (not s.run_dir and path.exists()):
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return path

    def _metadata(self, environment: Environment) -> dict[str, Any]:
        opts = environment.parsed_options
        return {
            "label": self.settings.label,
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "target_url": environment.host,
            "model": self.model,
            "server": self.server,
            "scenarios": sorted(u.__name__ for u in environment.user_classes),
            "load": {
                "arrival": self.settings.arrival,
                "rate_per_s": self.settings.rate,
                "users": getattr(opts, "num_users", None),
                "spawn_rate": getattr(opts, "spawn_rate", None),
                "run_time_s": getattr(opts, "run_time", None),
                "stop_timeout_s": environment.stop_timeout,
                "processes": getattr(opts, "processes", None),
                "workers": self.shards,  # load-generating processes (1 without --processes/--master)
            },
            "options": self.settings.public(),
            # --check-outputs: the reference requests sent before the clock, with their outcomes and texts
            "output_check": self.outputs.metadata() if self.outputs is not None else None,
            # every request sent besides the measured ones (probes, calibration, /tokenize, scrapes)
            "side_requests": meta.side_requests_section(side_requests.LEDGER.take()),
            "workers": self.workers,  # distributed: per worker its shard, clock offset and round trip
            "loadgen_cpu": self.cpu,
            # how stream chunks were timed (loadgen.receive_stamps): the kernel's stamp, or the read's return
            "arrival_stamps": "kernel" if receive_stamps.stamps_live() else "read",
            "started_ts_s": self.start_ts_s,
            "stopped_ts_s": self.stop_ts_s,
            "git": meta.git_info(str(Path(__file__).resolve().parent)),
            "versions": meta.tool_versions(),
            "machine": meta.machine_info(),
            "command": _scrubbed(sys.argv),
        }


def _process_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def users_of(environment: Environment) -> int | None:
    """The user count of the test (the web UI may set it), else the command line's."""
    target = getattr(environment.runner, "target_user_count", None)
    return target or getattr(environment.parsed_options, "num_users", None)
