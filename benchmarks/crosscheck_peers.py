"""Our load generator beside AIPerf and GuideLLM on GuideLLM's mock server, each against the wire.

    python -m benchmarks.crosscheck_peers --aiperf PATH --guidellm PATH [--duration-s 30] [--repeats 2]
        [--concurrency 8 1 32] [--tools ours aiperf guidellm] [--ours-before DIR] [--keep DIR]   (repo root)

One `guidellm mock-server` (TTFT 100 ms, ITL 10 ms, 64 output tokens), started with the project's launcher.
For each concurrency and repeat, every tool runs alone on it, closed loop, as many streams, for the same
seconds, with 32-token prompts and 64 output tokens; the order of the tools alternates between repeats
(as listed, then reversed), so each tool runs early and late. While a tool runs, the loopback's packet
stamps (benchmarks/wire_times.py, root only) give the same requests' TTFT and E2E as the wire saw them:
a tool's p50 minus the wire's p50 is its bias, whatever pace the mock kept on this shared machine. For
our own runs the records are also paired with the wire's requests, to say where the bias sits.
`--ours-before DIR` adds our load generator from another checkout (e.g. `git archive` of an older
commit: its loadgen/, loadtest/, runfolder/ and configkit/), imported from DIR. Prints every run, then
per tool and order the median of the repeats with their range. Asserts nothing; exit 2 when a peer's
executable or the tokenizer is missing.
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.wire_times import WireCapture, WireRequest
from orchestrate import processes
from runfolder import read_run

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / ".cache" / "models" / "tiny-llama"
TTFT_MS, ITL_MS, OUTPUT_TOKENS, PROMPT_TOKENS = 100, 10, 64, 32
MODEL = "mock"
PEER_EXTRA_S = 180  # a tool's start-up and report on top of its run, before it is given up on
# Locust with another checkout's packages: the project's editable install would win over sys.path.
BEFORE_BOOT = (
    "import sys; d = sys.argv.pop(1); sys.path.insert(0, d); "
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
    "from locust.main import main; sys.argv[0] = 'locust'; main()"
)


def mock_cmd(guidellm: str, port: int) -> list[str]:
    return [
        guidellm, "mock-server", "--host", "127.0.0.1", "--port", str(port), "--model", MODEL,
        "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--output-tokens", str(OUTPUT_TOKENS),
    ]  # fmt: skip


def guidellm_cmd(guidellm: str, url: str, users: int, seconds: int, out: Path, tok: Path) -> list[str]:
    return [
        guidellm, "run",
        "--backend", f"kind=openai_http,target={url},model={MODEL},request_format=/v1/chat/completions",
        "--profile", f"kind=concurrent,streams={users}",
        "--constraint", f"kind=max_duration,seconds={seconds}",
        "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={OUTPUT_TOKENS}",
        "--tokenizer", f"kind=huggingface_auto,model={tok}",
        "--output", f"kind=json,path={out}",
        "--disable-console-interactive",
    ]  # fmt: skip


def aiperf_cmd(aiperf: str, url: str, users: int, seconds: int, out: Path, tok: Path) -> list[str]:
    return [
        aiperf, "profile", "-m", MODEL, "--url", url, "--endpoint-type", "chat", "--streaming",
        "--tokenizer", str(tok), "--concurrency", str(users), "--benchmark-duration", str(seconds),
        "--synthetic-input-tokens-mean", str(PROMPT_TOKENS), "--output-tokens-mean", str(OUTPUT_TOKENS),
        "--extra-inputs", "ignore_eos:true", "--extra-inputs", f"max_tokens:{OUTPUT_TOKENS}",
        "--artifact-dir", str(out), "--ui-type", "none",
    ]  # fmt: skip


def ours_args(users: int, seconds: int, tok: Path) -> list[str]:
    return [
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--label", f"crosscheck-{users}",
        "--max-tokens", str(OUTPUT_TOKENS), "--prompt-tokens", str(PROMPT_TOKENS), "--tokenizer", str(tok),
        "ChatStreamUser",
    ]  # fmt: skip


def guidellm_figures(out: Path) -> dict[str, float]:
    metrics = json.loads(out.read_text())["benchmarks"][0]["metrics"]

    def p50(name: str) -> float:
        return metrics[name]["successful"]["percentiles"]["p50"]

    return {
        "requests": metrics["request_totals"]["successful"],
        "ttft_p50_ms": p50("time_to_first_token_ms"),
        "e2e_p50_ms": 1000 * p50("request_latency"),
    }


def aiperf_figures(out: Path) -> dict[str, float]:
    doc = json.loads((out / "profile_export_aiperf.json").read_text())
    return {
        "requests": doc["request_count"]["avg"],
        "ttft_p50_ms": doc["time_to_first_token"]["p50"],
        "e2e_p50_ms": doc["request_latency"]["p50"],
    }


def our_figures(run_dir: Path) -> dict[str, float]:
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "requests": s["successes"],
        "ttft_p50_ms": 1000 * s["ttft_s"]["p50"],
        "e2e_p50_ms": 1000 * s["e2e_s"]["p50"],
    }


class Runner:
    """Runs one tool once on the mock and returns its figures with the wire's."""

    def __init__(self, args: argparse.Namespace, url: str, port: int, work: Path) -> None:
        self.args, self.url, self.port, self.work = args, url, port, work
        self.tok = args.tokenizer.resolve()

    def run(self, tool: str, users: int, name: str) -> dict[str, float | str | int]:
        seconds = self.args.duration_s
        capture = WireCapture(self.port).start() if self.args.wire else None
        try:
            figures = self._run_tool(tool, users, seconds, self.work / f"{tool}-{name}")
        finally:
            wire = capture.stop() if capture is not None else []
        row: dict[str, float | str | int] = {"tool": tool, **figures}
        ended = [r for r in wire if r.ttft_s is not None and r.e2e_s is not None]
        if ended:
            row["wire_requests"] = len(ended)
            row["wire_ttft_p50_ms"] = 1000 * statistics.median(
                r.ttft_s for r in ended if r.ttft_s is not None
            )
            row["wire_e2e_p50_ms"] = 1000 * statistics.median(r.e2e_s for r in ended if r.e2e_s is not None)
            row["ttft_bias_ms"] = row["ttft_p50_ms"] - row["wire_ttft_p50_ms"]  # type: ignore[operator]
            row["e2e_bias_ms"] = row["e2e_p50_ms"] - row["wire_e2e_p50_ms"]  # type: ignore[operator]
            if tool.startswith("ours"):
                row.update(where_the_bias_sits(self.work / f"{tool}-{name}", ended))
        return row

    def _run_tool(self, tool: str, users: int, seconds: int, out: Path) -> dict[str, float]:
        log = out.with_suffix(".log")
        if tool in ("ours", "ours-before"):
            cmd = processes.locust_cmd(
                self.url, out, *ours_args(users, seconds, self.tok), *self.args.ours_arg
            )
            if tool == "ours-before":
                before = self.args.ours_before.resolve()
                cmd = [
                    sys.executable,
                    "-c",
                    BEFORE_BOOT,
                    str(before),
                    "-f",
                    str(before / "loadtest"),
                    *cmd[5:],
                ]
            done = processes.start_locust(cmd, log_file=log).wait(seconds + PEER_EXTRA_S)
            _check(done.returncode in (0, 1), tool, log)  # 1: a request failed, still a measurement
            return our_figures(out)
        if tool == "aiperf":
            cmd = aiperf_cmd(self.args.aiperf, self.url, users, seconds, out, self.tok)
        else:
            cmd = guidellm_cmd(
                self.args.guidellm, self.url, users, seconds, out.with_suffix(".json"), self.tok
            )
        with log.open("w") as sink:
            done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, timeout=seconds + PEER_EXTRA_S)
        _check(done.returncode == 0, tool, log)
        return aiperf_figures(out) if tool == "aiperf" else guidellm_figures(out.with_suffix(".json"))


