"""Per-process state of a load test: settings, schedule, records; and turning records into a run folder."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchcore import metadata as meta
from benchcore.arrivals import ArrivalSchedule
from benchcore.loadgen.options import LoadSettings
from benchcore.prompts import FilePrompts, SyntheticPrompts
from benchcore.records import RequestRecord
from benchcore.rundir import write_run
from benchcore.summary import Slo, summarize

log = logging.getLogger(__name__)

LAG_WARNING_S = 0.1  # warn (at most every WARN_EVERY_S) when a request leaves this late
WARN_EVERY_S = 10.0


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
    model: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    shards: int = 1
    shard: int = 0
    records: list[RequestRecord] = field(default_factory=list)
    incomplete: int = 0
    schedule: ArrivalSchedule | None = None
    prompts: SyntheticPrompts | FilePrompts | None = None
    user_ids: itertools.count = field(default_factory=itertools.count)
    written_dirs: list[Path] = field(default_factory=list)
    write_failed: bool = False
    _last_lag_warning_s: float = 0.0

    def begin(self, start_ts_s: float) -> None:
        """A new test: clear the records, start the arrival schedule at the run's start time."""
        s = self.settings
        self.start_ts_s, self.stop_ts_s = start_ts_s, None
        self.records, self.incomplete = [], 0
        self.prompts = load_prompts(s)
        self.schedule = None
        if s.open_loop:
            self.schedule = ArrivalSchedule(
                s.arrival,  # type: ignore[arg-type]
                s.rate or 0.0,
                start_ts_s,
                seed=s.seed,
                shard=self.shard % self.shards,
                shards=self.shards,
            )

    def add(self, rec: RequestRecord) -> None:
        self.records.append(rec)
        if rec.schedule_lag_s > LAG_WARNING_S and rec.sent_ts_s - self._last_lag_warning_s > WARN_EVERY_S:
            self._last_lag_warning_s = rec.sent_ts_s
            log.warning(
                "load generator is behind schedule: a request left %.3f s late; add users (-u) or processes",
                rec.schedule_lag_s,
            )

    def drain(self) -> list[dict[str, Any]]:
        """Records not yet sent to the master, as plain dicts (what Locust's messages carry)."""
        out = [r.to_dict() for r in self.records]
        self.records = []
        return out

    def merge(self, payload: dict[str, Any]) -> None:
        self.records.extend(RequestRecord.from_dict(d) for d in payload.get("records", ()))
        self.incomplete += int(payload.get("incomplete", 0))

    # ---- the end of a test: master or single process only ----

    def finish(self, environment) -> Path | None:
        s = self.settings
        window_start = self.start_ts_s + s.warmup_s
        measured = [r for r in self.records if r.scheduled_ts_s >= window_start]
        stop = self.stop_ts_s or time.time()
        window_end = max([stop, *(r.end_ts_s for r in measured)])
        slo = Slo(
            *(v / 1000 if v is not None else None for v in (s.slo_ttft_ms, s.slo_tpot_ms, s.slo_e2e_ms))
        )
        summary = summarize(
            measured,
            window_start_s=window_start,
            window_end_s=window_end,
            slo=slo,
            requested_rate_per_s=s.rate if s.open_loop else None,
            extra={"label": s.label, "warmup_requests": len(self.records) - len(measured)},
        )
        summary["incomplete"] = self.incomplete
        if self.incomplete:
            hint = ""
            if (environment.stop_timeout or 0) < s.request_timeout_s:
                hint = "; give --stop-timeout at least --request-timeout-s to let them finish"
            summary["warnings"].append(
                f"{self.incomplete} request(s) were cut by the end of the test and are not counted{hint}"
            )
        for warning in summary["warnings"]:
            log.warning(warning)
        path = self._target_dir()
        try:
            write_run(
                path, sorted(measured, key=lambda r: r.scheduled_ts_s), summary, self._metadata(environment)
            )
        except OSError as exc:
            log.error("cannot write the run folder %s: %s", path, exc)
            self.write_failed = True
            return None
        self.written_dirs.append(path)
        log.info(
            "run folder %s: %d requests, success %.1f%%, %.1f output tok/s",
            path,
            summary["requests"],
            100 * (summary["success_rate"] or 0),
            summary["output_tokens_per_s"] or 0,
        )
        return path

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

    def _metadata(self, environment) -> dict[str, Any]:
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
            "started_ts_s": self.start_ts_s,
            "stopped_ts_s": self.stop_ts_s,
            "git": meta.git_info(str(Path(__file__).resolve().parent)),
            "versions": meta.tool_versions(),
            "machine": meta.machine_info(),
            "command": _scrubbed(sys.argv),
        }
