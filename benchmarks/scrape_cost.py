"""What scraping /metrics costs our server: CPU seconds of its processes, idle against scraped.

    python benchmarks/scrape_cost.py [--seconds 30] [--intervals 1 0.1]

Starts the reference server (config/runtime.yaml, the embedded model), sends it two requests (so that the
page holds every series a run's scrapes see: outcomes, latency histograms) and measures the CPU time (user +
system) of its whole process tree (HTTP process and model worker) over phases of the same wall time: idle,
then scraped at each interval the way the load generator scrapes (loadgen/server_scrape.py: one GET, the page
parsed), then idle again. Prints per phase the CPU as a share of one core, and per scraping phase the extra
over idle, per scrape and as a share of a core. CPU time, not wall time: a busy machine slows the scrapes
but hardly changes what each costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import psutil
import requests

from configkit import RUNTIME_CONFIG
from loadgen.server_scrape import Scraper
from orchestrate.processes import running_server


def tree_cpu_s(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def phase(root: psutil.Process, seconds: float, scraper: Scraper | None) -> dict[str, float]:
    """CPU seconds of the server over `seconds` of wall time, scraped on a fixed grid when given a scraper."""
    cpu0, start = tree_cpu_s(root), time.monotonic()
    scrapes = 0
    due = start
    while time.monotonic() - start < seconds:
        if scraper is not None:
            scraper.scrape()
            scrapes += 1
            due += scraper.interval_s
        else:
            due += 1.0
        time.sleep(max(due - time.monotonic(), 0.0))
    wall = time.monotonic() - start
    return {"wall_s": wall, "cpu_s": tree_cpu_s(root) - cpu0, "scrapes": scrapes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time of each phase (default 30)")
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 0.1], help="scrape intervals (s)")
    args = parser.parse_args(argv)
    launched = running_server(RUNTIME_CONFIG)
    with launched as url:
        server = psutil.Process(
            launched.process.pid
        )  # `python -m server`: the HTTP process, parent of the worker
        _fill_page(url)
        time.sleep(5)  # let start-up work (model load, first compiles) finish before the idle phase
        results = {"idle": phase(server, args.seconds, None)}
        for interval in args.intervals:
            scraper = Scraper(f"{url}/metrics", interval_s=interval)
            assert scraper.start(), scraper.note
            results[f"every_{interval:g}_s"] = phase(server, args.seconds, scraper)
        results["idle_again"] = phase(server, args.seconds, None)
    idle_share = (results["idle"]["cpu_s"] + results["idle_again"]["cpu_s"]) / (
        results["idle"]["wall_s"] + results["idle_again"]["wall_s"]
    )
    for name, r in results.items():
        r["share_of_core"] = r["cpu_s"] / r["wall_s"]
        if r["scrapes"]:
            r["extra_share_of_core"] = r["share_of_core"] - idle_share
            r["extra_cpu_ms_per_scrape"] = 1000 * (r["cpu_s"] - idle_share * r["wall_s"]) / r["scrapes"]
        print(f"{name:>12}: " + ", ".join(f"{k} {v:.4g}" for k, v in r.items()))
    print(json.dumps(results))
    return 0


def _fill_page(url: str) -> None:
    """One request of each kind, so that every labelled series (outcomes, histograms) is on the page: the
    page a scrape reads during a run, not a fresh server's shorter one."""
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    for stream in (False, True):
        requests.post(
            f"{url}/v1/chat/completions", json={**body, "stream": stream}, timeout=60
        ).raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
