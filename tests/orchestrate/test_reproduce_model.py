"""`python -m orchestrate.reproduce --model PATH`: every profile serves the user's model, and v1.1.1 takes
its tier from that model's name as v1.1.1 did. The embedded model copied under a name with a size stands in
for a user's model (no downloads here); a tiny sweep campaign keeps it to about a minute."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from configkit import REPO_ROOT
from server.models.embedded import build_embedded_model
from tests.orchestrate.test_reproduce_url import TINY


@pytest.mark.slow
def test_every_profile_serves_the_given_model_with_v111s_tier_from_its_name(tmp_path: Path) -> None:
    model = tmp_path / "demo-1.5B-mlx"  # "1.5B": tier <3B (10 active, 50 queued), not the tiny model's 7-13B
    shutil.copytree(build_embedded_model(), model)
    campaign = {**TINY, "name": "tiny-model", "profiles": [{"name": "v1.1.1", "profile": "v1.1.1"}]}
    path = tmp_path / "tiny-model.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrate.reproduce",
            "--campaign",
            str(path),
            "--out",
            str(out),
            "--model",
            str(model),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound against hangs: the run takes about a minute here
    )
    sys.stderr.write(result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plan = json.loads((out / "sweep-plan.json").read_text())
    assert plan["targets"]["v1.1.1"] == {"profile": "v1.1.1", "model": str(model)}
    server_log = (out / "logs" / "probe-v1.1.1.server.log").read_text()
    assert "tier <3B (from name)" in server_log
    assert "checking the embedded model" not in result.stdout  # nothing built: the user's model is served
