"""A campaign file (config/campaigns/*.yaml): which server profiles to run, under what load, how often,
and the figures a document claimed for them. Validated once; any problem is BadInput naming the file."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from configkit import REPO_ROOT, RUNTIME_CONFIG, Strict, merge, read_yaml, validation_message
from loadgen.options import DEFAULT_SCENARIO, LoadSettings
from reports.errors import BadInput

log = logging.getLogger(__name__)

CAMPAIGNS_DIR = REPO_ROOT / "config" / "campaigns"
PROFILES_DIR = REPO_ROOT / "config" / "profiles"
# A campaign's load takes the load generator's own defaults, but for `ignore_eos` (see LoadSpec).
LOAD_DEFAULTS = LoadSettings()
DEFAULT_CAMPAIGN = CAMPAIGNS_DIR / "default.yaml"


class LoadSpec(Strict):
    """The Locust load of one run (`python -m locust -f loadtest --headless ...`)."""

    scenario: str = DEFAULT_SCENARIO
    users: int = Field(ge=1, le=4096)
    spawn_rate: float | None = Field(None, gt=0)  # default: every user at once
    arrival: Literal["closed", "constant", "poisson", "poisson-exact"] = "closed"
    rate: float | None = Field(None, gt=0)
    seed: int = LOAD_DEFAULTS.seed  # prompts and Poisson arrivals: the same for every profile and repeat
    warmup_s: float = Field(0.0, ge=0)  # excluded from the results, before the measured window
    duration_s: float = Field(gt=0, le=3600)  # the measured window
    max_tokens: int = Field(LOAD_DEFAULTS.max_tokens, ge=1)
    ignore_eos: bool = True  # fixed-length replies: the tiny model may otherwise stop at once
    prompt_tokens: int = Field(LOAD_DEFAULTS.prompt_tokens, ge=1)
    think_time_s: float = Field(0.0, ge=0)
    request_timeout_s: float = Field(LOAD_DEFAULTS.request_timeout_s, gt=0)
    stop_timeout_s: float | None = Field(
        None, ge=0
    )  # after the run, for in-flight replies (default: the above)
    slo_ttft_s: float | None = Field(None, gt=0)  # goodput SLOs written into the run's summary.json
    slo_e2e_s: float | None = Field(None, gt=0)
    extra_args: list[str] = []

    @model_validator(mode="after")
    def _rate_for_open_loop(self) -> LoadSpec:
        if self.arrival != "closed" and self.rate is None:
            raise ValueError(f"arrival {self.arrival!r} needs a rate (requests/s)")
        return self

    def locust_args(self, label: str) -> list[str]:
        """The load's flags; the host, run folder and --headless are orchestrate.processes.locust_cmd's."""
        run_time_s = round(self.warmup_s + self.duration_s)
        # Locust takes whole seconds here.
        stop_s = self.stop_timeout_s if self.stop_timeout_s is not None else self.request_timeout_s
        args = [
            "-u", str(self.users),
            "-r", f"{self.spawn_rate or self.users:g}",
            "-t", f"{run_time_s}s",
            # In-flight requests may finish after the end rather than be cut and left uncounted.
            "--stop-timeout", str(math.ceil(stop_s)),
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
        if self.slo_ttft_s is not None:
            args += ["--slo-ttft-ms", f"{1000 * self.slo_ttft_s:.1f}"]
        if self.slo_e2e_s is not None:
            args += ["--slo-e2e-ms", f"{1000 * self.slo_e2e_s:.1f}"]
        return [*args, *self.extra_args, self.scenario]


class GuideFigures(Strict):
    """What a document claimed for a profile (shown beside the measured figures). Rates are fractions."""

    output_tokens_per_s: float | None = None
    output_tokens_per_s_text: str | None = None  # e.g. "~79" when the claim is approximate
    success_rate: float | None = Field(None, ge=0, le=1)
    rejection_rate: float | None = Field(None, ge=0, le=1)
    timeout_rate: float | None = Field(None, ge=0, le=1)


# What a rule can be derived from: figures measured by the capacity probe (orchestrate/probe.py).
Quantity = Literal[
    "single_ttft_s",  # single-stream time to first token (median over the profiles' one-stream steps)
    "single_e2e_s",  # single-stream end-to-end latency, the same way
    "single_e2e_ms",
    "min_capacity_rps",  # the lowest saturated throughput among the profiles (successful requests/s)
    "max_capacity_rps",  # the highest
    "slo_ttft_s",  # the campaign's SLOs, once derived
    "slo_e2e_s",
]


class Rule(Strict):
    """value = times x a probed quantity, then bounded by at_least / at_most (time-budget bounds)."""

    of: Quantity
    times: float = Field(gt=0)
    at_least: float | None = None
    at_most: float | None = None

    def value(self, quantities: dict[str, float]) -> float:
        value = self.times * quantities[self.of]
        if self.at_least is not None:
            value = max(value, self.at_least)
        if self.at_most is not None:
            value = min(value, self.at_most)
        return value

    def describe(self) -> str:
        bounds = "".join(
            f", {word} {bound:g}"
            for word, bound in (("at least", self.at_least), ("at most", self.at_most))
            if bound is not None
        )
        return f"{self.times:g} x {self.of}{bounds}"


class ProfileSpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")  # the label of its runs
    profile: str  # a name in config/profiles/ or a YAML path (relative to the repository)
    server: dict[str, Any] = {}  # merged over the profile, section by section
    load: dict[str, Any] = {}  # merged over the campaign's load for this profile
    guide: GuideFigures | None = None
    search_guide_mix: bool = False  # the sweep searches the load where this profile shows the guide's mix
    # Fixed server values that go with the derived ones (and, like them, not with --real-limits), in the
    # same dotted form: e.g. v1.1.1's queue depth.
    derive_values: dict[str, int] = {}
    # Server keys derived from the probe (sweep campaigns): dotted key -> rule; `*` in a key stands for
    # every tier of model_concurrency_limiter.tier_limits. Values are rounded to integers.
    derive: dict[str, Rule] = {}


class ProbeSpec(Strict):
    """The capacity probe: per profile, a closed loop at concurrency 1, then x`growth` per step, until the
    served token rate stops rising: a step that adds less than `rise_below` of the best so far, or whose
    interval does not reach above the best's estimate, is flat; `patience` flat steps end the probe."""

    first_step_s: float = Field(8.0, gt=0)  # the one-stream step (nothing is known yet to size it)
    first_warmup_s: float = Field(2.0, ge=0)  # before it: the first requests compile kernels
    min_first_step_requests: int = Field(5, ge=1)  # fewer completions: the first step runs again, 2x longer
    step_s: Rule  # the window of each further step (tokens count as they arrive: no whole replies needed)
    growth: int = Field(2, ge=2, le=16)  # concurrency multiplier from one step to the next
    max_concurrency: int = Field(64, ge=1)
    rise_below: float = Field(0.05, ge=0)
    # Steps in a row without that rise before the probe stops: batching often gains nothing at 2
    # streams (prefill and decode compete) and only pays from 4 or 8.
    patience: int = Field(3, ge=1)
    # A step in which the server refused requests (429/503) ends it too: that is the profile's admission
    # limit (v1.2.0's 10 streams), and more users would only retry into a storm of refusals.
    stop_on_refusals: bool = True


