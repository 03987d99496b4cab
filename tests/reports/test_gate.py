"""`python -m reports.compare --gate` on synthetic runs: exit 0 pass, 1 regression, 2 bad input or refused
evidence, 3 inconclusive; each verdict and each refusal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from configkit import REPO_ROOT
from reports.compare import main
from tests.support.reports_factory import outcome_mix, write_synthetic_run

REPO_GATES = REPO_ROOT / "config" / "gates.yaml"


def gate(*args: str) -> int:
    """The gate without its plots report (each report costs about a second)."""
    return main(["--no-report", *args])


def gates_file(tmp_path: Path, **sections) -> Path:
    """A gates file; synthetic runs hold 10 requests each: that is the evidence minimum unless given."""
    path = tmp_path / "gates.yaml"
    sections.setdefault("evidence", {"min_requests": 10})
    path.write_text(yaml.safe_dump({"schema_version": 1, **sections}))
    return path


def runs(root: Path, label: str, tokens_per_request: list[int], **mix) -> Path:
    """One run per entry; each run's throughput is 10 successes x tokens / 10 s = tokens tok/s."""
    for i, tokens in enumerate(tokens_per_request):
        records = outcome_mix(mix.get("successes", 10), mix.get("rejected", 0), output_tokens=tokens)
        write_synthetic_run(root / f"rep{i}", records, label=label)
    return root


def test_repo_gate_passes_a_healthy_run(tmp_path: Path, capsys) -> None:
    cand = runs(tmp_path / "cand", "v1.2.0", [100])
    out = tmp_path / "out"
    assert main(["--gate", str(REPO_GATES), str(cand), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Performance gate: ✅ **PASS**" in printed
    verdicts = json.loads((out / "gate.json").read_text())
    assert verdicts["passed"] and {c["gate"] for c in verdicts["checks"]} >= {
        "min_success_rate",
        "max_ttft_p95_ms",
    }
    assert (out / "report" / "report.html").is_file()


def test_absolute_gate_fails_on_rejections(tmp_path: Path, capsys) -> None:
    cand = runs(tmp_path / "cand", "v1.1.1", [100], successes=9, rejected=1)
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(tmp_path / "out")) == 1
    captured = capsys.readouterr()
    assert "❌ **REGRESSION**" in captured.out
    assert "min_success_rate" in captured.err and "max_rejection_rate" in captured.err
    checks = {c["gate"]: c for c in json.loads((tmp_path / "out" / "gate.json").read_text())["checks"]}
    assert checks["max_rejection_rate"]["value"] == pytest.approx(10.0)
    assert checks["max_timeout_rate"]["verdict"] == "pass"


# A gate whose verdict comes from the repeats alone (no noise prior): the tests control the spread.
NO_PRIOR = {"prior_df": 0}


def relative_gates(tmp_path: Path, **relative) -> Path:
    return gates_file(tmp_path, relative={"max_throughput_drop_pct": 10, **relative}, noise=NO_PRIOR)


def verdict_of(out: Path) -> dict:
    return json.loads((out / "gate.json").read_text())


def test_relative_verdicts_pass_fail_inconclusive(tmp_path: Path, capsys) -> None:
    gates = relative_gates(tmp_path)
    base = runs(tmp_path / "base", "v1.2.0", [100, 101, 99, 100, 102])
    # A clear 20 % drop over tight repeats: fail (exit 1).
    drop = runs(tmp_path / "drop", "v1.2.0", [80, 81, 79, 80, 82])
    assert gate("--gate", str(gates), str(base), str(drop), "--out", str(tmp_path / "o1")) == 1
    (check,) = verdict_of(tmp_path / "o1")["checks"]
    assert check["verdict"] == "fail" and check["value"] == pytest.approx(20.0, abs=0.5)
    assert "performance gate failed" in capsys.readouterr().err
    # The same figures: pass (exit 0).
    same = runs(tmp_path / "same", "v1.2.0", [99, 100, 101, 100, 100])
    assert gate("--gate", str(gates), str(base), str(same), "--out", str(tmp_path / "o2")) == 0
    assert verdict_of(tmp_path / "o2")["verdict"] == "pass"
    # Wide repeats with a 15 % lower mean: inconclusive (exit 3), never a pass; says how many more runs.
    wide_base = runs(tmp_path / "wb", "v1.2.0", [60, 140, 100])
    wide_cand = runs(tmp_path / "wc", "v1.2.0", [75, 95, 85])
    out = tmp_path / "o3"
    assert gate("--gate", str(gates), str(wide_base), str(wide_cand), "--out", str(out)) == 3
    captured = capsys.readouterr()
    assert "INCONCLUSIVE" in captured.out and "more run(s) per side would decide it" in captured.out
    assert "inconclusive (not a pass)" in captured.err
    result = verdict_of(out)
    assert result["verdict"] == "inconclusive" and result["exit_code"] == 3 and not result["passed"]
    assert result["checks"][0]["more_repeats"] >= 1


def test_one_outlier_does_not_hide_a_regression(tmp_path: Path) -> None:
    """Baseline [100, 100, 30] vs candidate [50, 50, 50]: one outlier must not hide a regression."""
    gates = relative_gates(tmp_path)
    base = runs(tmp_path / "base", "v1.2.0", [100, 100, 30])
    cand = runs(tmp_path / "cand", "v1.2.0", [50, 50, 50])
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(tmp_path / "out")) in (1, 3)


