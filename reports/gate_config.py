"""The gates file (config/gates.yaml): what a run must be to count as evidence, the absolute limits, the
relative tests against a baseline and an optional noise prior. Every key is explained in docs/reports.md,
"CI performance gates"."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from configkit import Strict, read_yaml, validation_message
from reports.errors import BadInput


class EvidenceRules(Strict):
    """When a run is not evidence at all: the gate then exits 2 with the reason."""

    min_requests: int = Field(20, ge=1)  # per run
    max_cut_rate: float = Field(0.02, ge=0, le=1)  # requests still in flight when the run ended
    refuse_generator_behind: bool = True
    refuse_missing_worker_records: bool = True
    same_workload: bool = True  # baseline, candidate and their repeats offered the same load


class AbsoluteGates(Strict):
    """Each label of the candidate, on its mean over repeats. Rates are fractions of attempted requests."""

    min_success_rate: float | None = Field(None, ge=0, le=1)
    max_rejection_rate: float | None = Field(None, ge=0, le=1)
    max_timeout_rate: float | None = Field(None, ge=0, le=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_output_tokens_per_s: float | None = Field(None, ge=0)
    # Over attempted requests, failures counted as beyond any threshold (reports/evidence.py).
    max_ttft_p95_ms: float | None = Field(None, gt=0)
    # --check-outputs runs only (else "not measured"): a fraction of the checked replies, not of attempts.
    max_wrong_output_rate: float | None = Field(None, ge=0, le=1)


class RelativeGates(Strict):
    """Candidate against baseline, label by label, with the test of reports/stats.py."""

    max_throughput_drop_pct: float | None = Field(None, gt=0, lt=100)
    max_ttft_p95_rise_pct: float | None = Field(None, gt=0)
    confidence: float = Field(0.95, ge=0.5, lt=1)  # one-sided
    min_repeats: int = Field(1, ge=1)  # per side; fewer is refused
    pairing: Literal["auto", "off"] = "auto"  # auto: pair interleaved runs of equal count
    # The server's CPU-seconds per output token (server_usage.json; far less noise than wall-clock tok/s on
    # a shared machine) decides a throughput test that wall-clock tok/s leaves inconclusive, at the same
    # threshold in its own terms (a T % drop in tok/s is a T / (100 - T) rise in CPU per token), stated so.
    cpu_per_token_decides: bool = True
    # false: the TTFT test fails the gate when a rise is shown, but an inconclusive TTFT test does not make
    # the gate inconclusive (TTFT p95 on a shared 2-core runner moves 15-45 % from block to block).
    ttft_must_decide: bool = True


class FigureNoise(Strict):
    cv: float = Field(gt=0, lt=1)  # run-to-run, log scale
    pair_cv: float | None = Field(None, gt=0, lt=1)  # between consecutive runs


class NoisePriors(Strict):
    """The run-to-run noise expected before any repeat is seen (benchmarks/gate_noise.py measures it)."""

    prior_df: float = Field(0.0, ge=0)  # worth this many repeats; 0 (default): the job's own runs alone
    output_tokens_per_s: FigureNoise | None = None
    ttft_p95_s: FigureNoise | None = None


class GateConfig(Strict):
    schema_version: Literal[1] = 1
    evidence: EvidenceRules = EvidenceRules()
    absolute: AbsoluteGates = AbsoluteGates()
    relative: RelativeGates = RelativeGates()
    noise: NoisePriors = NoisePriors()
    labels: list[str] | None = None  # gate only these labels of the candidate (default: all)


def load_config(path: Path) -> GateConfig:
    raw = read_yaml(path, "gates file", BadInput)
    if not raw:  # an empty file would gate nothing and pass: refuse it
        raise BadInput(f"{path}: expected a mapping with 'absolute' and/or 'relative' sections")
    try:
        return GateConfig.model_validate(raw)
    except ValidationError as exc:
        raise BadInput(f"{path}: {validation_message(exc)}") from None
