"""Campaign files: the shipped ones validate, overlays merge like the server's profiles, bad files exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reports import campaign as camp
from reports.reproduce import main


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_shipped_campaigns_validate(name: str) -> None:
    campaign = camp.load_campaign(camp.find(name))
    assert [p.name for p in campaign.profiles] == ["v1.1.1", "v1.2.0"]
    old = campaign.profiles[0]
    assert old.server["model_concurrency_limiter"]["tier_limits"]["<3B"]["queue_depth"] >= 1
    assert old.guide and old.guide.success_rate == pytest.approx(0.70)


def test_durations_fit_their_budget() -> None:
    assert 4 * 60 <= camp.load_campaign(camp.find("default")).estimated_s() <= 6 * 60
    assert camp.load_campaign(camp.find("smoke")).estimated_s() <= 40


def test_overlay_merges_overrides_into_the_profile(tmp_path: Path) -> None:
    spec = camp.load_campaign(camp.find("smoke")).profiles[0]
    overlay = yaml.safe_load(camp.write_overlay(spec, tmp_path).read_text())
    assert overlay["compat"] == "v1.1.1" and overlay["mlx"]["concurrency_limit"] == 1
    tiers = overlay["model_concurrency_limiter"]["tier_limits"]
    assert tiers["<3B"] == {"max_concurrent": 1, "queue_depth": 2, "queue_timeout_ms": 150}
    assert tiers["30B+"]["max_concurrent"] == 3  # the rest of v1.1.1's table is kept
    assert overlay["model_concurrency_limiter"]["error_mode"] == "http"


def test_locust_arguments(tmp_path: Path) -> None:
    campaign = camp.load_campaign(camp.find("default"))
    load = campaign.load_for(campaign.profiles[0])
    args = load.locust_args("http://127.0.0.1:1", tmp_path / "run", "v1.1.1")
    assert args[args.index("-t") + 1] == "70s"  # warm-up + measured window
    assert args[args.index("--arrival") + 1] == "poisson" and args[args.index("--rate") + 1] == "2.5"
    assert args[args.index("-u") + 1] == "48" and "--ignore-eos" in args and args[-1] == "ChatStreamUser"
    assert args[args.index("--label") + 1] == "v1.1.1"


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
    from tests.reports_factory import outcome_mix, write_synthetic_run

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
