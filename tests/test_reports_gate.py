"""`python -m reports.compare --gate` on synthetic runs: verdicts; exit 0 pass, 1 regression, 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from reports.compare import main
from tests.reports_factory import outcome_mix, write_synthetic_run

REPO_GATES = Path(__file__).resolve().parent.parent / "config" / "gates.yaml"


def gate(*args: str) -> int:
    """The gate without its plots report (each report costs about a second)."""
    return main(["--no-report", *args])


def gates_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "gates.yaml"
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


def test_relative_drop_beyond_threshold_is_a_regression(tmp_path: Path) -> None:
    gates = gates_file(tmp_path, relative={"max_throughput_drop_pct": 10})
    base = runs(tmp_path / "base", "v1.2.0", [100])
    cand = runs(tmp_path / "cand", "v1.2.0", [85])
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(tmp_path / "o1")) == 1
    ok = runs(tmp_path / "ok", "v1.2.0", [95])
    assert gate("--gate", str(gates), str(base), str(ok), "--out", str(tmp_path / "o2")) == 0


def test_noise_aware_gate_ignores_a_drop_within_the_repeats_spread(tmp_path: Path) -> None:
    """Means drop 15 % (past the 10 % threshold), but the repeats overlap: noise, not a regression."""
    gates = gates_file(tmp_path, relative={"max_throughput_drop_pct": 10})
    base = runs(tmp_path / "base", "v1.2.0", [60, 140])  # mean 100, range 60..140
    cand = runs(tmp_path / "cand", "v1.2.0", [75, 95])  # mean 85, range 75..95
    out = tmp_path / "out"
    assert gate("--gate", str(gates), str(base), str(cand), "--out", str(out)) == 0
    (check,) = json.loads((out / "gate.json").read_text())["checks"]
    assert check["verdict"] == "noise" and check["value"] == pytest.approx(15.0)
    # The same means with tight repeats are a regression.
    tight_base = runs(tmp_path / "tb", "v1.2.0", [99, 101])
    tight_cand = runs(tmp_path / "tc", "v1.2.0", [84, 86])
    assert gate("--gate", str(gates), str(tight_base), str(tight_cand), "--out", str(tmp_path / "o2")) == 1
    # noise_aware: false judges the means alone.
    strict = gates_file(tmp_path, relative={"max_throughput_drop_pct": 10, "noise_aware": False})
    assert gate("--gate", str(strict), str(base), str(cand), "--out", str(tmp_path / "o3")) == 1


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
