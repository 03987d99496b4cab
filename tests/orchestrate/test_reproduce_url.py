"""`python -m orchestrate.reproduce --url URL` end to end against a peer we did not write: mlx_lm.server on
the embedded tiny model, with a tiny sweep campaign (two probe steps, two sweep points, windows of seconds).
mlx_lm.server lists no model when no Hugging Face cache folder exists (GET /v1/models answers 200 with an
empty body): the run must still probe, sweep and name its target in the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configkit import REPO_ROOT
from orchestrate.processes import mlx_lm_server
from server.models.embedded import build_embedded_model

# The campaign's request shape and rules; its one profile is required by the schema and never started.
TINY = {
    "schema_version": 1,
    "name": "tiny-url",
    "description": "a short sweep of an external server",
    "load": {
        "scenario": "ChatStreamUser",
        "users": 1,
        "duration_s": 5,
        "max_tokens": 16,
        "ignore_eos": True,
        "prompt_tokens": 16,
        "seed": 0,
    },
    "probe": {
        "first_step_s": 3,
        "first_warmup_s": 1,
        "min_first_step_requests": 3,
        "step_s": {"of": "single_e2e_s", "times": 8, "at_least": 2, "at_most": 3},
        "max_concurrency": 2,
        "patience": 1,
    },
    "slo": {"ttft_s": {"of": "single_ttft_s", "times": 10}, "e2e_s": {"of": "single_e2e_s", "times": 4}},
    "sweep": {
        "points": 2,
        "lowest": {"of": "min_capacity_rps", "times": 0.5},
        "highest": {"of": "max_capacity_rps", "times": 1.0},
        "comparison": {"of": "min_capacity_rps", "times": 1.0},
        "min_requests_per_point": 6,
        "min_window_s": 2,
        "max_window_s": 4,
        "knee_steps": 0,
        "guide_steps": 0,
        "budget_min": 2,
        "request_timeout_s": {"of": "slo_e2e_s", "times": 3, "at_least": 5},
        "stop_timeout_s": {"of": "slo_e2e_s", "times": 1, "at_least": 2},
    },
    "profiles": [{"name": "unused", "profile": "v1.2.0"}],
}


@pytest.mark.slow
# mlx_lm.server's own tracebacks: /v1/models without a Hugging Face cache folder, and a stream that Locust
# closed at the end of a run (a cut request).
@pytest.mark.expected_errors(r"CacheNotFound", r"BrokenPipeError", r"ConnectionResetError")
def test_reproduce_sweeps_an_external_mlx_lm_server(tmp_path: Path) -> None:
    campaign = tmp_path / "tiny-url.yaml"
    campaign.write_text(yaml.safe_dump(TINY, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    env = {"HF_HUB_CACHE": str(tmp_path / "no-hf-cache")}  # absent: the peer lists no model
    with mlx_lm_server(build_embedded_model(), env=env) as url:
        command = [sys.executable, "-m", "orchestrate.reproduce", "--campaign", str(campaign)]
        result = subprocess.run(
            [*command, "--out", str(out), "--url", url, "--label", "mlx_lm"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=600,  # a bound against hangs, not a speed goal: the run takes about a minute here
        )
    sys.stderr.write(result.stderr)  # checked for ERROR records (tests/server_logs.py)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plan = json.loads((out / "sweep-plan.json").read_text())
    assert plan["profiles"] == ["mlx_lm"]
    assert plan["targets"] == {"mlx_lm": {"url": url, "model": None}}
    probe = json.loads((out / "probe.json").read_text())
    assert [p["name"] for p in probe["profiles"]] == ["mlx_lm"] and probe["profiles"][0]["capacity_rps"] > 0
    assert all(p.name.startswith("grid-") for p in (out / "runs" / "sweep" / "mlx_lm").iterdir())
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["points"]) == 2 and "Knees: mlx_lm" in sweep["headline"]
    md = (out / "report" / "report.md").read_text()
    assert md.startswith(f"# mlx_lm ({url}) across offered load")
    assert f"Target mlx_lm: the OpenAI-compatible server at {url}, started outside this run" in md
    assert "'guide' columns" not in md and "unused" not in md