def test_more_repeats_give_a_verdict_where_few_cannot(tmp_path: Path) -> None:
    """The same 10 % drop and spread: inconclusive with 2 repeats, a regression with 8."""
    gates = relative_gates(tmp_path)
    base_values, cand_values = [104, 96], [94, 86]
    few_b = runs(tmp_path / "fb", "v1.2.0", base_values)
    few_c = runs(tmp_path / "fc", "v1.2.0", cand_values)
    assert gate("--gate", str(gates), str(few_b), str(few_c), "--out", str(tmp_path / "o1")) == 3
    many_b = runs(tmp_path / "mb", "v1.2.0", base_values * 4)
    many_c = runs(tmp_path / "mc", "v1.2.0", cand_values * 4)
    assert gate("--gate", str(gates), str(many_b), str(many_c), "--out", str(tmp_path / "o2")) == 1


def test_one_run_per_side_without_a_noise_prior_is_inconclusive(tmp_path: Path) -> None:
    gates = relative_gates(tmp_path)
    base = runs(tmp_path / "base", "v1.2.0", [100])
    cand = runs(tmp_path / "cand", "v1.2.0", [50])
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(tmp_path / "out")) == 3
    # With a measured noise prior one run per side can decide a large drop.
    prior = gates_file(
        tmp_path,
        relative={"max_throughput_drop_pct": 10},
        noise={"prior_df": 10, "output_tokens_per_s": {"cv": 0.05}},
    )
    assert gate("--gate", str(prior), str(base), str(cand), "--out", str(tmp_path / "o2")) == 1


def interleaved_runs(root: Path, label: str, values: list[int], offset_s: float) -> Path:
    """Runs 100 s apart (plus `offset_s`): two sides made with offsets 0 and 50 alternate in time."""
    for i, tokens in enumerate(values):
        records = outcome_mix(10, output_tokens=tokens)
        write_synthetic_run(root / f"rep{i}", records, label=label, start_s=100 * i + offset_s)
    return root


def test_interleaved_runs_are_paired(tmp_path: Path) -> None:
    """A slow spell moves both runs of a pair: paired, a steady 20 % drop is clear; unpaired it is noise."""
    base = interleaved_runs(tmp_path / "base", "v1.2.0", [100, 60, 140], 0)
    cand = interleaved_runs(tmp_path / "cand", "v1.2.0", [80, 48, 112], 50)
    paired = relative_gates(tmp_path)
    out = tmp_path / "o1"
    assert gate("--gate", str(paired), str(base), str(cand), "--out", str(out)) == 1
    assert "3 pairs" in verdict_of(out)["checks"][0]["detail"]
    unpaired = relative_gates(tmp_path, pairing="off")
    assert gate("--gate", str(unpaired), str(base), str(cand), "--out", str(tmp_path / "o2")) == 3


def test_min_repeats_per_side_is_enforced(tmp_path: Path, capsys) -> None:
    gates = relative_gates(tmp_path, min_repeats=3)
    base = runs(tmp_path / "base", "v1.2.0", [100, 100, 100])
    cand = runs(tmp_path / "cand", "v1.2.0", [100, 100])
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(tmp_path / "out")) == 2
    assert "relative.min_repeats is 3" in capsys.readouterr().err


# ---- refusals: exit 2 with the reason ----


