"""How fast and how exact is the load generator itself?

    python benchmarks/loadgen_ceiling.py [--duration-s 8] [--no-reference]

1. Ceiling: Locust (`loadtest`, ChatStreamUser) against a FAKE server that streams instantly (the fault
   fixture's "instant" model: the whole reply pre-built, one write), with 1 Locust process and with
   `--processes 2`; small replies for requests/s, long ones for tokens/s. Client CPU seconds are shown: on
   this 2-core machine the fake server and the generator share the cores.
2. Bias: against the FAKE delay server (`tests/support/delay_server.py`, TTFT 100 ms, ITL
   10 ms, 64 one-token chunks), closed loop at 1, 8 and 32 users and open loop at 5, 10 and 20 req/s: the
   client's TTFT and E2E (from the send) minus what the fake observed for the same requests, the lag from
   the schedule, and the client's CPU per request.
3. Reference (unless --no-reference): the reference server's token rate with the embedded model at a few
   concurrencies, and the ratio ceiling / reference best.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from configkit import REPO_ROOT, RUNTIME_CONFIG
from orchestrate.processes import run_locust, running_server, serve
from runfolder import read_run, read_summary

FAKE = REPO_ROOT / "tests" / "support" / "fault_server.py"
DELAY_FAKE = REPO_ROOT / "tests" / "support" / "delay_server.py"
TTFT_MS, ITL_MS, BIAS_TOKENS = 100, 10, 64


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load(host: str, work: Path, name: str, *args: str) -> tuple[dict, float]:
    """One headless run; returns its summary and the CPU seconds Locust used (all its processes)."""
    before = children_cpu_s()
    proc = run_locust(host, work / name, "--stop-timeout", "10", *args)
    if proc.returncode not in (0, 1):
        sys.exit(f"locust failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return read_summary(work / name), children_cpu_s() - before


def ceiling(host: str, work: Path, duration: str) -> list[dict]:
    rows = []
    for label, max_tokens, users in (
        ("short replies (8 tokens)", 8, 32),
        ("long replies (512 tokens)", 512, 32),
    ):
        for processes in (1, 2):
            extra = ["--processes", str(processes)] if processes > 1 else []
            s, cpu = load(
                host, work, f"ceiling-{max_tokens}-{processes}",
                "-u", str(users), "-r", str(users), "-t", duration,
                "--model", "instant", "--max-tokens", str(max_tokens), *extra,
            )  # fmt: skip
            assert s["success_rate"] == 1.0, s["outcome_details"]
            rows.append(
                {
                    "workload": label,
                    "processes": processes,
                    "requests_per_s": s["requests_per_s"],
                    "output_tokens_per_s": s["output_tokens_per_s"],
                    "client_cpu_s_per_s": cpu / s["duration_s"],
                }
            )
    return rows


def reset_fake(host: str) -> None:
    urllib.request.urlopen(urllib.request.Request(host + "/fake/reset", data=b"", method="POST"), timeout=5)


def fake_timings(host: str) -> list[dict]:
    with urllib.request.urlopen(host + "/fake/stats", timeout=5) as resp:
        return json.load(resp)["timings"]


# (arrival, users, rate): closed loop at 1, 8 and 32 users; open loop (constant and Poisson) up to 20 req/s.
BIAS_POINTS = (
    ("closed", 1, None),
    ("closed", 8, None),
    ("closed", 32, None),
    ("constant", 32, 5.0),
    ("constant", 32, 10.0),
    ("constant", 32, 20.0),
    ("poisson", 32, 20.0),
)


def _ms(value: float) -> float:
    return 1000 * value


def bias(host: str, work: Path, duration: str, max_tokens: int) -> list[dict]:
    """Client TTFT/E2E (from the send: the schedule lag taken out) minus what the FAKE observed.

    The FAKE stamps each request when its bytes arrive and records when it wrote the first and the last
    token, so the difference of the means over the same requests is the client's own bias (plus the
    loopback); the lag from the schedule is reported on its own.
    """
    rows = []
    for arrival, users, rate in BIAS_POINTS:
        reset_fake(host)
        name = f"bias-{arrival}-{users}-{rate or 0:g}"
        extra = ["--arrival", arrival, "--rate", str(rate)] if rate else []
        s, _ = load(
            host, work, name, "-u", str(users), "-r", str(users), "-t", duration,
            "--max-tokens", str(max_tokens), *extra,
        )  # fmt: skip
        ok = [r for r in read_run(work / name).records if r.outcome == "success"]
        served = fake_timings(host)
        ttft = [(r.ttft_s or 0.0) - r.schedule_lag_s for r in ok]  # a streamed success has its TTFT
        e2e = [r.e2e_s - r.schedule_lag_s for r in ok]
        lag = [r.schedule_lag_s for r in ok]
        fake_ttft = [t["ttft_s"] for t in served]
        fake_e2e = [t["e2e_s"] for t in served]
        rows.append(
            {
                "load": f"{users} users" if arrival == "closed" else f"{arrival} {rate:g}/s",
                "requests": len(ok),
                "served": len(served),
                "ttft_bias_mean_ms": _ms(statistics.mean(ttft) - statistics.mean(fake_ttft)),
                "ttft_bias_p50_ms": _ms(statistics.median(ttft) - statistics.median(fake_ttft)),
                "e2e_bias_mean_ms": _ms(statistics.mean(e2e) - statistics.mean(fake_e2e)),
                "e2e_bias_p50_ms": _ms(statistics.median(e2e) - statistics.median(fake_e2e)),
                "ttfb_p50_ms": _ms(statistics.median((r.ttfb_s or 0.0) - r.schedule_lag_s for r in ok)),
                "lag_p50_ms": _ms(statistics.median(lag)),
                "lag_p99_ms": _ms(s["schedule_lag_s"]["p99"] or 0.0),
                "achieved_per_s": s["attempted_requests_per_s"],
                "cpu_ms_per_req": (s.get("loadgen") or {}).get("cpu_ms_per_request") or 0.0,
            }
        )
    return rows


def reference(work: Path) -> list[dict]:
    """Closed loop needs runs much longer than one request (16 users x 128 tokens is several seconds)."""
    rows = []
    with running_server(RUNTIME_CONFIG, ready_timeout_s=300) as host:
        for users in (4, 8, 16):
            s, _ = load(
                host, work, f"reference-{users}", "-u", str(users), "-r", str(users), "-t", "20s",
                "--warmup-s", "5", "--max-tokens", "128", "--ignore-eos", "--prompt-tokens", "32",
                "--stop-timeout", "60",
            )  # fmt: skip
            rows.append(
                {
                    "users": users,
                    "requests": s["requests"],
                    "success_rate": s["success_rate"],
                    "output_tokens_per_s": s["output_tokens_per_s"],
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=int, default=8, help="seconds per Locust run (default: 8)")
    parser.add_argument("--no-reference", action="store_true", help="skip measuring the reference server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    duration = f"{args.duration_s}s"
    with tempfile.TemporaryDirectory(prefix="loadgen-ceiling-") as tmp:
        work = Path(tmp)
        with serve([sys.executable, str(FAKE), "--port", "0"]) as fake:
            ceiling_rows = ceiling(fake, work, duration)
            print("Load generator ceiling against the instant FAKE server (ChatStreamUser, 32 users):")
            print(table(ceiling_rows), flush=True)
        delay_cmd = [sys.executable, str(DELAY_FAKE), "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS)]
        with serve([*delay_cmd, "--port", "0"]) as fake:
            print(
                f"\nBias against the FAKE delay server (TTFT {TTFT_MS} ms, ITL {ITL_MS} ms, {BIAS_TOKENS} "
                "tokens, one per chunk): client minus what the fake observed, ms; lag from the schedule; "
                "client CPU per request (all Locust processes)"
            )
            print(table(bias(fake, work, duration, BIAS_TOKENS)), flush=True)
        if not args.no_reference:
            ref_rows = reference(work)
            print("\nReference server (embedded model, 128 tokens, ignore_eos), output tokens/s:")
            print(table(ref_rows))
            best_ref = max(r["output_tokens_per_s"] or 0 for r in ref_rows)
            best_gen = max(r["output_tokens_per_s"] for r in ceiling_rows)
            print(
                f"\nceiling / reference best = {best_gen:.0f} / {best_ref:.0f} = {best_gen / best_ref:.0f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