class SloSpec(Strict):
    """Goodput SLOs derived from the probe: a success counts as good within both."""

    ttft_s: Rule
    e2e_s: Rule


class SweepSpec(Strict):
    """Open-loop rates from `lowest` to `highest` (geometric spacing), each an exact Poisson schedule
    (poisson-exact) shared by every profile; then knee bisection and the search for the guide's mix."""

    points: int = Field(4, ge=2, le=30)
    lowest: Rule
    highest: Rule
    comparison: Rule  # the headline's load when no guide mix is searched (e.g. --url)
    # A run's length before the budget scales it: long enough for `min_requests_per_point` arrivals and
    # at least `min_window_s` (past capacity a queue must fill before anything is steady), at most
    # `max_window_s`. MSER-5 then drops the unsettled start (reports.point_figures).
    min_requests_per_point: int = Field(30, ge=1)
    min_window_s: float = Field(24.0, gt=0)
    max_window_s: float = Field(90.0, gt=0)
    request_timeout_s: Rule  # the client's deadline for one reply
    stop_timeout_s: Rule  # how long in-flight requests may finish after the run
    users_headroom: float = Field(1.5, ge=1)  # users = ceil(rate x request timeout x headroom): never behind
    max_users: int = Field(2048, ge=1)
    follow_share: float = Field(0.9, gt=0, le=1)  # a point holds: served/offered at least this...
    slo_attainment: float = Field(0.9, gt=0, le=1)  # ...and this share within the SLO (with confidence)
    knee_steps: int = Field(1, ge=0, le=8)  # bisection runs per profile between holds and breaks
    guide_steps: int = Field(3, ge=0, le=8)  # runs of the guide profile searching the guide's mix
    # The guide search's runs and the other profiles' runs at the load it finds are the headline: this
    # many times a grid run's length (past capacity, requests come in correlated runs and the shares'
    # intervals narrow only with time).
    guide_window_factor: float = Field(2.0, ge=1, le=4)
    target_half_width: float = Field(0.08, gt=0, lt=0.5)  # success share's half-width a point aims at
    budget_min: float = Field(15.0, gt=0)  # the whole reproduction, probe included


