"""One simulated client's HTTP connection, and one request timed from schedule to outcome.

gevent-based (geventhttpclient, as Locust's FastHttpUser), reading SSE line by line: a block read
(`iter_content(1024)`) would wait for bytes and distort TTFT. The whole request, stream included, runs
under one gevent.Timeout, because a socket timeout only bounds each single read.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass
from typing import Any

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse
from geventhttpclient.url import URL

from loadgen import classify
from loadgen.options import LoadSettings
from loadgen.prompts import Prompt
from loadgen.receive_stamps import StampedLines, request_stamped
from loadgen.responses import StreamParser, error_info_from_bytes, judge_tokens, parse_body
from loadgen.tokens import TokenCounter, TokenizerError
from runfolder.records import Outcome, RequestRecord, UsageSource

log = logging.getLogger(__name__)

DRAIN_S = 0.5  # after [DONE], how long to wait for the body's end before dropping the connection


@dataclass(frozen=True, slots=True)
class RequestSpec:
    scenario: str
    path: str
    body: bytes
    stream: bool
    prompt_tokens_target: int | None = None
    max_tokens: int | None = None
    # Workload tags copied into the record: see runfolder.records.
    conversation_id: str | None = None
    turn_index: int | None = None
    shared_prefix_id: int | None = None
    # --check-outputs: the index of the check prompt sent (loadgen/output_check.py), else None.
    output_ref: int | None = None


def common_body(settings: LoadSettings, model: str | None, stream: bool, prompt: Prompt) -> dict[str, Any]:
    """The body fields every scenario shares (the scenario adds its own: messages, prompt, images)."""
    body: dict[str, Any] = {"max_tokens": prompt.max_tokens or settings.max_tokens}
    if model:
        body["model"] = model
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if settings.ignore_eos:
        body["ignore_eos"] = True
    if settings.check_outputs:
        # Greedy, so that a prompt has one right answer (our server's default temperature is 1).
        body["temperature"], body["top_p"] = 0.0, 1.0
    elif settings.temperature is not None:
        body["temperature"] = settings.temperature
    return body


@dataclass(slots=True)
class _Progress:
    """What one exchange learned so far; turned into a RequestRecord at the end."""

    outcome: Outcome = "error"
    detail: str = classify.PROTOCOL_ERROR
    status: int | None = None
    parser: StreamParser | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    nbytes: int = 0
    end_perf_s: float | None = None
    headers_perf_s: float | None = None  # first byte of the response: its headers were read
    # ---- token counts ----
    text: str = ""  # the reply's generated text, for the tokenizer
    has_content: bool = False
    chunks: int | None = None  # content chunks of a stream
    counted_tokens: int | None = None  # the reply's text re-tokenized by the run's tokenizer


class Connection:
    """A keep-alive connection to one server, used by one simulated user at a time."""

    def __init__(self, base_url: str, *, timeout_s: float, headers: dict[str, str] | None = None) -> None:
        url = URL(base_url)
        self._prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        # Socket timeouts are only a backstop; the total deadline is the gevent.Timeout in exchange().
        self._client = HTTPClient.from_url(
            url, concurrency=1, connection_timeout=timeout_s, network_timeout=timeout_s + 5
        )
        # Set by the user (loadgen.user): the run's TokenCounter (or None) and --ignore-eos.
        self.token_counter: TokenCounter | None = None
        self.ignore_eos = False
        # The generated text of the last exchange: a multi-turn user appends it to its history.
        self.last_reply_text = ""

    def close(self) -> None:
        self._client.close()

    def exchange(
        self, spec: RequestSpec, *, scheduled_ts_s: float | None, worker_id: str = "local", user_id: int = 0
    ) -> RequestRecord:
        """One request. `scheduled_ts_s` None (closed loop): the clock starts now, as the request goes out."""
        sent_perf_s = time.perf_counter()
        sent_ts_s = time.time()
        if scheduled_ts_s is None:
            scheduled_ts_s = sent_ts_s
        progress = _Progress()
        deadline = gevent.Timeout(self.timeout_s)
        deadline.start()
        try:
            self._send_and_read(spec, progress)
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            progress.outcome, progress.detail = "timeout", classify.CLIENT_DEADLINE
        except (HTTPParseError, OSError) as exc:
            progress.outcome, progress.detail = "error", _network_detail(exc, progress.status is not None)
            progress.error_message = repr(exc)[:200]
        except Exception as exc:
            # Recorded rather than raised, so the request stays in the denominator; the traceback is logged.
            log.exception("unexpected client error (a harness bug?)")
            progress.outcome, progress.detail = "error", classify.CLIENT_EXCEPTION
            progress.error_message = repr(exc)[:200]
        finally:
            deadline.close()
        end_perf_s = progress.end_perf_s or time.perf_counter()
        _count_and_judge(progress, spec, self.token_counter, self.ignore_eos)  # after the clock stopped
        self.last_reply_text = progress.text
        return _record(spec, progress, scheduled_ts_s, sent_ts_s, sent_perf_s, end_perf_s, worker_id, user_id)

    def _send_and_read(self, spec: RequestSpec, progress: _Progress) -> None:
        resp, progress.headers_perf_s = request_stamped(
            self._client, "POST", self._prefix + spec.path, spec.body, self._headers
        )
        try:
            progress.status = resp.status_code
            if not 200 <= resp.status_code < 300:
                body = resp.read()
                progress.nbytes += len(body)
                info = error_info_from_bytes(body)
                progress.error_code, progress.error_message = info.code, info.message
                progress.outcome, progress.detail = classify.classify_http_error(
                    resp.status_code, info.code, info.message
                )
            elif spec.stream:
                _read_stream(resp, progress)
            else:
                _read_body(resp, progress)
            progress.end_perf_s = progress.end_perf_s or time.perf_counter()
            if progress.outcome == "success" and not resp.message_complete:
                _drain(resp)  # keep a healthy connection; a failed one is simply dropped
        finally:
            resp.release()  # returns the socket to the pool only if the body was read to its end


def _read_stream(resp: HTTPSocketPoolResponse, progress: _Progress) -> None:
    """Each line is stamped with when its bytes reached the socket (loadgen.receive_stamps), not when this
    greenlet got to parse it: TTFT, ITL and E2E carry no wait for other users or for a core."""
    parser = progress.parser = StreamParser()
    lines = StampedLines(resp, progress.headers_perf_s or time.perf_counter())
    while True:
        line, arrived_s = lines.readline()
        if not line:
            break  # end of body
        progress.nbytes += len(line)
        if progress.headers_perf_s is None or arrived_s < progress.headers_perf_s:
            # Where the headers' read could not be kernel-stamped (TLS, not Linux) it is stamped when it
            # returned; the headers came before any body line, so a body line's stamp bounds the first byte.
            progress.headers_perf_s = arrived_s
        if parser.feed(line, arrived_s):
            break
    progress.end_perf_s = arrived_s
    progress.outcome, progress.detail = parser.outcome()
    progress.finish_reason = parser.finish_reason
    progress.prompt_tokens, progress.completion_tokens = parser.prompt_tokens, parser.completion_tokens
    progress.cached_tokens = parser.cached_tokens
    progress.text, progress.chunks = parser.text, parser.content_chunks
    progress.has_content = parser.content_chunks > 0
    if parser.error is not None:
        progress.error_code, progress.error_message = parser.error.code, parser.error.message


def _read_body(resp: HTTPSocketPoolResponse, progress: _Progress) -> None:
    body = resp.read()
    progress.end_perf_s = time.perf_counter()
    progress.nbytes += len(body)
    result = parse_body(body)
    progress.outcome, progress.detail = result.outcome, result.detail
    progress.finish_reason = result.finish_reason
    progress.prompt_tokens, progress.completion_tokens = result.prompt_tokens, result.completion_tokens
    progress.cached_tokens = result.cached_tokens
    progress.text, progress.has_content = result.text, bool(result.text)
    if result.error is not None:
        progress.error_code, progress.error_message = result.error.code, result.error.message


_tokenizer_failures = 0


def _count_and_judge(p: _Progress, spec: RequestSpec, counter: TokenCounter | None, ignore_eos: bool) -> None:
    """Output tokens by the tokenizer (never chunks), then the strict token checks on a success.

    A local tokenizer counts every reply (cheap; it also gives the usage-vs-tokenizer figure); the server's
    /tokenize is asked only when the reply carried no usage (each count is a request to the server).
    """
    global _tokenizer_failures
    has_usage = isinstance(p.completion_tokens, int)
    if p.outcome == "success" and counter is not None and (counter.method == "tokenizer" or not has_usage):
        try:
            p.counted_tokens = counter.count_text(p.text) if p.text else 0
        except TokenizerError as exc:
            _tokenizer_failures += 1
            if _tokenizer_failures == 1:
                log.warning("cannot count output tokens: %s", exc)
    output_tokens = p.completion_tokens if has_usage else p.counted_tokens
    p.outcome, p.detail = judge_tokens(
        p.outcome,
        p.detail,
        output_tokens=output_tokens,
        from_server=has_usage,
        has_content=p.has_content,
        finish_reason=p.finish_reason,
        max_tokens=spec.max_tokens,
        ignore_eos=ignore_eos,
    )


def _drain(resp: HTTPSocketPoolResponse) -> None:
    """Read what is left after [DONE] so the connection can be reused; give up quickly, the result stands."""
    try:
        with gevent.Timeout(DRAIN_S):
            while resp.readline(b"\n"):
                pass
    except (gevent.Timeout, HTTPParseError, OSError):
        pass


def _network_detail(exc: BaseException, got_headers: bool) -> str:
    if isinstance(exc, TimeoutError):
        return classify.CLIENT_DEADLINE  # socket backstop fired: the deadline had passed anyway
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
    ):
        return classify.CONNECT_ERROR
    if got_headers and isinstance(exc, HTTPParseError) and not isinstance(exc, HTTPConnectionClosed):
        return classify.TRUNCATED_STREAM
    if isinstance(exc, HTTPParseError | ConnectionError):
        return classify.CONNECTION_RESET
    return classify.CONNECT_ERROR if not got_headers else classify.CONNECTION_RESET


def _record(
    spec: RequestSpec,
    p: _Progress,
    scheduled_ts_s: float,
    sent_ts_s: float,
    sent_perf_s: float,
    end_perf_s: float,
    worker_id: str,
    user_id: int,
) -> RequestRecord:
    # Durations count from the schedule: an open-loop request that left late carries its lag. A negative
    # lag (a timer that woke early, or a worker clock set from the master's) is kept as measured.
    lag = sent_ts_s - scheduled_ts_s
    parser = p.parser
    ttft = gaps = None
    if parser is not None:
        gaps = parser.gaps_s
        if parser.first_content_s is not None:
            ttft = lag + parser.first_content_s - sent_perf_s
    e2e = lag + end_perf_s - sent_perf_s
    ttfb = lag + p.headers_perf_s - sent_perf_s if p.headers_perf_s is not None else None
    usage_source, output_tokens = _output_tokens(p)
    tpot = None
    if ttft is not None and output_tokens is not None and output_tokens > 1:
        tpot = (e2e - ttft) / (output_tokens - 1)
    return RequestRecord(
        scenario=spec.scenario,
        stream=spec.stream,
        scheduled_ts_s=scheduled_ts_s,
        sent_ts_s=sent_ts_s,
        end_ts_s=sent_ts_s + (end_perf_s - sent_perf_s),
        schedule_lag_s=lag,
        e2e_s=e2e,
        outcome=p.outcome,
        outcome_detail=p.detail,
        ttft_s=ttft,
        tpot_s=tpot,
        itl_s=gaps or [],
        prompt_tokens=p.prompt_tokens if isinstance(p.prompt_tokens, int) else None,
        prompt_tokens_target=spec.prompt_tokens_target,
        max_tokens=spec.max_tokens,
        output_tokens=output_tokens,
        output_tokens_counted=p.counted_tokens,
        usage_source=usage_source,
        finish_reason=p.finish_reason,
        http_status=p.status,
        error_code=p.error_code,
        error_message=p.error_message,
        response_bytes=p.nbytes,
        worker_id=worker_id,
        user_id=user_id,
        ttfb_s=ttfb,
        output_chunks=p.chunks,
        conversation_id=spec.conversation_id,
        turn_index=spec.turn_index,
        shared_prefix_id=spec.shared_prefix_id,
        cached_tokens=p.cached_tokens,
    )


def _output_tokens(p: _Progress) -> tuple[UsageSource, int | None]:
    """(usage_source, output_tokens): the server's usage, else the tokenizer's count, else unknown.

    A success without content has zero output tokens whatever else is known."""
    if isinstance(p.completion_tokens, int):
        return "server", p.completion_tokens
    if p.counted_tokens is not None:
        return "tokenizer", p.counted_tokens
    if p.outcome == "success" and not p.has_content:
        return "none", 0
    return "none", None
