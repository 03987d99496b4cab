"""Token counts as the server makes them: a local tokenizer (`--tokenizer`), or the server's `POST /tokenize`.

Both count three things the same way the reference server (and vLLM) does:
  - `count_text`: text alone, no special tokens (a reply's output, a piece of a prompt);
  - `count_completion_prompt`: a /v1/completions prompt, with the tokenizer's special tokens (BOS);
  - `count_chat`: chat messages through the model's chat template, with the generation prompt.
Nothing is ever downloaded: a Hugging Face id must already be in the local cache.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from loadgen import side_requests

log = logging.getLogger(__name__)

TOKENIZE_PATH = "/tokenize"
TOKENIZE_TIMEOUT_S = 10.0
# The first /tokenize may load the tokenizer in the server's HTTP process (transformers' import alone took
# ~9 s on a busy 2-core machine): the probe waits this long before falling back to approximate lengths.
TOKENIZE_PROBE_TIMEOUT_S = 90.0


class TokenizerError(ValueError):
    """A tokenizer that cannot be used: not found locally, or not loadable."""


class TokenCounter(Protocol):
    method: str  # summary.json workload.prompt_length_method: "tokenizer" | "server_tokenize"
    max_model_len: int | None

    def count_text(self, text: str) -> int: ...

    def count_completion_prompt(self, text: str) -> int: ...

    def count_chat(self, messages: list[dict[str, Any]]) -> int: ...


class LocalTokenizer:
    """A tokenizer from a local folder or the Hugging Face cache (local_files_only: never a download)."""

    method = "tokenizer"

    def __init__(self, spec: str) -> None:
        # The fast tokenizer's own thread pool does not mix with Locust's forked processes and gevent.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise TokenizerError(f"--tokenizer {spec}: transformers is not installed ({exc})") from None
        path = Path(spec).expanduser()
        source = str(path) if path.exists() else spec
        try:
            self._tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            where = "folder" if path.exists() else "local folder, nor a Hugging Face id in the local cache"
            raise TokenizerError(
                f"--tokenizer {spec}: not a usable tokenizer {where} (nothing is downloaded): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from None
        self.spec = spec
        limit = getattr(self._tok, "model_max_length", None)
        # transformers puts a huge sentinel there when the tokenizer does not know the model's context.
        self.max_model_len = int(limit) if isinstance(limit, int) and limit < 10**8 else None

    def count_text(self, text: str) -> int:
        return len(self.encode_text(text))

    def encode_text(self, text: str) -> list[int]:
        """The token ids of text alone (no special tokens): output checks compare replies by them."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def count_completion_prompt(self, text: str) -> int:
        return len(self._tok.encode(text))

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        try:
            text = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja errors (no template, unsupported content) are not one type
            raise TokenizerError(f"--tokenizer {self.spec}: cannot apply its chat template ({exc})") from None
        return len(self._tok.encode(text, add_special_tokens=False))


def post_json(
    url: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float, purpose: str
) -> tuple[int, Any]:
    """(status, parsed JSON or None); status 0 when the server could not be reached."""
    data = json.dumps(body).encode()
    return request_json(
        urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers}),
        timeout_s,
        purpose,
    )


def request_json(req: urllib.request.Request, timeout_s: float, purpose: str) -> tuple[int, Any]:
    """(status, parsed JSON or None) of one request, counted under `purpose` (loadgen.side_requests);
    status 0 when the server could not be reached."""
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        log.debug("%s %s failed: %s", req.get_method(), req.full_url, exc)
        side_requests.LEDGER.add(purpose, req.get_method(), req.full_url, side_requests.NO_ANSWER)
        return 0, None
    side_requests.LEDGER.add(purpose, req.get_method(), req.full_url, side_requests.http_outcome(status))
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


class ServerTokenizer:
    """The server's own tokenizer through vLLM's `POST /tokenize` ({"count", "max_model_len", "tokens"})."""

    method = "server_tokenize"

    def __init__(self, base_url: str, model: str | None, headers: dict[str, str] | None = None) -> None:
        self.url = base_url.rstrip("/") + TOKENIZE_PATH
        self.model = model
        self.headers = headers or {}
        self.max_model_len: int | None = None
        self.timeout_s = TOKENIZE_TIMEOUT_S

    def _count(self, body: dict[str, Any]) -> int:
        if self.model:
            body = {"model": self.model, **body}
        status, doc = post_json(self.url, body, self.headers, self.timeout_s, side_requests.TOKENIZE)
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("count"), int):
            raise TokenizerError(f"POST {self.url} answered {status or 'nothing'}: {str(doc)[:200]}")
        if isinstance(doc.get("max_model_len"), int):
            self.max_model_len = doc["max_model_len"]
        count: int = doc["count"]
        return count

    def count_text(self, text: str) -> int:
        return self._count({"prompt": text, "add_special_tokens": False})

    def count_completion_prompt(self, text: str) -> int:
        return self._count({"prompt": text})

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        return self._count({"messages": messages})


def probe_server_tokenizer(
    base_url: str, model: str | None, headers: dict[str, str] | None = None
) -> ServerTokenizer | None:
    """The server's tokenizer when it offers a vLLM-compatible /tokenize, else None."""
    counter = ServerTokenizer(base_url, model, headers)
    counter.timeout_s = TOKENIZE_PROBE_TIMEOUT_S
    try:
        counter.count_text("hello")
    except TokenizerError as exc:
        # a server without /tokenize answers 404 at once; no answer at all is worth saying
        level = logging.WARNING if "answered nothing" in str(exc) else logging.DEBUG
        log.log(level, "no usable %s: %s", counter.url, exc)
        return None
    finally:
        counter.timeout_s = TOKENIZE_TIMEOUT_S
    return counter
