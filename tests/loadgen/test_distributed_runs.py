"""Distributed runs (a master and worker processes) recording exactly what a counting FAKE served, a
worker lost or joining late; the web UI tab; a server that saturates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrate.processes import LocustProcess, locust_cmd, locust_worker_cmd, start_locust
from runfolder import read_run
from tests.loadgen.run_checks import assert_summary_matches_records, ran
from tests.support.browser import dump_dom, needs_browser, require_browser
from tests.support.helpers import (
    free_port,
    get_json,
    post,
    run_locust_with_stats,
    wait_for,
)


def start_workers(master_port: int, count: int) -> list[LocustProcess]:
    return [start_locust(locust_worker_cmd(master_port)) for _ in range(count)]


def stop_all(procs: list[LocustProcess]) -> None:
    for p in procs:
        p.stop()


def run_master(url: str, run_dir: Path, master_port: int, *args: str) -> LocustProcess:
    stats = str(run_dir.parent / f"{run_dir.name}-locust")
    cmd = locust_cmd(url, run_dir, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                     str(master_port), "--json-file", stats, *args)  # fmt: skip
    return start_locust(cmd)


def distributed_run(url: str, run_dir: Path, workers: int, *args: str, meanwhile=None):
    """A master and `workers` worker processes against the fake at `url` (its counters reset first);
    `meanwhile(started, master_port)` runs while the master does (it may kill workers or start more into
    `started`). Every process is stopped at the end; returns the master's CompletedProcess."""
    post(url + "/fake/reset")
    port = free_port()
    master = run_master(url, run_dir, port, *args)
    started = start_workers(port, workers)
    try:
        if meanwhile is not None:
            meanwhile(started, port)
        return master.wait(120)
    finally:
        stop_all([master, *started])


@pytest.mark.slow
def test_master_and_two_worker_processes_record_exactly_what_the_fake_served(fake_url, tmp_path):
    run_dir = tmp_path / "dist"
    done = distributed_run(fake_url, run_dir, 2, "--expect-workers", "2", "-u", "6", "-r", "6", "-t", "4s",
                           "--stop-timeout", "5", "--arrival", "constant", "--rate", "20",
                           "--model", "token_ms_5", "--max-tokens", "8")  # fmt: skip
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err[-4000:]
    s = assert_summary_matches_records(run_dir)
    run = read_run(run_dir)
    served = get_json(fake_url + "/fake/stats")
    # every request the fake received is a record (measured, warm-up or after the stop: none here)
    assert s["requests"] + s["warmup_requests"] + s["after_stop_requests"] == served["received"]["token_ms_5"]
    assert s["successes"] == served["completed"]["token_ms_5"] and s["success_rate"] == 1.0
    assert {r.worker_id for r in run.records} == {"w0", "w1"}
    scheduled = [r.scheduled_ts_s for r in run.records]
    assert len(set(scheduled)) == len(scheduled)  # no slot sent twice: each worker held its own shard
    assert s["arrival"]["due_slots"] == s["arrival"]["sent"] == s["requests"]
    workers_meta = run.metadata["workers"]
    assert sorted(w["shard"] for w in workers_meta.values()) == [0, 1]
    for w in workers_meta.values():
        # one host: the true offset is 0, and an NTP-style estimate is off by at most half the round trip
        assert abs(w["clock_offset_s"]) <= w["rtt_s"] / 2 + 1e-6
    assert set(s["loadgen"]["processes"]) == {"master", "w0", "w1"}
    assert "Serving Benchmark Result" in out + err


@pytest.mark.slow
def test_a_worker_whose_final_records_never_arrive_is_a_warning(fake_url, tmp_path):
    run_dir = tmp_path / "lost"

    def lose_one(started: list[LocustProcess], _port: int) -> None:
        wait_for(lambda: get_json(fake_url + "/fake/stats")["received"].get("token_ms_5", 0) >= 10, 60)
        started[1].kill()  # no final batch from this one

    done = distributed_run(fake_url, run_dir, 2, "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "4s",
                           "--stop-timeout", "1", "--model", "token_ms_5", "--max-tokens", "8",
                           meanwhile=lose_one)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-4000:]
    s = read_run(run_dir).summary
    assert "missing_worker_records" in s["warning_codes"]
    assert any("no final records from 1 worker" in w for w in s["warnings"])


