"""Run figures of the output check (`--check-outputs`; summary.json `output_check`): how many
replies under load differ from the same prompt's reply alone, where they start to differ, and the share
that is wrong in a way numerical divergence does not explain (`wrong_output_rate`, gateable).

The verdicts are made by loadgen/output_check.py; their names are part of the run-folder contract, here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from runfolder.figures import distribution, rate
from runfolder.records import RequestRecord

IDENTICAL, DIVERGED = "identical", "diverged"
EMPTY, TRUNCATED, OVERLONG, FOREIGN = "empty", "truncated", "overlong", "foreign"
WRONG_OUTPUT_KINDS = (EMPTY, TRUNCATED, OVERLONG, FOREIGN)
OUTPUT_KINDS = (IDENTICAL, DIVERGED, *WRONG_OUTPUT_KINDS)
# Warning codes (summary.json "warning_codes").
WRONG_OUTPUTS = "wrong_outputs"
UNCHECKED_OUTPUTS = "unchecked_outputs"


def _dist(values: list[int | None]) -> dict[str, Any]:
    return distribution(np.array([np.nan if v is None else v for v in values], dtype=float))


def output_figures(
    records: Sequence[RequestRecord], references: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The check's figures over the measured records; None when the run did not check outputs.

    Shares are of the checked replies (successes whose prompt has a usable reference), not of attempted
    requests: a failed request has no output to judge and is counted by the outcome rates already.
    """
    sent = [r for r in records if r.output_check_prompt is not None]
    if references is None and not sent:
        return None
    checked = [r for r in sent if r.output_check is not None]
    counts = Counter(r.output_check for r in checked)
    n = len(checked)
    wrong = sum(counts[k] for k in WRONG_OUTPUT_KINDS)
    diverged = [r for r in checked if r.output_check == DIVERGED]
    with_tokens = any(r.output_first_diff_tokens is not None for r in diverged)
    return {
        **(references or {}),
        "requests": len(sent),
        "checked": n,
        "unchecked_successes": sum(1 for r in sent if r.outcome == "success" and r.output_check is None),
        "counts": {kind: counts[kind] for kind in OUTPUT_KINDS},
        "differ_rate": rate(n - counts[IDENTICAL], n),
        "diverged_rate": rate(counts[DIVERGED], n),
        "wrong_outputs": wrong,
        "wrong_output_rate": rate(wrong, n),
        # Where numerical divergence starts (the diverged replies only: a wrong reply's position means
        # something else); tokens by the run's local tokenizer, re-tokenizing both texts.
        "diverged_first_diff_chars": _dist([r.output_first_diff_chars for r in diverged]),
        "diverged_first_diff_tokens": _dist([r.output_first_diff_tokens for r in diverged])
        if with_tokens
        else None,
    }


def output_warnings(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, sentence) for summary.json's warnings."""
    out = []
    if figures["wrong_outputs"]:
        kinds = ", ".join(f"{figures['counts'][k]} {k}" for k in WRONG_OUTPUT_KINDS if figures["counts"][k])
        out.append(
            (
                WRONG_OUTPUTS,
                f"{figures['wrong_outputs']} of {figures['checked']} checked replies were wrong in a way "
                f"numerical divergence does not explain ({kinds}); see records.csv output_check",
            )
        )
    if figures["unchecked_successes"]:
        out.append(
            (
                UNCHECKED_OUTPUTS,
                f"{figures['unchecked_successes']} successful replies could not be checked: their prompt's "
                "reference request failed (metadata.json output_check.references)",
            )
        )
    return out
