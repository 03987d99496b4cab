"""Our load generator's TTFT/ITL/E2E beside GuideLLM's, against the same mock server with known delays.

    python benchmarks/crosscheck_guidellm.py [--guidellm PATH] [--duration-s 10] [--repeats 2]
        [--concurrency 8 1] [--target guidellm-mock delay-fixture] [--tokenizer .cache/models/tiny-llama]
        [--order simultaneous|interleaved]

One server per target, started once: GuideLLM's own `guidellm mock-server` (TTFT 100 ms, ITL 10 ms,
64 output tokens) and, with `--target delay-fixture`, our FAKE delay server
(tests/support/delay_server.py, same delays). On it, for each concurrency, GuideLLM
(`--profile kind=concurrent`) and Locust (`locust -f loadtest`, ChatStreamUser, closed loop, as many
users) run for the same seconds. By default the two run at the same time (`--order simultaneous`), so a
slow spell of this shared machine hits both alike (the mock's delays are timers: two clients at once do not
slow it); `--order interleaved` runs them one after the other, A B A B. Prints each tool's figures (median
over the repeats), then ours - GuideLLM's. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DELAY_FAKE = REPO / "tests" / "support" / "delay_server.py"
TOKENIZER = REPO / ".cache" / "models" / "tiny-llama"
TTFT_MS, ITL_MS, OUTPUT_TOKENS, PROMPT_TOKENS = 100, 10, 64, 64
MODEL = "tiny"
FIELDS = ("requests", "ttft_p50_ms", "ttft_p90_ms", "itl_p50_ms", "tpot_p50_ms", "e2e_p50_ms", "output_tok_s")


def free_port() -> int:
    """GuideLLM's mock server (Sanic) turns --port 0 into 8000, so a free port is picked here (tiny race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_models(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """The mock server needs >20 s to start on a busy machine: poll /v1/models until it lists a model."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}) before it was ready: {url}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                if json.load(resp).get("data"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit(f"server at {url} was not ready within {timeout_s:g} s")


@contextmanager
def server(cmd: list[str], log: Path, timeout_s: float) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_models(url, proc, timeout_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def target_cmd(target: str, guidellm: str) -> list[str]:
    if target == "guidellm-mock":
        return [
            guidellm, "mock-server", "--host", "127.0.0.1", "--model", MODEL, "--ttft-ms", str(TTFT_MS),
            "--itl-ms", str(ITL_MS), "--output-tokens", str(OUTPUT_TOKENS),
        ]  # fmt: skip
    return [sys.executable, str(DELAY_FAKE), "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS)]


def run_all(commands: list[tuple[list[str], Path]]) -> None:
    """Start every command, then wait for all of them (one at a time: a list of one)."""
    procs = []
    for cmd, log in commands:
        with log.open("w") as out:
            procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO), cmd, log))
    for proc, cmd, log in procs:
        returncode = proc.wait()
        if returncode not in (0, 1):  # locust exits 1 when a request failed: still a measurement
            sys.exit(f"{cmd[0]} failed ({returncode}); see {log}:\n{log.read_text()[-2000:]}")


def guidellm_cmd(guidellm: str, url: str, model: str, users: int, seconds: int, out: Path, tok: Path) -> list:
    return (
        [
            guidellm, "run",
            "--backend", f"kind=openai_http,target={url},model={model},request_format=/v1/chat/completions",
            "--profile", f"kind=concurrent,streams={users}",
            "--constraint", f"kind=max_duration,seconds={seconds}",
            "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={OUTPUT_TOKENS}",
            "--tokenizer", f"kind=huggingface_auto,model={tok}",
            "--output", f"kind=json,path={out}",
            "--disable-console-interactive",
        ]
    )  # fmt: skip


def guidellm_figures(out: Path) -> dict:
    metrics = json.loads(out.read_text())["benchmarks"][0]["metrics"]

    def pct(name: str, p: str) -> float:
        return metrics[name]["successful"]["percentiles"][p]

    return {
        "requests": metrics["request_totals"]["successful"],
        "ttft_p50_ms": pct("time_to_first_token_ms", "p50"),
        "ttft_p90_ms": pct("time_to_first_token_ms", "p90"),
        "itl_p50_ms": pct("inter_token_latency_ms", "p50"),
        "tpot_p50_ms": pct("time_per_output_token_ms", "p50"),
        "e2e_p50_ms": 1000 * pct("request_latency", "p50"),
        # GuideLLM's output tokens/s of successful requests over the benchmark (its JSON's mean)
        "output_tok_s": metrics["output_tokens_per_second"]["successful"]["mean"],
    }