class QuickSpec(Strict):
    """What --quick changes (the same rules, fewer and shorter runs)."""

    points: int = Field(3, ge=2)
    budget_min: float = Field(4.0, gt=0)
    min_window_s: float = Field(10.0, gt=0)
    min_requests_per_point: int = Field(12, ge=1)
    knee_steps: int = Field(0, ge=0)
    guide_steps: int = Field(1, ge=0)
    first_step_s: float = Field(4.0, gt=0)
    # The server's two warm-up requests have compiled the kernels already; the full form adds 2 s more.
    first_warmup_s: float = Field(0.0, ge=0)
    min_first_step_requests: int = Field(3, ge=1)
    step_s_at_most: float = Field(4.0, gt=0)
    growth: int = Field(4, ge=2)  # 1, 4, 16: the serialized profiles stop after two steps
    patience: int = Field(1, ge=1)


class Campaign(Strict):
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    # The server's base config, relative to the repository.
    config: str = str(RUNTIME_CONFIG.relative_to(REPO_ROOT))
    repeats: int = Field(1, ge=1, le=20)
    load: dict[str, Any]
    profiles: list[ProfileSpec] = Field(min_length=1)
    guide_source: str | None = None  # where the guide's figures come from
    # Sweep campaigns (the default): probe, then sweep offered load relative to the measured capacity.
    probe: ProbeSpec | None = None
    slo: SloSpec | None = None
    sweep: SweepSpec | None = None
    quick: QuickSpec = QuickSpec()
    # true: apply each profile's `derive` rules; false (--real-limits): the profiles' own values
    derived_limits: bool = True

    @model_validator(mode="after")
    def _check(self) -> Campaign:
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        parts = [self.probe is not None, self.slo is not None, self.sweep is not None]
        if any(parts) and not all(parts):
            raise ValueError("a sweep campaign needs all of 'probe', 'slo' and 'sweep'")
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

    @property
    def is_sweep(self) -> bool:
        return self.sweep is not None

    # A sweep campaign has all three sections (checked at load): these give them without the None.
    @property
    def probe_spec(self) -> ProbeSpec:
        if self.probe is None:
            raise ValueError(f"campaign {self.name!r} has no 'probe' section (not a sweep campaign)")
        return self.probe

    @property
    def slo_spec(self) -> SloSpec:
        if self.slo is None:
            raise ValueError(f"campaign {self.name!r} has no 'slo' section (not a sweep campaign)")
        return self.slo

    @property
    def sweep_spec(self) -> SweepSpec:
        if self.sweep is None:
            raise ValueError(f"campaign {self.name!r} has no 'sweep' section (not a sweep campaign)")
        return self.sweep

    def quick_form(self) -> Campaign:
        """The same campaign with --quick's fewer points and shorter windows."""
        if not self.is_sweep:
            return self
        q = self.quick
        probe = self.probe_spec.model_copy(
            update={
                "first_step_s": q.first_step_s,
                "first_warmup_s": q.first_warmup_s,
                "min_first_step_requests": q.min_first_step_requests,
                "step_s": self.probe_spec.step_s.model_copy(update={"at_most": q.step_s_at_most}),
                "growth": q.growth,
                "patience": q.patience,
            }
        )
        sweep = self.sweep_spec.model_copy(
            update={
                "points": q.points,
                "budget_min": q.budget_min,
                "min_window_s": q.min_window_s,
                "min_requests_per_point": q.min_requests_per_point,
                "knee_steps": q.knee_steps,
                "guide_steps": q.guide_steps,
            }
        )
        return self.model_copy(update={"probe": probe, "sweep": sweep, "name": f"{self.name} (quick)"})

    def estimated_s(self, startup_s: float = 5.0) -> float:
        per_run = [self.load_for(p).warmup_s + self.load_for(p).duration_s + startup_s for p in self.profiles]
        return self.repeats * sum(per_run)


def resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


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
    raw = read_yaml(path, "campaign file", BadInput)
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


TIERS = ("30B+", "13-27B", "7-13B", "3-7B", "<3B")


def derived_overrides(spec: ProfileSpec, quantities: dict[str, float]) -> dict[str, Any]:
    """The profile's `derive` rules evaluated on the probed quantities, as a nested server mapping."""
    out: dict[str, Any] = {}
    values = {key: max(1, round(rule.value(quantities))) for key, rule in spec.derive.items()}
    for dotted, value in {**spec.derive_values, **values}.items():
        keys = [dotted.replace("*", tier) for tier in TIERS] if "*" in dotted else [dotted]
        for key in keys:
            node = out
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return out


def write_overlay(spec: ProfileSpec, folder: Path, derived: dict[str, Any] | None = None) -> Path:
    """The profile with the campaign's server overrides (and the values derived from the probe), as one
    overlay file for `--profile PATH`."""
    source = profile_file(spec.profile)
    overlay = merge(merge(read_yaml(source, "profile", BadInput), spec.server), derived or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.yaml"
    header = f"# {spec.profile} ({source.name}) with the campaign's server overrides; passed as --profile\n"
    path.write_text(header + yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    return path