def one_run(root: Path, label: str = "v1.2.0", successes: int = 30, **kw) -> Path:
    write_synthetic_run(root, outcome_mix(successes), label=label, **kw)
    return root


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"cuts": 5}, "of requests were cut when the run ended"),
        ({"warning_codes": ["generator_behind"]}, "the load generator fell behind its schedule"),
        (
            {"arrival": {"requested_rate_per_s": 5.0, "achieved_rate_per_s": 2.0, "behind": True}},
            "fell behind its schedule (achieved 2.00 of 5.00 req/s)",
        ),
        ({"warning_codes": ["missing_worker_records"]}, "records of some Locust workers are missing"),
        ({"successes": 3}, "too few requests: 3 (evidence.min_requests 4)"),
    ],
)
def test_broken_evidence_is_refused(tmp_path: Path, capsys, kwargs: dict, reason: str) -> None:
    cand = one_run(tmp_path / "cand", **kwargs)
    out = tmp_path / "out"
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(out)) == 2
    captured = capsys.readouterr()
    assert reason in captured.err and str(cand) in captured.err
    assert "REFUSED" in captured.out
    result = verdict_of(out)
    assert result["verdict"] == "refused" and result["exit_code"] == 2 and reason in result["refusals"][0]


def test_a_few_cut_requests_under_the_threshold_are_accepted(tmp_path: Path) -> None:
    gates = gates_file(tmp_path, evidence={"max_cut_rate": 0.1}, absolute={"max_error_rate": 0})
    cand = one_run(tmp_path / "cand", cuts=2)
    assert gate("--gate", str(gates), str(cand), "--out", str(tmp_path / "out")) == 0


def test_warnings_that_do_not_invalidate_a_run_are_accepted(tmp_path: Path) -> None:
    cand = one_run(tmp_path / "cand", warning_codes=["approximate_prompt_lengths"])
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(tmp_path / "out")) == 0


def test_a_gated_label_absent_from_a_run_is_refused(tmp_path: Path, capsys) -> None:
    gates = gates_file(tmp_path, absolute={"min_success_rate": 1.0}, labels=["v1.2.0", "v1.3.0"])
    cand = one_run(tmp_path / "cand")
    assert gate("--gate", str(gates), str(cand), "--out", str(tmp_path / "out")) == 2
    assert "label 'v1.3.0', absent from the candidate" in capsys.readouterr().err
    # A relative gate needs the label in the baseline too (a baseline of several labels).
    rel = gates_file(tmp_path, relative={"max_throughput_drop_pct": 10}, labels=["v1.2.0"])
    base = tmp_path / "base"
    one_run(base / "a", label="v1.1.1")
    one_run(base / "b", label="v1.0.0")
    assert gate("--gate", str(rel), str(base), str(cand), "--out", str(tmp_path / "o2")) == 2
    assert "absent from the baseline" in capsys.readouterr().err


WORKLOAD = {
    "scenario": "chat_stream",
    "model": "tiny-llama",
    "stream": True,
    "prompt_tokens_target": 32,
    "max_tokens": 32,
    "ignore_eos": True,
    "arrival": "closed",
    "rate_per_s": None,
    "users": 4,
    "prompt_length_method": "tokenizer",
}


def test_runs_of_different_workload_shape_are_refused(tmp_path: Path, capsys) -> None:
    gates = relative_gates(tmp_path)
    base = one_run(tmp_path / "base", workload=WORKLOAD)
    cand = one_run(tmp_path / "cand", workload={**WORKLOAD, "max_tokens": 128})
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(tmp_path / "o1")) == 2
    err = capsys.readouterr().err
    assert "a different workload" in err and "max_tokens: 128 vs 32" in err
    # Older run folders without `workload`: the options metadata.json recorded are compared instead.
    old_base = one_run(tmp_path / "ob", options={"prompt_tokens": 32, "max_tokens": 32, "arrival": "closed"})
    old_cand = one_run(tmp_path / "oc", options={"prompt_tokens": 256, "max_tokens": 32, "arrival": "closed"})
    assert gate("--gate", str(gates), str(old_base), str(old_cand), "--out", str(tmp_path / "o2")) == 2
    assert "prompt_tokens_target: 256 vs 32" in capsys.readouterr().err
    # Repeats of one side must agree too, and with the --shape-of reference (a committed baseline).
    ref = one_run(tmp_path / "ref", workload={**WORKLOAD, "arrival": "poisson", "rate_per_s": 2.0})
    same = one_run(tmp_path / "same", workload=WORKLOAD)
    args = ["--gate", str(REPO_GATES), str(same), "--shape-of", str(ref), "--out", str(tmp_path / "o3")]
    assert gate(*args) == 2
    assert "arrival: 'closed' vs 'poisson'" in capsys.readouterr().err
    # An output check reuses a few prompts (prefix caches hit): not the shape of a run without one.
    checked = one_run(tmp_path / "checked", workload={**WORKLOAD, "check_outputs": 16})
    assert gate("--gate", str(gates), str(base), str(checked), "--out", str(tmp_path / "o4")) == 2
    assert "check_outputs: 16 vs 0" in capsys.readouterr().err  # candidate vs baseline