def ours_cmd(url: str, users: int, seconds: int, run_dir: Path, tok: Path) -> list:
    return (
        [
            str(Path(sys.executable).with_name("locust")), "-f", "loadtest", "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "10",
            "--host", url, "--label", f"crosscheck-{users}", "--run-dir", str(run_dir),
            "--max-tokens", str(OUTPUT_TOKENS), "--prompt-tokens", str(PROMPT_TOKENS),
            "--tokenizer", str(tok), "ChatStreamUser",
        ]
    )  # fmt: skip


def our_figures(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "requests": s["successes"],
        "ttft_p50_ms": 1000 * s["ttft_s"]["p50"],
        "ttft_p90_ms": 1000 * s["ttft_s"]["p90"],
        # ours: gaps between content chunks; the mocks send one token per chunk, so it is per token
        "itl_p50_ms": 1000 * s["itl_s"]["p50"],
        "tpot_p50_ms": 1000 * s["tpot_s"]["p50"],
        "e2e_p50_ms": 1000 * s["e2e_s"]["p50"],
        "output_tok_s": s["output_tokens_per_s"],
    }


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in FIELDS}


def fmt(value: float) -> str:
    return f"{value:.1f}"


def print_table(target: str, users: int, order: str, ours: list[dict], theirs: list[dict]) -> None:
    a, b = median_row(ours), median_row(theirs)
    expected_e2e = TTFT_MS + (OUTPUT_TOKENS - 1) * ITL_MS
    print(
        f"\n{target}, {users} concurrent ({order}), median of {len(ours)} repeat(s); "
        f"configured: TTFT {TTFT_MS} ms, {OUTPUT_TOKENS} tokens at {ITL_MS} ms "
        f"(E2E at least {expected_e2e} ms)"
    )
    rows = [("ours", a), ("guidellm", b), ("ours - guidellm", {k: a[k] - b[k] for k in FIELDS})]
    widths = [max(len(k), 9) for k in FIELDS]
    print(f"{'tool':>16}  " + "  ".join(k.rjust(w) for k, w in zip(FIELDS, widths, strict=True)))
    for name, row in rows:
        cells = "  ".join(fmt(row[k]).rjust(w) for k, w in zip(FIELDS, widths, strict=True))
        print(f"{name:>16}  {cells}")
    for name, reps in (("ours", ours), ("guidellm", theirs)):
        each = ", ".join(f"{fmt(r['ttft_p50_ms'])}/{fmt(r['e2e_p50_ms'])}" for r in reps)
        print(f"{'':>16}  {name} per repeat, TTFT p50 / E2E p50 ms: {each}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidellm", default="guidellm", help="the guidellm executable (default: on PATH)")
    parser.add_argument("--duration-s", type=int, default=10, help="seconds per run, each tool (default: 10)")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs per point (default: 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 1], help="default: 8 1")
    parser.add_argument(
        "--target", nargs="+", choices=("guidellm-mock", "delay-fixture"), default=["guidellm-mock"]
    )
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER, help="tokenizer folder for both tools")
    parser.add_argument(
        "--order",
        choices=("simultaneous", "interleaved"),
        default="simultaneous",
        help="both tools at once (default), or one after the other",
    )
    parser.add_argument("--ready-timeout-s", type=float, default=180.0)
    parser.add_argument("--keep", type=Path, help="keep the run folders and logs here")
    args = parser.parse_args(argv)
    guidellm = shutil.which(args.guidellm)
    if guidellm is None:
        print(
            f"guidellm not found: {args.guidellm!r} (install it in its own venv, pass --guidellm PATH)",
            file=sys.stderr,
        )
        return 2
    tok = args.tokenizer.resolve()
    if not (tok / "tokenizer.json").exists():
        print(
            f"no tokenizer at {tok}: build it with `python -m server.models build` or pass --tokenizer",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for target in args.target:
            with server(target_cmd(target, guidellm), work / f"{target}.log", args.ready_timeout_s) as url:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as resp:
                    model = json.load(resp)["data"][0]["id"]
                for users in args.concurrency:
                    ours, theirs = [], []
                    for rep in range(args.repeats):
                        name = f"{target}-{users}-{rep}"
                        out, run_dir = work / f"g-{name}.json", work / f"ours-{name}"
                        commands = [
                            (
                                guidellm_cmd(guidellm, url, model, users, args.duration_s, out, tok),
                                out.with_suffix(".log"),
                            ),
                            (
                                ours_cmd(url, users, args.duration_s, run_dir, tok),
                                run_dir.with_suffix(".log"),
                            ),
                        ]
                        if args.order == "simultaneous":
                            run_all(commands)
                        else:
                            for command in commands:
                                run_all([command])
                        theirs.append(guidellm_figures(out))
                        ours.append(our_figures(run_dir))
                    print_table(target, users, args.order, ours, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