@pytest.mark.slow
def test_a_late_joiner_gets_no_share_while_every_shard_is_held(fake_url, tmp_path):
    run_dir = tmp_path / "late"

    def join_late(started: list[LocustProcess], port: int) -> None:
        wait_for(lambda: get_json(fake_url + "/fake/stats")["received"].get("token_ms_5", 0) >= 5, 60)
        started.extend(start_workers(port, 1))

    done = distributed_run(fake_url, run_dir, 1, "--expect-workers", "1", "-u", "8", "-r", "8", "-t", "5s",
                           "--stop-timeout", "5", "--arrival", "constant", "--rate", "10",
                           "--model", "token_ms_5", "--max-tokens", "8", meanwhile=join_late)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    run = read_run(run_dir)
    scheduled = [r.scheduled_ts_s for r in run.records]
    assert len(set(scheduled)) == len(scheduled)  # the late joiner did not replay the first worker's slots
    # a joiner that never got its config before the end has no shard either
    shards = {name: w.get("shard") for name, w in run.metadata["workers"].items()}
    assert shards.get("w0") == 0
    if "w1" in shards:  # it joined while the test ran
        assert shards["w1"] is None and all(r.worker_id == "w0" for r in run.records)


def dom_cells(dom: str) -> dict[str, str]:
    """Metric -> value of the LLM tab's table."""
    return dict(re.findall(r"<td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td>", dom))


@pytest.mark.slow
@needs_browser  # CI (.ci/run) requires it
def test_web_ui_tab_shows_live_llm_metrics(fake_url, tmp_path):
    require_browser()
    port = free_port()
    run_dir = tmp_path / "webui"
    cmd = locust_cmd(fake_url, run_dir, "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart",
                     "-u", "2", "-r", "2", "--model", "token_ms_5", "--max-tokens", "8",
                     headless=False)  # fmt: skip
    ui = f"http://127.0.0.1:{port}"
    with start_locust(cmd):
        wait_for(lambda: _llm_requests(ui) >= 5, 60)
        cells = dom_cells(dump_dom(f"{ui}/?tab=llm", tmp_path))
        after = get_json(f"{ui}/llm/stats")
        post(f"{ui}/stop")
        wait_for(lambda: (run_dir / "summary.json").exists(), 60)
    assert {"TTFT p50 (ms)", "TTFT p99 (ms)", "Output tok/s (since start)", "Successful requests",
            "Cut by the end of the run"} <= set(cells), cells  # fmt: skip
    assert 0 < float(cells["TTFT p50 (ms)"]) <= float(cells["TTFT p99 (ms)"])
    assert float(cells["Output tok/s (since start)"]) > 0
    shown = int(cells["Successful requests"].split()[0])
    assert 0 < shown <= after["outcomes"]["success"] <= read_run(run_dir).summary["successes"]
    assert cells["Failed requests"] == "0 (0.0 %)"


def _llm_requests(ui: str) -> int:
    try:
        return get_json(f"{ui}/llm/stats")["requests"]
    except OSError:
        return 0  # the web UI is not up yet


@pytest.mark.slow
def test_a_server_that_saturates_is_named_as_such(fake_url, tmp_path):
    # The fake serves one request at a time, 100 ms each (10/s at most); 20/s are asked with 4 users.
    run_dir = tmp_path / "saturated"
    proc = run_locust_with_stats(fake_url, run_dir, "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "5",
                      "--arrival", "constant", "--rate", "20", "--model", "serial_ms_100",
                      "--max-tokens", "4")  # fmt: skip
    ran(proc, 0)
    s = assert_summary_matches_records(run_dir)
    assert s["arrival"]["behind"] and s["arrival"]["limit"] == "server", s["arrival"]
    assert "server_saturated" in s["warning_codes"] and "generator_behind" not in s["warning_codes"]
    assert any("the server is saturated: all 4 users were waiting on replies" in w for w in s["warnings"])
    assert s["arrival"]["due_slots"] > s["arrival"]["sent"]
