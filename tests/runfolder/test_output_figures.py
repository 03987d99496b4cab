"""summary.json `output_check` from known records: counts, shares of the checked replies, where
divergence starts, the warnings, and the new record fields through records.csv. Pure: no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from runfolder import RequestRecord, read_run, summarize, write_run

REFERENCES = {
    "prompts": 2,
    "compared_by": "tokens",
    "reference_requests": 2,
    "reference_outcomes": {"success": 2},
}


def rec(check: str | None, *, prompt: int | None = 0, outcome: str = "success", chars=None, tokens=None):
    return RequestRecord(
        "chat_stream", True, 0.0, 0.0, 1.0, 0.0, 1.0, outcome, "ok",  # type: ignore[arg-type]
        output_tokens=8, output_check_prompt=prompt, output_check=check,
        output_first_diff_chars=chars, output_first_diff_tokens=tokens,
    )  # fmt: skip


KNOWN = [
    rec("identical"),
    rec("identical"),
    rec("diverged", chars=10, tokens=3),
    rec("diverged", chars=30, tokens=9),
    rec("foreign", chars=1, tokens=0),
    rec("truncated", chars=12, tokens=4),
    rec(None, prompt=1, outcome="error"),  # failed: not judged
    rec(None, prompt=1),  # a success whose prompt had no usable reference
]


def test_counts_and_shares_are_of_the_checked_replies():
    s = summarize(KNOWN, window_start_s=0.0, window_end_s=10.0, output_references=REFERENCES)
    out = s["output_check"]
    assert out["reference_requests"] == 2 and out["compared_by"] == "tokens"
    assert out["requests"] == 8 and out["checked"] == 6 and out["unchecked_successes"] == 1
    assert out["counts"] == {
        "identical": 2, "diverged": 2, "empty": 0, "truncated": 1, "overlong": 0, "foreign": 1,
    }  # fmt: skip
    assert out["differ_rate"] == pytest.approx(4 / 6)
    assert out["diverged_rate"] == pytest.approx(2 / 6)
    assert out["wrong_outputs"] == 2 and out["wrong_output_rate"] == pytest.approx(2 / 6)
    # where numerical divergence starts: the diverged replies only
    assert out["diverged_first_diff_chars"]["min"] == 10 and out["diverged_first_diff_chars"]["max"] == 30
    assert out["diverged_first_diff_tokens"]["p50"] == pytest.approx(6.0)
    assert {"wrong_outputs", "unchecked_outputs"} <= set(s["warning_codes"])


def test_a_clean_check_has_no_warning_and_a_run_without_one_has_no_block():
    clean = [rec("identical"), rec("diverged", chars=5)]
    s = summarize(clean, window_start_s=0.0, window_end_s=10.0, output_references=REFERENCES)
    assert s["output_check"]["wrong_output_rate"] == 0.0 and s["warning_codes"] == []
    assert s["output_check"]["diverged_first_diff_tokens"] is None  # compared by characters here
    plain = summarize([rec(None, prompt=None)], window_start_s=0.0, window_end_s=10.0)
    assert "output_check" not in plain


def test_the_check_fields_survive_records_csv(tmp_path: Path):
    summary = summarize(KNOWN, window_start_s=0.0, window_end_s=10.0, output_references=REFERENCES)
    write_run(tmp_path / "run", KNOWN, summary, {"label": "x"})
    back = read_run(tmp_path / "run").records
    assert [(r.output_check_prompt, r.output_check, r.output_first_diff_tokens) for r in back] == [
        (r.output_check_prompt, r.output_check, r.output_first_diff_tokens) for r in KNOWN
    ]