# ---- latency gates that failures cannot game ----


def test_failed_requests_count_as_beyond_any_ttft_limit(tmp_path: Path) -> None:
    """Timeouts in place of slow requests would improve a successes-only p95; here they fail it."""
    gates = gates_file(tmp_path, absolute={"max_ttft_p95_ms": 15000})
    records = outcome_mix(27, timeouts=3, ttft_s=0.05)  # 10 % timed out, the rest fast
    write_synthetic_run(tmp_path / "cand", records, label="v1.2.0")
    out = tmp_path / "out"
    assert gate("--gate", str(gates), str(tmp_path / "cand"), "--out", str(out)) == 1
    (check,) = verdict_of(out)["checks"]
    assert check["verdict"] == "fail" and check["value"] is None  # infinite: JSON null
    assert "did not succeed" in check["detail"]
    # Relative: a candidate that fails requests where the baseline did not cannot improve its TTFT.
    rel = gates_file(tmp_path, relative={"max_ttft_p95_rise_pct": 30}, noise=NO_PRIOR)
    base = one_run(tmp_path / "base")
    assert gate("--gate", str(rel), str(base), str(tmp_path / "cand"), "--out", str(tmp_path / "o2")) == 1


# ---- wrong outputs (--check-outputs) ----


def test_wrong_outputs_are_gated_as_a_share_of_the_checked_replies(tmp_path: Path) -> None:
    gates = gates_file(tmp_path, absolute={"max_wrong_output_rate": 0.05})
    verdicts = ["identical"] * 6 + ["diverged"] * 3 + ["foreign"]  # 1 wrong of 10 checked
    pairs = zip(outcome_mix(10), verdicts, strict=True)
    records = [replace(r, output_check_prompt=0, output_check=v) for r, v in pairs]
    write_synthetic_run(tmp_path / "wrong", records, label="v1.2.0")
    assert gate("--gate", str(gates), str(tmp_path / "wrong"), "--out", str(tmp_path / "o1")) == 1
    (check,) = verdict_of(tmp_path / "o1")["checks"]
    assert check["gate"] == "max_wrong_output_rate" and check["value"] == pytest.approx(10.0)  # %
    # divergence alone is expected under batching: it passes
    diverged = [replace(r, output_check="diverged" if i % 2 else "identical") for i, r in enumerate(records)]
    write_synthetic_run(tmp_path / "ok", diverged, label="v1.2.0")
    assert gate("--gate", str(gates), str(tmp_path / "ok"), "--out", str(tmp_path / "o2")) == 0
    # a run that did not check outputs cannot pass this gate
    write_synthetic_run(tmp_path / "unchecked", outcome_mix(10), label="v1.2.0")
    assert gate("--gate", str(gates), str(tmp_path / "unchecked"), "--out", str(tmp_path / "o3")) == 1
    (check,) = verdict_of(tmp_path / "o3")["checks"]
    assert check["detail"] == "not measured"


# ---- diagnosis ----


def test_a_saturated_run_is_diagnosed_in_the_failure(tmp_path: Path, capsys) -> None:
    cand = tmp_path / "cand"
    write_synthetic_run(
        cand, outcome_mix(20, timeouts=10), label="v1.2.0", warning_codes=["server_saturated"]
    )
    out = tmp_path / "out"
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(out)) == 1
    captured = capsys.readouterr()
    assert "the offered load, not the code, may be the cause" in captured.out
    assert "see the diagnosis" in captured.err
    assert verdict_of(out)["diagnoses"]
    # Older folders: an open loop that completed far less than it offered is saturated too.
    open_loop = tmp_path / "open"
    arrival = {"requested_rate_per_s": 10.0, "achieved_rate_per_s": 10.0, "behind": False}
    write_synthetic_run(open_loop, outcome_mix(20, rejected=80), label="v1.2.0", rate=10.0, arrival=arrival)
    assert gate("--gate", str(REPO_GATES), str(open_loop), "--out", str(tmp_path / "o2")) == 1
    assert "completed 2.00 req/s of the 10.00 req/s offered" in capsys.readouterr().out
    # A healthy failure (errors at a light load) gets no such diagnosis.
    light = one_run(tmp_path / "light")
    write_synthetic_run(light, outcome_mix(20, errors=2), label="v1.2.0")
    assert gate("--gate", str(REPO_GATES), str(light), "--out", str(tmp_path / "o3")) == 1
    assert "offered load" not in capsys.readouterr().out