def where_the_bias_sits(run_dir: Path, wire: list[WireRequest]) -> dict[str, float]:
    """Our records paired with the wire's requests by send time (wall clock, within 5 ms, one each):
    medians of the wire's POST - our send stamp, our first content - the wire's, our end - the wire's."""
    by_send = sorted(wire, key=lambda w: w.sent_ts_s)
    starts = [w.sent_ts_s for w in by_send]
    send, first, end = [], [], []
    for rec in read_run(run_dir).records:
        if rec.outcome != "success" or rec.ttft_s is None:
            continue
        i = bisect.bisect_left(starts, rec.sent_ts_s)
        near = [w for w in by_send[max(i - 1, 0) : i + 1] if abs(w.sent_ts_s - rec.sent_ts_s) < 0.005]
        if len(near) != 1:
            continue  # none, or two sends too close to tell apart
        w = near[0]
        send.append(w.sent_ts_s - rec.sent_ts_s)
        first.append(rec.sent_ts_s + rec.ttft_s - (w.sent_ts_s + (w.ttft_s or 0.0)))
        end.append(rec.sent_ts_s + rec.e2e_s - (w.sent_ts_s + (w.e2e_s or 0.0)))
    if not send:
        return {}
    return {
        "paired": len(send),
        "send_to_wire_p50_ms": 1000 * statistics.median(send),
        "first_content_late_p50_ms": 1000 * statistics.median(first),
        "end_late_p50_ms": 1000 * statistics.median(end),
    }


