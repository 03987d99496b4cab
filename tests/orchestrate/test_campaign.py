"""Campaign files: the shipped ones validate, overlays merge like the server's profiles, bad files exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrate import campaign as camp
from orchestrate.reproduce import main


def test_shipped_campaigns_validate() -> None:
    default = camp.load_campaign(camp.find("default"))
    assert [p.name for p in default.profiles] == ["v1.1.1", "v1.2.0", "guide-promise"]
    assert default.is_sweep and default.sweep_spec.points >= 4
    assert default.profiles[0].derive  # v1.1.1's queue timeout follows the probed service time
    smoke = camp.load_campaign(camp.find("smoke"))
    assert [p.name for p in smoke.profiles] == ["v1.1.1", "v1.2.0"] and not smoke.is_sweep
    old = smoke.profiles[0]
    assert old.server["model_concurrency_limiter"]["tier_limits"]["7-13B"]["queue_depth"] >= 1
    assert old.guide and old.guide.success_rate == pytest.approx(0.70)
    assert camp.load_campaign(camp.find("vision")).profiles[0].profile == "guide-promise"


def test_smoke_fits_its_budget_and_quick_shrinks_the_sweep() -> None:
    assert camp.load_campaign(camp.find("smoke")).estimated_s() <= 40
    default = camp.load_campaign(camp.find("default"))
    quick = default.quick_form()
    assert (
        quick.sweep_spec.points < default.sweep_spec.points
        and quick.sweep_spec.budget_min < default.sweep_spec.budget_min
    )
    assert quick.probe_spec.first_step_s <= default.probe_spec.first_step_s
    assert quick.slo == default.slo  # the same rules, fewer and shorter runs


def test_overlay_merges_overrides_into_the_profile(tmp_path: Path) -> None:
    spec = camp.load_campaign(camp.find("smoke")).profiles[0]
    overlay = yaml.safe_load(camp.write_overlay(spec, tmp_path).read_text())
    assert overlay["compat"] == "v1.1.1" and overlay["mlx"]["concurrency_limit"] == 1
    limiter = overlay["model_concurrency_limiter"]
    assert limiter["tier_limits"]["7-13B"] == {"max_concurrent": 1, "queue_depth": 2, "queue_timeout_ms": 150}
    assert (limiter["error_mode"], limiter["tier_source"], limiter["tier_table"]) == (
        "http",
        "name",
        "code_defaults",
    )


def test_overlay_carries_the_derived_values(tmp_path: Path) -> None:
    spec = camp.load_campaign(camp.find("default")).profiles[0]
    derived = camp.derived_overrides(spec, {"single_e2e_ms": 250.0})
    overlay = yaml.safe_load(camp.write_overlay(spec, tmp_path, derived).read_text())
    assert overlay["model_concurrency_limiter"]["tier_limits"]["7-13B"] == {
        "queue_depth": 10,
        "queue_timeout_ms": 2000,
    }
    assert overlay["mlx"]["device_sync_every_step"] is False


def test_locust_arguments() -> None:
    load = camp.LoadSpec(
        users=48, arrival="poisson", rate=2.5, warmup_s=5, duration_s=65, stop_timeout_s=4, slo_e2e_s=2.5
    )
    args = load.locust_args("v1.1.1")
    assert args[args.index("-t") + 1] == "70s"  # warm-up + measured window
    assert args[args.index("--arrival") + 1] == "poisson" and args[args.index("--rate") + 1] == "2.5"
    assert args[args.index("-u") + 1] == "48" and "--ignore-eos" in args and args[-1] == "ChatStreamUser"
    assert args[args.index("--label") + 1] == "v1.1.1" and args[args.index("--stop-timeout") + 1] == "4"
    assert args[args.index("--slo-e2e-ms") + 1] == "2500.0" and "--slo-ttft-ms" not in args


def test_profile_load_overrides_the_campaign_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "load": {"users": 4, "duration_s": 5},
                "profiles": [{"name": "a", "profile": "v1.2.0", "load": {"users": 8, "max_tokens": 16}}],
            }
        )
    )
    load = camp.load_campaign(path).load_for(camp.load_campaign(path).profiles[0])
    assert (load.users, load.max_tokens, load.duration_s) == (8, 16, 5)


LOAD = "load: {users: 1, duration_s: 1}\n"
ONE = "profiles: [{name: a, profile: v1.2.0}]\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("name: x\nprofiles: []\nload: {users: 1, duration_s: 1}\n", "'profiles'"),
        ("name: x\nload: {users: 1, duration_s: 1}\nprofiles: [{name: a, profile: v9.9.9}]\n", "v9.9.9"),
        ("name: x\nload: {users: 0, duration_s: 1}\nprofiles: [{name: a, profile: v1.2.0}]\n", "users"),
        (
            "name: x\nload: {users: 1, duration_s: 1, userz: 2}\nprofiles: [{name: a, profile: v1.2.0}]\n",
            "userz",
        ),
        ("name: x\nload: {users: 1}\nprofiles: [{name: a, profile: v1.2.0}]\n", "duration_s"),
        (
            "name: x\nrepeats: two\n" + LOAD + ONE,
            "repeats",
        ),
        (
            "name: x\n" + LOAD + "profiles: [{name: a, profile: v1.2.0}, {name: a, profile: v1.1.1}]\n",
            "unique",
        ),
        (
            "name: x\nload: {users: 1, duration_s: 1, arrival: poisson}\n" + ONE,
            "rate",
        ),
        ("name: [unclosed\n", "not valid YAML"),
        ("just text\n", "must be a mapping"),
        ("name: x\n" + LOAD + ONE + "sweep: {lowest: {of: x, times: 1}}\n", "sweep"),
        ("name: x\n" + LOAD + ONE + "probe: {step_s: {of: single_e2e_s, times: 2}}\n", "needs all of"),
    ],
)
def test_malformed_campaign_exits_2_naming_the_file(
    tmp_path: Path, capsys, content: str, problem: str
) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(content)
    assert main(["--campaign", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and problem in err


def test_missing_campaign_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["--campaign", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "none.yaml: cannot read campaign file" in capsys.readouterr().err


def test_report_only_rebuilds_the_headline_from_earlier_runs(tmp_path: Path, capsys) -> None:
    """Known runs in a reproduction folder give a known headline table, with the guide's figures beside."""
    from tests.support.reports_factory import outcome_mix, write_synthetic_run

    out = tmp_path / "repro"
    write_synthetic_run(out / "runs" / "v1.1.1" / "rep1", outcome_mix(7, 1, 2, 0), label="v1.1.1")
    write_synthetic_run(out / "runs" / "v1.2.0" / "rep1", outcome_mix(10), label="v1.2.0")
    (out / "campaign.yaml").write_text(camp.find("smoke").read_text())
    assert main(["--out", str(out), "--report-only"]) == 0
    headline = (out / "headline.md").read_text()
    assert "| Throughput (output tok/s) | 70.0 | 75.73 | 100.0 | ~79 |" in headline
    assert "| Success rate | 70.0 % | 70.0 % | 100.0 % | 100.0 % |" in headline
    assert "| Rejections | 10.0 % | 12.0 % | 0.0 % | 0.0 % |" in headline
    assert "| Timeouts | 20.0 % | 18.0 % | 0.0 % | 0.0 % |" in headline
    assert "measured +42.9 % (guide: +4.3 %)" in headline
    assert (out / "report" / "report.html").is_file()
    assert "| Success rate |" in capsys.readouterr().out


def test_report_only_without_runs_is_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--report-only", "--campaign", "smoke"]) == 2
    assert "no earlier runs to report on" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--url", "localhost:8080"], "--url 'localhost:8080'"),
        (["--url", "http://127.0.0.1:1", "--label", "a b"], "--label 'a b'"),
    ],
)
def test_bad_external_target_exits_2(tmp_path: Path, capsys, args: list[str], problem: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and problem in capsys.readouterr().err


def test_quick_and_url_need_a_sweep_campaign(tmp_path: Path, capsys) -> None:
    assert main(["--campaign", "smoke", "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "need a sweep campaign" in capsys.readouterr().err


def test_a_model_no_server_could_load_is_an_option_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--model: model" in capsys.readouterr().err and not (tmp_path / "out").exists()
