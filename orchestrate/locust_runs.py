"""The pieces every campaign run uses: the embedded model's build, one headless Locust run with progress
lines, warm-up requests, the server's model id, and waiting until a server has nothing in flight."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from configkit import REPO_ROOT
from orchestrate import campaign as camp
from orchestrate.processes import run_locust
from reports.errors import RunFailed
from runfolder.folder import SUMMARY_FILE

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
_AGGREGATED = re.compile(r"Aggregated\s+(\d+)\s+(\d+)\(")
PROGRESS_EVERY_S = 10.0
DRAIN_EXTRA_S = 30.0  # beyond the request timeout, waiting for a server to finish what it holds
EXTRA_WALL_S = 90.0  # beyond run time and stop timeout, before a hung Locust is killed


def build_model(progress: Progress) -> None:
    progress("checking the embedded model (built once, offline)")
    result = subprocess.run(
        [sys.executable, "-m", "server.models", "build"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RunFailed(f"building the embedded model failed:\n{result.stderr[-2000:]}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_campaign_load(
    load: camp.LoadSpec, host: str, run_dir: Path, label: str, log_path: Path, progress: Progress
) -> None:
    """One headless Locust run writing `run_dir`; a progress line every PROGRESS_EVERY_S from its stats."""
    seen = {"requests": 0, "failures": 0}
    total_s = load.warmup_s + load.duration_s
    started = time.monotonic()

    def count(line: str) -> None:
        if match := _AGGREGATED.search(line):
            seen["requests"], seen["failures"] = int(match.group(1)), int(match.group(2))

    def tick() -> None:
        elapsed = time.monotonic() - started
        phase = "warming up" if elapsed < load.warmup_s else "measuring"
        if elapsed > total_s:
            phase = "letting in-flight requests finish"
        progress(
            f"  {label}: {min(elapsed, total_s):.0f}/{total_s:.0f} s {phase}; "
            f"{seen['requests']} requests, {seen['failures']} not successful so far"
        )

    try:
        # Not --only-summary: the periodic stats lines are where the progress counts come from.
        proc = run_locust(
            host,
            run_dir,
            *load.locust_args(label),
            only_summary=False,
            timeout_s=total_s + load.request_timeout_s + EXTRA_WALL_S,
            log_file=log_path,
            on_line=count,
            on_tick=tick,
            tick_s=PROGRESS_EVERY_S,
        )
    except subprocess.TimeoutExpired:
        raise RunFailed(f"Locust did not finish in time; log: {log_path}") from None
    # Locust exits 1 whenever a request failed, which is the point of the v1.1.1 run: judge by the folder.
    if not (run_dir / SUMMARY_FILE).is_file():
        raise RunFailed(
            f"Locust wrote no run folder (exit code {proc.returncode}); log {log_path}:\n{_tail(log_path)}"
        )


def active_requests(url: str) -> int | None:
    """Requests in flight on our server (GET /health), None when the server does not say."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, dict):
        return None
    return sum(int(m.get("active_requests") or 0) for m in models.values() if isinstance(m, dict))


def drain(url: str, deadline_s: float) -> None:
    """Wait until the server has nothing in flight (the last run's abandoned requests are cancelled), so
    that no run starts on another's backlog. Bounded; servers without our /health are not waited for."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        active = active_requests(url)
        if not active:
            return
        time.sleep(0.2)
    log.warning("%s still had requests in flight after %.0f s", url, deadline_s)


WARM_UP_TIMEOUT_S = 300.0


def listed_model(url: str) -> str | None:
    """The first model id GET /v1/models lists, else None: then requests omit `model`, as the load
    generator's do (mlx_lm.server answers 200 with an empty body when no Hugging Face cache folder exists,
    and serves its one --model to requests without an id)."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
            return str(json.loads(response.read())["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.info("%s/v1/models lists no model (%s): requests omit 'model'", url, exc)
        return None


def warm_up(url: str, model: str | None, max_tokens: int) -> float | None:
    """Two requests of the campaign's reply length before anything is measured (a fresh server's first
    replies compile kernels); returns the second one's duration, a first guess at the single-stream E2E
    that sizes the probe's first step. Bounded by WARM_UP_TIMEOUT_S; a failure is left to the probe."""
    try:
        body = {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": max_tokens}
        if model := model or listed_model(url):
            body["model"] = model
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        elapsed_s = None
        for _ in range(2):
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=WARM_UP_TIMEOUT_S) as response:
                response.read()
            elapsed_s = time.monotonic() - started
        return elapsed_s
    except (OSError, ValueError, KeyError, IndexError) as exc:
        log.warning("warm-up request to %s failed: %s", url, exc)
        return None


def make_progress() -> Progress:
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", flush=True)

    return progress
