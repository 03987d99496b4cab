"""Before the clock starts: wait for the server, find the model, pick how prompt lengths are made.

Readiness: `/health` answers 200, or (a server without a health endpoint) `/v1/models` lists a model,
polled up to `--ready-timeout-s`. A `/health` that answers 503 means "loading": keep waiting.
The model: `--model`, else the first id `/v1/models` lists; a server that has that endpoint but lists no
model stops the run (never send requests without a model id to a server that names its models).
Prompt lengths (summary.json workload.prompt_length_method): `--tokenizer` ("tokenizer"), else the
server's `POST /tokenize` ("server_tokenize"), else a fit of the server's usage.prompt_tokens on a few
calibration requests sent now, before the run ("calibrated", approximate), else words ("words").
"""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen import side_requests
from loadgen.options import LoadSettings
from loadgen.prompts import (
    CalibratedPrompts,
    ExactPrompts,
    FilePrompts,
    PromptError,
    PromptSource,
    SyntheticPrompts,
    calibration_texts,
    fit_lengths,
)
from loadgen.tokens import (
    LocalTokenizer,
    TokenCounter,
    TokenizerError,
    post_json,
    probe_server_tokenizer,
    request_json,
)
from loadgen.workloads import setup as workloads
from runfolder import metadata as meta

log = logging.getLogger(__name__)

POLL_S = 0.25  # between readiness probes
PROBE_TIMEOUT_S = 5.0  # one probe's own limit (less when the readiness deadline is nearer)
CALIBRATION_TIMEOUT_S = 60.0


class NotReady(Exception):
    """The server never became ready, or cannot be used; the message names the URL. Exit code 2."""


@dataclass
class Target:
    """What the run learned about the server before it started."""

    model: str | None
    server: dict[str, Any]
    counter: TokenCounter | None = None
    prompts: Any = None
    length_method: str = "words"
    prefixes: Any = None  # the shared-prefix pool (loadgen.workloads.shared_prefix), None when off
    outputs: Any = None  # --check-outputs: the references (loadgen.output_check.OutputCheck), None when off


def _probe(
    url: str, headers: dict[str, str], timeout_s: float, purpose: str = side_requests.READINESS
) -> tuple[int, Any]:
    """(status, JSON or None) of a GET; status 0 when nothing answered."""
    return request_json(urllib.request.Request(url, headers=headers), timeout_s, purpose)


