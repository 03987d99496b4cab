"""How fast and how exact is the load generator itself?

    python benchmarks/loadgen_ceiling.py [--duration-s 8] [--no-reference]

1. Ceiling: Locust (`loadtest`, ChatStreamUser) against a FAKE server that streams instantly (the fault
   fixture's "instant" model: the whole reply pre-built, one write), with 1 Locust process and with
   `--processes 2`; small replies for requests/s, long ones for tokens/s. Client CPU seconds are shown: on
   this 2-core machine the fake server and the generator share the cores.
2. TTFT accuracy: the fake waits 200 ms before the first token; the client's TTFT minus 200 ms, and minus
   the delay the fake itself observed (arrival of the request to the write of the first token).
3. Reference (unless --no-reference): the reference server's token rate with the embedded model at a few
   concurrencies, and the ratio ceiling / reference best.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchcore import read_summary
from benchcore.launch import REPO, run_locust, serve

FAKE = REPO / "tests" / "loadtest_fixtures" / "fault_server.py"
TTFT_DELAY_S = 0.200


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


def fake_first_token_s(host: str) -> list[float]:
    with urllib.request.urlopen(host + "/fake/stats", timeout=5) as resp:
        return json.load(resp)["first_token_s"]


def reset_fake(host: str) -> None:
    urllib.request.urlopen(urllib.request.Request(host + "/fake/reset", data=b"", method="POST"), timeout=5)


def raw_socket_ttft_s(host: str, model: str, count: int) -> list[float]:
    """Baseline: TTFT seen by a minimal blocking-socket client (no gevent, no HTTP library, no JSON).

    The clock starts after connect, as on the harness's kept-alive connection, and stops when the first
    content chunk's bytes arrive.
    """
    hostname, port = host.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                       "stream": True}).encode()  # fmt: skip
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {hostname}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    out = []
    for _ in range(count):
        with socket.create_connection((hostname, int(port)), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.perf_counter()
            sock.sendall(head + body)
            seen = b""
            while b'"content":"t0 "' not in seen:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("fake server closed the stream before the first token")
                seen += chunk
            out.append(time.perf_counter() - start)
    return out


def ttft_accuracy(host: str, work: Path, duration: str) -> list[dict]:
    model = f"first_token_ms_{round(TTFT_DELAY_S * 1000)}"
    baseline = statistics.median(raw_socket_ttft_s(host, model, 20))
    rows = []
    for users in (1, 16):
        reset_fake(host)
        s, _ = load(
            host, work, f"ttft-{users}", "-u", str(users), "-r", str(users), "-t", duration,
            "--model", model, "--max-tokens", "8",
        )  # fmt: skip
        server_side = fake_first_token_s(host)
        ttft = s["ttft_s"]
        rows.append(
            {
                "users": users,
                "requests": s["requests"],
                "p50_minus_nominal_ms": (ttft["p50"] - TTFT_DELAY_S) * 1000,
                "p99_minus_nominal_ms": (ttft["p99"] - TTFT_DELAY_S) * 1000,
                "p50_minus_fake_observed_ms": (ttft["p50"] - statistics.median(server_side)) * 1000,
                "p50_minus_raw_socket_p50_ms": (ttft["p50"] - baseline) * 1000,
            }
        )
    return rows


def reference(work: Path) -> list[dict]:
    """Closed loop needs runs much longer than one request (16 users x 128 tokens is several seconds)."""
    cmd = [sys.executable, "-m", "server", "--config", "config/runtime.yaml", "--port", "0"]
    rows = []
    with serve(cmd, timeout_s=300) as host:
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
            print(f"\nTTFT accuracy, FAKE server with a {TTFT_DELAY_S * 1000:.0f} ms first-token delay (ms):")
            print(table(ttft_accuracy(fake, work, duration)), flush=True)
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
