"""A campaign file (config/campaigns/*.yaml): which server profiles to run, under what load, how often,
and the figures a document claimed for them. Validated once; any problem is BadInput naming the file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reports.errors import BadInput, read_yaml
from reports.gate import validation_message

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
CAMPAIGNS_DIR = REPO / "config" / "campaigns"
PROFILES_DIR = REPO / "config" / "profiles"
DEFAULT_CAMPAIGN = CAMPAIGNS_DIR / "default.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoadSpec(_Strict):
    """The Locust load of one run (`python -m locust -f loadtest --headless ...`)."""

    scenario: str = "ChatStreamUser"
    users: int = Field(ge=1, le=4096)
    spawn_rate: float | None = Field(None, gt=0)  # default: every user at once
    arrival: Literal["closed", "constant", "poisson"] = "closed"
    rate: float | None = Field(None, gt=0)
    seed: int = 0  # prompts and Poisson arrivals: the same for every profile and repeat
    warmup_s: float = Field(0.0, ge=0)  # excluded from the results, before the measured window
    duration_s: float = Field(gt=0, le=3600)  # the measured window
    max_tokens: int = Field(128, ge=1)
    ignore_eos: bool = True  # fixed-length replies: the tiny model may otherwise stop at once
    prompt_tokens: int = Field(64, ge=1)
    think_time_s: float = Field(0.0, ge=0)
    request_timeout_s: float = Field(60.0, gt=0)
    extra_args: list[str] = []

    @model_validator(mode="after")
    def _rate_for_open_loop(self) -> LoadSpec:
        if self.arrival != "closed" and self.rate is None:
            raise ValueError(f"arrival {self.arrival!r} needs a rate (requests/s)")
        return self

    def locust_args(self, host: str, run_dir: Path, label: str) -> list[str]:
        run_time_s = round(self.warmup_s + self.duration_s)
        args = [
            "--headless",
            "--host", host,
            "-u", str(self.users),
            "-r", f"{self.spawn_rate or self.users:g}",
            "-t", f"{run_time_s}s",
            # In-flight requests may finish after the end rather than be cut and left uncounted.
            "--stop-timeout", f"{self.request_timeout_s:g}",
            "--run-dir", str(run_dir),
            "--label", label,
            "--arrival", self.arrival,
            "--max-tokens", str(self.max_tokens),
            "--prompt-tokens", str(self.prompt_tokens),
            "--seed", str(self.seed),
            "--warmup-s", f"{self.warmup_s:g}",
            "--think-time-s", f"{self.think_time_s:g}",
            "--request-timeout-s", f"{self.request_timeout_s:g}",
        ]  # fmt: skip
        if self.rate is not None:
            args += ["--rate", f"{self.rate:g}"]
        if self.ignore_eos:
            args.append("--ignore-eos")
        return [*args, *self.extra_args, self.scenario]


class GuideFigures(_Strict):
    """What a document claimed for a profile (shown beside the measured figures). Rates are fractions."""

    output_tokens_per_s: float | None = None
    output_tokens_per_s_text: str | None = None  # e.g. "~79" when the claim is approximate
    success_rate: float | None = Field(None, ge=0, le=1)
    rejection_rate: float | None = Field(None, ge=0, le=1)
    timeout_rate: float | None = Field(None, ge=0, le=1)


class ProfileSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")  # the label of its runs
    profile: str  # a name in config/profiles/ or a YAML path (relative to the repository)
    server: dict[str, Any] = {}  # merged over the profile, section by section
    load: dict[str, Any] = {}  # merged over the campaign's load for this profile
    guide: GuideFigures | None = None


class Campaign(_Strict):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    config: str = "config/runtime.yaml"  # the server's base config, relative to the repository
    repeats: int = Field(1, ge=1, le=20)
    load: dict[str, Any]
    profiles: list[ProfileSpec] = Field(min_length=1)
    guide_source: str | None = None  # where the guide's figures come from

    @model_validator(mode="after")
    def _check(self) -> Campaign:
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        for spec in self.profiles:
            try:
                self.load_for(spec)  # every merged load must validate
            except ValidationError as exc:
                raise ValueError(f"load of profile {spec.name!r}: {validation_message(exc)}") from None
        return self

    def load_for(self, spec: ProfileSpec) -> LoadSpec:
        return LoadSpec.model_validate({**self.load, **spec.load})

    @property
    def config_path(self) -> Path:
        return resolve(self.config)

    def estimated_s(self, startup_s: float = 5.0) -> float:
        per_run = [self.load_for(p).warmup_s + self.load_for(p).duration_s + startup_s for p in self.profiles]
        return self.repeats * sum(per_run)


def resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO / candidate


def profile_file(name_or_path: str) -> Path:
    if name_or_path.endswith((".yaml", ".yml")):
        return resolve(name_or_path)
    return PROFILES_DIR / f"{name_or_path}.yaml"


def find(name_or_path: str | Path) -> Path:
    """A campaign by path, or by name in config/campaigns/ (`smoke`)."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = CAMPAIGNS_DIR / f"{name_or_path}.yaml"
    return path


def load_campaign(path: Path) -> Campaign:
    raw = read_yaml(path, "campaign file")
    try:
        campaign = Campaign.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(f"{path}: {validation_message(exc)}") from None
    if not campaign.config_path.is_file():
        raise BadInput(f"{path}: 'config': no such server config {campaign.config_path}")
    for spec in campaign.profiles:
        if not profile_file(spec.profile).is_file():
            known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
            raise BadInput(f"{path}: profile {spec.profile!r} of {spec.name!r} not found (known: {known})")
    return campaign


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Section-by-section merge, as the server overlays a profile on its config."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def write_overlay(spec: ProfileSpec, folder: Path) -> Path:
    """The profile with the campaign's server overrides, as one overlay file for `--profile PATH`."""
    source = profile_file(spec.profile)
    overlay = merge(read_yaml(source, "profile"), spec.server)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.yaml"
    header = f"# {spec.profile} ({source.name}) with the campaign's server overrides; passed as --profile\n"
    path.write_text(header + yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    return path
