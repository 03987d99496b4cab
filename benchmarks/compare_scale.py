"""`python benchmarks/compare_scale.py`: time `python -m reports.compare` over 1,000,000 request records.

Writes synthetic run folders in the run-folder format (2 labels x 2 repeats, 250,000 records each; every
successful record carries 16 chunk gaps, as a streamed reply does) once under results/, then times the whole
compare command in a fresh process: reading, tables, plots and the HTML report. Goal: under 10 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from configkit import REPO_ROOT
from runfolder.folder import RECORDS_FILE, read_records, write_run
from runfolder.records import FIELD_NAMES
from runfolder.summary import SCHEMA_VERSION

T0 = 1_700_000_000.0
GAPS_PER_RECORD = 16


def synthetic_records(
    n: int, seed: int, duration_s: float, slow: float, gaps: int = GAPS_PER_RECORD
) -> pd.DataFrame:
    """Records like a mixed-outcome streaming run; `slow` scales the latencies of this label."""
    rng = np.random.default_rng(seed)
    outcome = rng.choice(["success", "rejected", "timeout", "error"], size=n, p=[0.85, 0.07, 0.06, 0.02])
    ok = outcome == "success"
    scheduled = T0 + np.sort(rng.uniform(0, duration_s, n))
    ttft = rng.lognormal(np.log(0.05 * slow), 0.4, n)
    out_tokens = rng.integers(16, 129, n)
    tpot = rng.lognormal(np.log(0.01 * slow), 0.2, n)
    e2e = np.where(ok, ttft + tpot * (out_tokens - 1), rng.uniform(0.001, 2.0, n))
    # A pool of gap lists keeps generation fast; the reader still has to scan every byte of them.
    pool = np.array(
        [
            json.dumps(np.round(rng.lognormal(np.log(0.01), 0.3, gaps), 6).tolist(), separators=(",", ":"))
            for _ in range(997)
        ]
    )
    status = pd.Series(outcome).map({"success": 200, "rejected": 429, "timeout": 503, "error": 500})
    frame = pd.DataFrame(
        {
            "scenario": "chat_stream",
            "stream": True,
            "scheduled_ts_s": scheduled.round(6),
            "sent_ts_s": scheduled.round(6),
            "end_ts_s": (scheduled + e2e).round(6),
            "schedule_lag_s": 0.0,
            "e2e_s": e2e.round(6),
            "outcome": outcome,
            "outcome_detail": pd.Series(outcome).map(
                {"success": "ok", "rejected": "http_429", "timeout": "queue_timeout", "error": "http_500"}
            ),
            "ttft_s": np.where(ok, ttft.round(6), np.nan),
            "tpot_s": np.where(ok, tpot.round(6), np.nan),
            "itl_s": np.where(ok, pool[rng.integers(0, pool.size, n)], "[]"),
            "prompt_tokens": 64,
            "prompt_tokens_target": 64,
            "max_tokens": 128,
            "output_tokens": pd.Series(out_tokens, dtype="Int64").where(ok),
            "output_tokens_counted": pd.Series(out_tokens, dtype="Int64").where(ok),
            "usage_source": np.where(ok, "server", "none"),
            "finish_reason": np.where(ok, "length", ""),
            "http_status": status,
            "error_code": "",
            "error_message": "",
            "response_bytes": 1000,
            "worker_id": "local",
            "user_id": rng.integers(0, 64, n),
        }
    )
    return frame[list(FIELD_NAMES)]


def write_folder(path: Path, label: str, n: int, seed: int, slow: float) -> None:
    duration_s = 600.0
    frame = synthetic_records(n, seed, duration_s, slow)
    # The header, summary and metadata come from runfolder's writer; the rows from pandas (fast).
    write_run(
        path,
        [],
        {
            "label": label,
            "requests": n,
            "window_start_ts_s": T0,
            "window_end_ts_s": T0 + duration_s,
            "duration_s": duration_s,
        },
        {"label": label, "load": {"arrival": "closed", "users": 64}},
    )
    frame.to_csv(path / RECORDS_FILE, index=False, float_format="%.6f")
    summary = json.loads((path / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION
    check = read_records(path / RECORDS_FILE)[:3]  # runfolder's own reader parses our rows
    assert check[0].outcome in ("success", "rejected", "timeout", "error")


def ensure_data(root: Path, total: int) -> list[Path]:
    per_run = total // 4
    folders = [root / f"{label}-rep{rep}" for label in ("base", "cand") for rep in (1, 2)]
    stamp = root / f"complete-{total}"
    if not stamp.exists():
        root.mkdir(parents=True, exist_ok=True)
        for i, folder in enumerate(folders):
            label = folder.name.split("-")[0]
            print(f"writing {per_run:,} records to {folder}", flush=True)
            write_folder(folder, label, per_run, seed=i, slow=1.0 if label == "base" else 1.1)
        stamp.touch()
    return folders


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="total records over the 4 runs")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "results" / "bench-compare-scale")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench-compare-scale-report")
    args = parser.parse_args()
    folders = ensure_data(args.data / str(args.records), args.records)
    size_mb = sum((f / RECORDS_FILE).stat().st_size for f in folders) / 1e6
    command = [sys.executable, "-m", "reports.compare", *map(str, folders), "--out", str(args.out)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    print(
        f"reports.compare over {args.records:,} records ({size_mb:.0f} MB of records.csv in 4 runs): "
        f"{elapsed:.2f} s wall, goal < 10 s -> {'PASS' if elapsed < 10 else 'FAIL'}"
    )
    return 0 if elapsed < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
