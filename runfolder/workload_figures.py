"""Run figures of the realistic workloads (summary.json `workloads`): TTFT by conversation turn,
TTFT with and without a shared prefix, and the prompt tokens the server reported as cached."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from runfolder.figures import distribution
from runfolder.records import RequestRecord


def _dist(values: Iterable[float | int | None]) -> dict[str, Any]:
    return distribution(np.array([np.nan if v is None else v for v in values], dtype=float))


def workload_figures(records: Sequence[RequestRecord]) -> dict[str, Any]:
    """Over successful requests. Keys appear only when the run had that workload, except `cached_tokens`."""
    ok = [r for r in records if r.outcome == "success"]
    out: dict[str, Any] = {"cached_tokens": cached_tokens(ok)}
    by_turn: dict[int, list[RequestRecord]] = defaultdict(list)
    for r in ok:
        if r.turn_index is not None:
            by_turn[r.turn_index].append(r)
    if by_turn:
        out["conversations"] = len({r.conversation_id for r in records if r.conversation_id is not None})
        out["ttft_s_by_turn"] = {str(t): _dist(r.ttft_s for r in by_turn[t]) for t in sorted(by_turn)}
        out["prompt_tokens_by_turn"] = {
            str(t): _dist(r.prompt_tokens for r in by_turn[t]) for t in sorted(by_turn)
        }
    if any(r.shared_prefix_id is not None for r in records):
        out["ttft_s_by_shared_prefix"] = {
            "with": _dist(r.ttft_s for r in ok if r.shared_prefix_id is not None),
            "without": _dist(r.ttft_s for r in ok if r.shared_prefix_id is None),
        }
    return out


def cached_tokens(ok: Sequence[RequestRecord]) -> dict[str, Any]:
    """The sum over successes that reported it; null (not 0) when no reply reported cached tokens."""
    reported = [r for r in ok if r.cached_tokens is not None]
    total = sum(r.cached_tokens or 0 for r in reported)
    prompt = sum(r.prompt_tokens or 0 for r in reported)
    return {
        "records_with_cached_tokens": len(reported),
        "cached_tokens": total if reported else None,
        "cached_share_of_prompt_tokens": total / prompt if reported and prompt else None,
    }