def test_benchmark_json_is_github_action_benchmark_format(tmp_path: Path) -> None:
    cand = runs(tmp_path / "cand", "v1.2.0", [100, 120])
    out = tmp_path / "out"
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(out)) == 0
    bigger = json.loads((out / "benchmark-bigger.json").read_text())
    smaller = json.loads((out / "benchmark-smaller.json").read_text())
    for entry in bigger + smaller:
        assert {"name", "unit", "value"} <= set(entry) and isinstance(entry["value"], int | float)
    tput = next(e for e in bigger if e["name"] == "v1.2.0 output throughput")
    assert tput["unit"] == "tok/s" and tput["value"] == pytest.approx(110.0) and tput["range"].startswith("±")
    assert any(e["name"] == "v1.2.0 TTFT p95" and e["unit"] == "ms" for e in smaller)


def test_gate_summary_goes_to_github_step_summary(tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    cand = runs(tmp_path / "cand", "v1.2.0", [100])
    assert gate("--gate", str(REPO_GATES), str(cand), "--out", str(tmp_path / "out")) == 0
    assert "## Performance gate" in summary.read_text()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("absolute: [1, 2]\n", "'absolute'"),
        ("absolute:\n  min_sucess_rate: 1.0\n", "unknown key 'absolute.min_sucess_rate'"),
        ("absolute:\n  min_success_rate: 1.5\n", "'absolute.min_success_rate'"),
        ("relative: {max_throughput_drop_pct: fast}\n", "'relative.max_throughput_drop_pct'"),
        ("schema_version: 7\n", "'schema_version'"),
        ("relative: {noise_aware: true}\n", "unknown key 'relative.noise_aware'"),
        ("relative: {confidence: 1.5}\n", "'relative.confidence'"),
        ("noise: {output_tokens_per_s: {cv: 0}}\n", "'noise.output_tokens_per_s.cv'"),
        ("absolute: {min_success_rate: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_malformed_gates_file_is_bad_input(tmp_path: Path, capsys, content: str, problem: str) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text(content)
    cand = runs(tmp_path / "cand", "v1.2.0", [100])
    assert gate("--gate", str(gates), str(cand), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert str(gates) in err and problem in err


def test_gate_bad_inputs(tmp_path: Path, capsys) -> None:
    cand = runs(tmp_path / "cand", "v1.2.0", [100])
    assert gate("--gate", str(tmp_path / "missing.yaml"), str(cand)) == 2
    assert "missing.yaml: cannot read gates file" in capsys.readouterr().err
    assert gate("--gate", str(REPO_GATES), str(cand), str(cand), str(cand)) == 2
    assert "takes [BASELINE] CANDIDATE" in capsys.readouterr().err
    assert gate("--gate", str(REPO_GATES), str(tmp_path / "nothing-here")) == 2
    assert "nothing-here: no such run folder" in capsys.readouterr().err


def test_shapes_from_summary_and_from_metadata_compare_on_what_both_state(tmp_path: Path) -> None:
    """A newer run (summary.json `workload`) against an older one (metadata options): scenario and model are
    named differently by the two sources, so only lengths, arrival, rate and users are compared."""
    gates = relative_gates(tmp_path)
    old = one_run(tmp_path / "old", options={"prompt_tokens": 32, "max_tokens": 32, "arrival": "closed"})
    new = one_run(tmp_path / "new", workload=WORKLOAD)  # scenario "chat_stream", not a class name
    assert gate("--gate", str(gates), str(old), str(new), "--out", str(tmp_path / "o1")) in (0, 3)
    longer = one_run(tmp_path / "longer", workload={**WORKLOAD, "max_tokens": 64})
    assert gate("--gate", str(gates), str(old), str(longer), "--out", str(tmp_path / "o2")) == 2
