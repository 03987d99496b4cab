"""Report sections for the realistic workloads: TTFT by conversation turn, TTFT with and
without a shared prefix, and cached prompt tokens, per label over the pooled successful requests of its
runs. A section appears only when some run had that workload."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from runfolder.frame import RunData

Section = tuple[str, str, pd.DataFrame]  # as reports.report.Section: (title, note, formatted cells)

MAX_TURN_COLUMNS = 12


def _ok(runs: Sequence[RunData]) -> dict[str, pd.DataFrame]:
    by_label: dict[str, list[pd.DataFrame]] = {}
    for run in runs:
        frame = run.records
        by_label.setdefault(run.label, []).append(frame[frame["outcome"] == "success"])
    return {label: pd.concat(frames) for label, frames in by_label.items()}


def _p50_ms(values: pd.Series) -> str:
    values = values.dropna()
    return f"{1000 * values.median():.1f} (n={len(values)})" if len(values) else "-"


def ttft_by_turn(runs: Sequence[RunData]) -> Section | None:
    ok = _ok(runs)
    turns = sorted({int(t) for f in ok.values() for t in f["turn_index"].dropna().unique()})
    if not turns:
        return None
    turns = turns[:MAX_TURN_COLUMNS]
    rows = {
        label: {f"turn {t}": _p50_ms(f.loc[f["turn_index"] == t, "ttft_s"]) for t in turns}
        for label, f in ok.items()
    }
    note = (
        "TTFT p50 in ms by turn of the conversation (MultiTurnChatUser), over the successful requests of "
        "all runs of a label; a turn sends the whole history, so its prompt grows. A prefix cache shows as "
        "later turns that do not slow down with it."
    )
    return "TTFT by conversation turn", note, _cells(rows)


def ttft_by_shared_prefix(runs: Sequence[RunData]) -> Section | None:
    ok = _ok(runs)
    if not any(f["shared_prefix_id"].notna().any() for f in ok.values()):
        return None
    rows = {
        label: {
            "with a shared prefix": _p50_ms(f.loc[f["shared_prefix_id"].notna(), "ttft_s"]),
            "without": _p50_ms(f.loc[f["shared_prefix_id"].isna(), "ttft_s"]),
        }
        for label, f in ok.items()
    }
    note = (
        "TTFT p50 in ms of requests that began with one of the --shared-prefixes system prompts, and of "
        "the rest."
    )
    return "TTFT by shared prefix", note, _cells(rows)


def cached_tokens(runs: Sequence[RunData]) -> Section | None:
    ok = _ok(runs)
    if not any(f["cached_tokens"].notna().any() for f in ok.values()):
        return None
    rows = {}
    for label, f in ok.items():
        reported = f[f["cached_tokens"].notna()]
        cached, prompt = reported["cached_tokens"].sum(), reported["prompt_tokens"].sum()
        rows[label] = {
            "requests reporting": str(len(reported)),
            "cached prompt tokens": f"{cached:.0f}" if len(reported) else "-",
            "share of their prompt tokens": f"{100 * cached / prompt:.1f} %" if prompt else "-",
        }
    note = (
        "usage.prompt_tokens_details.cached_tokens summed over successful requests; a server that does not "
        "report it counts as not reporting, never as 0."
    )
    return "Cached prompt tokens", note, _cells(rows)


def workload_sections(runs: Sequence[RunData]) -> list[Section]:
    return [
        s for s in (ttft_by_turn(runs), ttft_by_shared_prefix(runs), cached_tokens(runs)) if s is not None
    ]


def _cells(rows: dict[str, dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index").reset_index(names="label")