def wait_until_ready(base_url: str, headers: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Poll until ready; returns {"models": [...] or None (no models endpoint), "health": doc}."""
    base = base_url.rstrip("/")
    deadline = time.monotonic() + timeout_s
    announced = False
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        per_probe = max(0.1, min(PROBE_TIMEOUT_S, left))
        health_status, health = _probe(f"{base}/health", headers, per_probe)
        models_status, models_doc = _probe(f"{base}/v1/models", headers, per_probe)
        models = meta.model_ids(models_doc) if models_status == 200 and isinstance(models_doc, dict) else None
        if health_status == 200:
            return {"models": models, "health": health, "models_endpoint": models is not None}
        # No health endpoint (404 and the like) but a models listing with a model: ready too.
        health_says_wait = health_status in (0, 503) or health_status >= 500
        if models and not health_says_wait:
            return {"models": models, "health": health, "models_endpoint": True}
        last = (
            f"/health {health_status or 'no answer'}, /v1/models "
            f"{models_status or 'no answer'}{'' if models is None else f' listing {len(models)} model(s)'}"
        )
        if not announced:
            log.info("waiting up to %g s for the server at %s to be ready (%s)", timeout_s, base, last)
            announced = True
        if time.monotonic() + POLL_S > deadline:
            raise NotReady(
                f"the server at {base} was not ready within --ready-timeout-s {timeout_s:g} "
                f"(last: {last}); no request was sent"
            )
        time.sleep(POLL_S)


def server_info(base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The models and profile a server reports (GET /v1/models and /health), for metadata.json."""
    base = base_url.rstrip("/")
    _status, models_doc = _probe(f"{base}/v1/models", headers, PROBE_TIMEOUT_S, side_requests.SERVER_INFO)
    _status, health = _probe(f"{base}/health", headers, PROBE_TIMEOUT_S, side_requests.SERVER_INFO)
    profile = health.get("profile") if isinstance(health, dict) else None
    return {"models": meta.model_ids(models_doc), "profile": profile, "health": health}


def choose_model(settings: LoadSettings, base_url: str, ready: dict[str, Any]) -> str | None:
    if settings.model:
        return settings.model
    models = ready.get("models")
    if models:
        first: str = models[0]
        return first
    if ready.get("models_endpoint"):
        raise NotReady(
            f"{base_url.rstrip('/')}/v1/models lists no model and --model is not set: "
            "no request was sent (a request without a model id would be refused)"
        )
    log.warning("%s has no /v1/models and --model is not set: requests omit 'model'", base_url)
    return None


def token_counter(
    settings: LoadSettings, base_url: str, model: str | None, headers: dict[str, str]
) -> TokenCounter | None:
    if settings.tokenizer:
        try:
            return LocalTokenizer(settings.tokenizer)
        except TokenizerError as exc:
            raise NotReady(str(exc)) from None
    return probe_server_tokenizer(base_url, model, headers)


def _usage_prompt_tokens(
    base_url: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> int | None:
    url = base_url.rstrip("/") + path
    status, doc = post_json(url, body, headers, CALIBRATION_TIMEOUT_S, side_requests.CALIBRATION)
    usage = doc.get("usage") if status == 200 and isinstance(doc, dict) else None
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


def calibrate(
    settings: LoadSettings, base_url: str, model: str | None, headers: dict[str, str]
) -> CalibratedPrompts | None:
    """Two short requests per endpoint (max_tokens 1), before the clock: a fit of usage.prompt_tokens."""
    rng = random.Random(f"calibration-{settings.seed}")
    texts = calibration_texts(rng, settings.prompt_tokens)
    fits = {}
    for kind, path in (("chat", "/v1/chat/completions"), ("completion", "/v1/completions")):
        samples = []
        for text in texts:
            body: dict[str, Any] = {"max_tokens": 1}
            if model:
                body["model"] = model
            if kind == "chat":
                body["messages"] = [{"role": "user", "content": text}]
            else:
                body["prompt"] = text
            tokens = _usage_prompt_tokens(base_url, path, body, headers)
            if tokens is None:
                break
            samples.append((len(text.split()), tokens))
        if len(samples) == len(texts):
            fits[kind] = fit_lengths(samples)
    if not fits:
        return None
    # One endpoint without usage (e.g. no /v1/completions): the other's fit is the best guess.
    fallback = next(iter(fits.values()))
    fits = {kind: fits.get(kind, fallback) for kind in ("chat", "completion")}
    log.info(
        "prompt lengths calibrated on the server's usage: chat %.2f + %.2f tokens/word",
        fits["chat"].intercept,
        fits["chat"].per_word,
    )
    s = settings
    return CalibratedPrompts(fits, s.prompt_tokens, s.prompt_dist, s.prompt_tokens_spread)  # type: ignore[arg-type]


def build_prompts(
    settings: LoadSettings, counter: TokenCounter | None, calibrated: CalibratedPrompts | None = None
) -> PromptSource:
    s = settings
    if s.prompt_file:
        return FilePrompts(Path(s.prompt_file), counter)
    if counter is not None:
        return ExactPrompts(counter, s.prompt_tokens, s.prompt_dist, s.prompt_tokens_spread)  # type: ignore[arg-type]
    if calibrated is not None:
        return calibrated
    return SyntheticPrompts(s.prompt_tokens, s.prompt_dist, s.prompt_tokens_spread)  # type: ignore[arg-type]


def check_context(settings: LoadSettings, counter: TokenCounter | None, prompts: PromptSource) -> None:
    """--max-tokens against the model's context: the longest prompt plus its max_tokens must fit."""
    limit = getattr(counter, "max_model_len", None)
    if not limit:
        return
    if isinstance(prompts, FilePrompts):
        pairs = [(p.target_tokens or 0, p.max_tokens or settings.max_tokens) for p in prompts.prompts]
    else:
        longest = settings.prompt_tokens + (
            settings.prompt_tokens_spread * (3 if settings.prompt_dist == "normal" else 1)
            if settings.prompt_dist != "fixed"
            else 0
        )
        pairs = [(longest, settings.max_tokens)]
    worst = max(pairs, key=lambda pair: pair[0] + pair[1])
    if worst[0] + worst[1] > limit:
        what = f"{settings.prompt_file} max_tokens" if isinstance(prompts, FilePrompts) else "--max-tokens"
        raise NotReady(
            f"a prompt of {worst[0]} tokens plus {what} {worst[1]} exceeds the model's context of "
            f"{limit} tokens (max_model_len)"
        )


def prepare(
    settings: LoadSettings,
    base_url: str,
    headers: dict[str, str],
    *,
    model: str | None = None,
    wait: bool = True,
) -> Target:
    """Everything before the clock. `model` given (a worker told by the master): no model lookup."""
    if not base_url:
        raise NotReady("no target: pass --host URL (e.g. --host http://127.0.0.1:8080)")
    if wait:
        ready = wait_until_ready(base_url, headers, settings.ready_timeout_s)
        model = choose_model(settings, base_url, ready)
    server = server_info(base_url, headers)
    counter = token_counter(settings, base_url, model, headers)
    calibrated = None
    if counter is None and not settings.prompt_file:
        calibrated = calibrate(settings, base_url, model, headers)
    try:
        prompts = build_prompts(settings, counter, calibrated)
        check_context(settings, counter, prompts)
        prompts, prefixes = workloads.build(settings, counter, prompts)
    except (PromptError, TokenizerError) as exc:
        raise NotReady(str(exc)) from None
    method = getattr(prompts, "length_method", "words")
    log.info("prompt lengths: %s; model %s", method, model or "(none)")
    return Target(model, server, counter, prompts, method, prefixes)
