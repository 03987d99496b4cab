import socket
import subprocess
import sys
from typing import Any

import pytest

from configkit import REPO_ROOT
from server.settings import ConfigError, build_settings, load_settings
from tests.conftest import RUNTIME_CONFIG, server_cli, write_config

LEGACY: dict[str, Any] = {
    "model_concurrency_limiter": {
        "enabled": True,
        "tier_limits": {"30B+": {"max_concurrent": 3, "queue_depth": 25, "queue_timeout_ms": 60000}},
    },
    "mlx": {"concurrency_limit": 1, "force_metal_sync": True, "default_context_length": 8192},
}


def test_runtime_yaml_is_the_v120_default():
    settings = load_settings(RUNTIME_CONFIG)
    assert settings.compat == "v1.2.0"
    assert settings.server.host == "127.0.0.1"
    assert [m.served_name for m in settings.served_models] == ["tiny-llama"]
    assert settings.mlx.concurrency_limit is None


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"server": {"prot": 1}}, "server.prot"),
        ({"engine": {"max_batch_size": "lots"}}, "engine.max_batch_size"),
        ({"streaming": {"batch_tokens": 0}}, "streaming.batch_tokens"),
        ({"modle": {}}, "modle"),
        ({"compat": "v9"}, "compat"),
        ({"limits": {"default_max_tokens": 10, "max_tokens_cap": 5}}, "default_max_tokens"),
        ({"model": {"path": "a"}, "models": [{"path": "b"}]}, "either 'model' or 'models'"),
        ({"models": [{"path": "x/m"}, {"path": "y/m"}]}, "two models are served as m"),
        ({"models": [{"path": "a", "kind": "audio"}]}, "models.0.kind"),
    ],
)
def test_bad_keys_and_values_name_the_key(raw, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        build_settings(raw, warn=lambda line: None)


def test_legacy_keys_warn_once_each_and_are_ignored():
    lines: list[str] = []
    settings = build_settings(dict(LEGACY), warn=lines.append)
    assert len(lines) == 3
    assert all(line.startswith("[mlx-serving] DEPRECATION WARNING: ") for line in lines)
    assert any("mlx.concurrency_limit" in line for line in lines)
    assert any("mlx.force_metal_sync" in line for line in lines)
    assert any("model_concurrency_limiter" in line for line in lines)
    assert all("docs/MIGRATION_V1.2.md" in line for line in lines)
    assert settings.mlx.concurrency_limit is None
    assert settings.mlx.force_metal_sync is None
    assert settings.model_concurrency_limiter is None
    assert settings.mlx.default_context_length == 8192


def test_legacy_keys_are_honoured_under_the_v111_profile():
    lines: list[str] = []
    settings = build_settings({"compat": "v1.1.1", **LEGACY}, warn=lines.append)
    assert lines == []
    assert settings.mlx.concurrency_limit == 1
    limiter = settings.model_concurrency_limiter
    assert limiter is not None
    assert limiter.tier_limits["30B+"].max_concurrent == 3


def test_precedence_file_then_environment_then_command_line(monkeypatch):
    raw = {"server": {"api_key": "from-file", "port": 1111}}
    assert build_settings(raw).server.api_key == "from-file"
    monkeypatch.setenv("MLXBENCH_API_KEY", "from-env")
    assert build_settings(raw).server.api_key == "from-env"
    cli = build_settings(raw, overrides={"server": {"api_key": "from-cli", "port": 0}})
    assert (cli.server.api_key, cli.server.port) == ("from-cli", 0)


def run_server_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )


def test_cli_rejects_an_invalid_config_with_exit_2(tmp_path):
    config = write_config(tmp_path, engine={"max_batch_sise": 4})
    result = run_server_cli("--config", str(config), "--port", "0")
    assert result.returncode == 2
    assert "engine.max_batch_sise" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_rejects_a_missing_config_file_and_bad_yaml(tmp_path):
    missing = run_server_cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    result = run_server_cli("--config", str(bad))
    assert result.returncode == 2 and "not valid YAML" in result.stderr


@pytest.mark.slow
def test_a_port_in_use_is_exit_2_without_a_traceback():
    # The model loads first, then the bind fails: the worker's reader thread must not die noisily.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = server_cli(RUNTIME_CONFIG, "--port", str(port), timeout_s=300)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr and "Exception in thread" not in result.stderr


def test_cli_rejects_a_model_that_is_not_there(tmp_path):
    result = run_server_cli(
        "--config", str(RUNTIME_CONFIG), "--port", "0", "--model", str(tmp_path / "no-model")
    )
    assert result.returncode == 2
    assert "no-model" in result.stderr and "Traceback" not in result.stderr


def test_server_prints_the_warnings_and_runs_unlimited(tmp_path):
    import requests

    from orchestrate.processes import running_server

    config = write_config(tmp_path, **LEGACY)
    log = tmp_path / "server.log"
    with running_server(config, log_file=log) as url:
        health = requests.get(f"{url}/health", timeout=10).json()
    assert (health["profile"], health["compat"]) == ("config", "v1.2.0")  # the file that runs, by name
    assert health["models"]["tiny-llama"]["limiter"] is None
    warnings = [line for line in log.read_text().splitlines() if "DEPRECATION WARNING" in line]
    assert len(warnings) == 3


def changed_leaves(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set(a) | set(b)
    out: set[str] = set()
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out |= changed_leaves(left, right, f"{prefix}{key}.")
        elif left != right:
            out.add(f"{prefix}{key}")
    return out


@pytest.mark.parametrize(
    "variant", sorted((REPO_ROOT / "benchmarks" / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_benchmark_variants_change_the_one_knob_they_name(variant):
    # benchmarks/server_vs_engine.py --variant runs each overlay over runtime.yaml to compare policies: an
    # overlay that changed more than the knob its header names would measure something else too.
    base = load_settings(RUNTIME_CONFIG).model_dump()
    changed = changed_leaves(base, load_settings(RUNTIME_CONFIG, profile=str(variant)).model_dump())
    changed.discard("profile")  # the overlay's own name, which the server reports
    assert len(changed) == 1, changed
    assert variant.read_text().startswith(f"# {changed.pop()}: ")


def test_a_profile_is_named_by_its_file_not_by_its_compat():
    """guide-promise runs with compat v1.2.0; run folders and reports must still say guide-promise."""
    promise = load_settings(RUNTIME_CONFIG, profile="guide-promise", warn=lambda line: None)
    assert (promise.profile, promise.compat) == ("guide-promise", "v1.2.0")
    # Without an overlay the config file is what runs, by its name.
    assert load_settings(RUNTIME_CONFIG, warn=lambda line: None).profile == "runtime"