def _check(ok: bool, tool: str, log: Path) -> None:
    if not ok:
        sys.exit(f"{tool} failed; see {log}:\n{log.read_text()[-2000:]}")


def fmt_range(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}, {max(values):.1f}]"


def print_summary(users: int, rows: list[dict], tools: list[str]) -> None:
    print(
        f"\n{users} stream(s): median of the repeats [min, max], ms; bias = the tool's p50 - the wire's p50"
    )
    cols = ("ttft_p50_ms", "e2e_p50_ms", "ttft_bias_ms", "e2e_bias_ms")
    print(f"{'order':>10} {'tool':>12} {'n':>2}  " + "  ".join(f"{c:>22}" for c in cols))
    for order in ("forward", "reversed", "both"):
        for tool in tools:
            mine = [r for r in rows if r["tool"] == tool and order in ("both", r["order"])]
            if not mine:
                continue
            cells = [fmt_range([r[c] for r in mine]) if all(c in r for r in mine) else "-" for c in cols]
            print(f"{order:>10} {tool:>12} {len(mine):>2}  " + "  ".join(f"{c:>22}" for c in cells))
    paired = ("send_to_wire_p50_ms", "first_content_late_p50_ms", "end_late_p50_ms")
    for tool in tools:
        mine = [r for r in rows if r["tool"] == tool and all(c in r for c in paired)]
        if mine:
            cells = [f"{c} {fmt_range([r[c] for r in mine]).strip()}" for c in paired]
            print(f"{tool:>12}, paired with the wire ({len(mine)} runs): " + "; ".join(cells))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidellm", default="guidellm", help="the guidellm executable (default: on PATH)")
    parser.add_argument("--aiperf", default="aiperf", help="the aiperf executable (default: on PATH)")
    parser.add_argument("--duration-s", type=int, default=30, help="seconds per run, each tool (default: 30)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every tool per point (default: 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8], help="streams (default: 8)")
    parser.add_argument(
        "--tools", nargs="+", choices=("ours", "aiperf", "guidellm"), default=["ours", "aiperf", "guidellm"]
    )
    parser.add_argument("--ours-before", type=Path, help="also run our load generator from this checkout")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        help="one more option for our runs, e.g. --ours-arg=--stop-timeout=0",
    )
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER, help="tokenizer folder for every tool")
    parser.add_argument("--no-wire", dest="wire", action="store_false", help="skip the packet capture")
    parser.add_argument("--keep", type=Path, help="keep the runs, logs and results.json here")
    args = parser.parse_args(argv)
    for peer in ("guidellm", "aiperf"):
        found = shutil.which(getattr(args, peer))
        if found is None and (peer in args.tools or peer == "guidellm"):  # the mock is GuideLLM's
            print(f"{peer} not found: {getattr(args, peer)!r} (install it in its own venv)", file=sys.stderr)
            return 2
        setattr(args, peer, found)
    if not (args.tokenizer / "tokenizer.json").exists():
        print(
            f"no tokenizer at {args.tokenizer}: `python -m server.models build`, or --tokenizer",
            file=sys.stderr,
        )
        return 2
    tools = [*args.tools, *(["ours-before"] if args.ours_before else [])]
    with tempfile.TemporaryDirectory(prefix="crosscheck-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        port = processes.free_port()  # the mock (Sanic) turns --port 0 into 8000
        url = f"http://127.0.0.1:{port}"
        results = []
        with processes.serve(
            mock_cmd(args.guidellm, port), url=url, timeout_s=180, log_file=work / "mock.log"
        ):
            runner = Runner(args, url, port, work)
            for users in args.concurrency:
                rows = []
                for rep in range(args.repeats):
                    order = "forward" if rep % 2 == 0 else "reversed"
                    for position, tool in enumerate(tools if order == "forward" else tools[::-1]):
                        row = runner.run(tool, users, f"{users}-{rep}")
                        row.update(users=users, repeat=rep, order=order, position=position)
                        rows.append(row)
                        print(
                            json.dumps(
                                {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                            )
                        )
                        sys.stdout.flush()
                print_summary(users, rows, tools)
                results += rows
        (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
