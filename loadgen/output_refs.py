"""--check-outputs, before the clock: each check prompt sent alone, one at a time, with the very body the
users will send under load (greedy), and its reply kept as the reference (loadgen/output_check.py).

Done once per run, by the master or the single process, before any load: every reference is a
single-stream reply whatever the process count, and workers get the references with their configuration
(a worker recording its own would do it while other workers already load the server).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from loadgen import side_requests
from loadgen.options import LoadSettings
from loadgen.output_check import Encoder, OutputCheck, Reference, choose_prompts
from loadgen.transport import Connection, RequestSpec

log = logging.getLogger(__name__)


def encoder_of(counter: Any) -> Encoder | None:
    """Token ids from a local tokenizer (`--tokenizer`); the server's /tokenize would cost a request per
    reply under load, so without a local one replies are compared by characters."""
    return getattr(counter, "encode_text", None) if getattr(counter, "method", None) == "tokenizer" else None


def record(
    settings: LoadSettings,
    target: Any,
    user_classes: Sequence[type],
    host: str,
    headers: dict[str, str],
) -> OutputCheck:
    """Send every check prompt once per scenario, alone, and keep the replies (failures included)."""
    prompts = choose_prompts(target.prompts, settings.check_outputs_prompts, settings.seed)
    conn = Connection(host, timeout_s=settings.request_timeout_s, headers=headers)
    conn.token_counter, conn.ignore_eos = target.counter, settings.ignore_eos  # the same strict checks
    references = []
    try:
        for cls in user_classes:
            for index, prompt in enumerate(prompts):
                body = cls.reference_body(prompt, settings, target.model)  # type: ignore[attr-defined]
                spec = RequestSpec(
                    cls.scenario,  # type: ignore[attr-defined]
                    cls.path,  # type: ignore[attr-defined]
                    json.dumps(body).encode(),
                    cls.stream,  # type: ignore[attr-defined]
                    prompt.target_tokens,
                    body["max_tokens"],
                )
                rec = conn.exchange(spec, scheduled_ts_s=None)
                side_requests.LEDGER.add(side_requests.OUTPUT_REFERENCE, "POST", spec.path, rec.outcome)
                references.append(_reference(spec.scenario, index, rec, conn.last_reply_text))
    finally:
        conn.close()
    check = OutputCheck(prompts, references, settings.ignore_eos, encoder_of(target.counter))
    failed = sum(not r.usable for r in references)
    log.info(
        "output check: %d reference request(s) for %d prompt(s), %d failed; replies compared by %s",
        len(references), len(prompts), failed, check.compared_by,
    )  # fmt: skip
    if failed:
        log.warning("output check: %d reference request(s) failed; their prompts go unchecked", failed)
    return check


def _reference(scenario: str, index: int, rec: Any, text: str) -> Reference:
    return Reference(
        scenario=scenario,
        prompt_index=index,
        outcome=rec.outcome,
        outcome_detail=rec.outcome_detail,
        text=text,
        finish_reason=rec.finish_reason,
        output_tokens=rec.output_tokens,
        e2e_s=rec.e2e_s,
    )
