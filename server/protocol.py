"""OpenAI request bodies parsed once into typed records, and the response shapes written back."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypeIs

from server.errors import APIError
from server.settings import LimitSettings


class _Request(BaseModel):
    # Unknown fields are ignored, as most OpenAI-compatible servers do, so newer clients keep working.
    # strict: a value of the wrong JSON type is refused, never coerced ("5" for 5, true for 1, 1 for true,
    # 5.0 for 5), as OpenAI's API refuses it. An integer is still a valid number for a float field.
    model_config = ConfigDict(extra="ignore", strict=True)


RequestT = TypeVar("RequestT", bound=BaseModel)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


class Message(_Request):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart | ImagePart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    # vLLM's extension: keep generating past EOS, for fixed-length benchmarks.
    ignore_eos: bool = False

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str]


def parse_request(model: type[RequestT], body: Any) -> RequestT:
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = error_param(first["loc"])
        message = f"Invalid value for '{param}': {first['msg']}." if param else first["msg"]
        if first["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        elif first["type"].endswith("_type") and first["type"] != "literal_error":
            message = f"Invalid type for '{param}': {first['msg']}, got {json_type(first['input'])}."
        raise APIError(
            400, message, code="invalid_type" if "_type" in first["type"] else "invalid_value", param=param
        ) from None


def check_json_shape(value: Any, max_depth: int, max_elements: int) -> None:
    """Refuse bodies nested deeper than `max_depth` or holding more than `max_elements` values."""
    stack = [(value, 1)]
    elements = 0
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        if children and depth > max_depth:
            raise too_deep(max_depth)
        for child in children:
            elements += 1
            stack.append((child, depth + 1))
        if elements > max_elements:
            raise APIError(
                400,
                f"The JSON body holds more than this server's limit of {max_elements} values.",
                code="json_too_many_elements",
            )


def too_deep(max_depth: int) -> APIError:
    return APIError(
        400,
        f"The JSON body is nested deeper than this server's limit of {max_depth} levels.",
        code="json_too_deep",
    )


def error_param(loc: tuple) -> str | None:
    """The parameter a validation error is about, as a dotted path (`messages.0.content`): pydantic's
    location also names the union member it tried (`str`, `list[int]`, `TextPart`), which is not a
    parameter of the request."""
    names = [str(part) for part in loc if isinstance(part, int) or not _is_type_tag(part)]
    return ".".join(names) or None


def _is_type_tag(part: str) -> bool:
    return "[" in part or part in _TYPE_TAGS or (part[:1].isupper() and part.isidentifier())


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "function-after"})


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value, for error messages."""
    if value is None:
        return "null"
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, python_type):
            return name
    return "array" if isinstance(value, list) else "object"


def resolve_max_tokens(requested: int | None, limits: LimitSettings) -> int:
    if requested is None:
        return limits.default_max_tokens
    if requested > limits.max_tokens_cap:
        raise APIError(
            400,
            f"max_tokens is {requested}, more than this server's limit of {limits.max_tokens_cap}.",
            code="invalid_value",
            param="max_tokens",
        )
    return requested


def check_stops(stops: list[str], limits: LimitSettings) -> list[str]:
    if len(stops) > limits.max_stop_strings:
        raise APIError(
            400,
            f"At most {limits.max_stop_strings} stop strings are allowed.",
            code="invalid_value",
            param="stop",
        )
    return stops


def is_text_prompts(prompt: str | list[int] | list[str]) -> TypeIs[list[str]]:
    # The request model validates a list as all token ids or all strings, so its first item tells which;
    # an empty list counts as token ids (and is refused as empty).
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str)


def completion_prompt(req: CompletionRequest) -> str | list[int]:
    prompt = req.prompt
    if is_text_prompts(prompt):
        if len(prompt) != 1:
            raise APIError(400, "Batched prompts are not supported; send one prompt.", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise APIError(400, "The prompt is empty.", code="invalid_value", param="prompt")
    return prompt


# -- responses -----------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        # OpenAI's field (and mlx_lm.server's): prompt tokens served from the prefix cache.
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


class ChatShapes:
    """chat.completion and chat.completion.chunk objects."""

    chunk_object = "chat.completion.chunk"
    final_object = "chat.completion"

    def __init__(self, model: str):
        self.id = new_id("chatcmpl")
        self.model = model
        self.created = int(time.time())

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def opening(self) -> dict[str, Any] | None:
        """The first chunk of a stream, sent as soon as the request is accepted (OpenAI sends the role)."""
        return self.chunk("", role="assistant")

    def chunk(
        self, text: str | None, finish_reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": role} if role else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**self._envelope(self.chunk_object), "choices": [choice]}

    def usage_chunk(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> dict[str, Any]:
        return {
            **self._envelope(self.chunk_object),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }

    def final(
        self,
        text: str,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> dict[str, Any]:
        return {
            **self._envelope(self.final_object),
            "choices": [self.final_choice(text, finish_reason)],
            "usage": usage(prompt_tokens, completion_tokens, cached_tokens),
        }

    def final_choice(self, text: str, finish_reason: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}


class CompletionShapes(ChatShapes):
    """text_completion objects (the same object serves streamed chunks and the final body)."""

    chunk_object = "text_completion"
    final_object = "text_completion"

    def __init__(self, model: str):
        super().__init__(model)
        self.id = new_id("cmpl")

    def opening(self) -> dict[str, Any] | None:
        return None

    def chunk(
        self, text: str | None, finish_reason: str | None = None, role: str | None = None
    ) -> dict[str, Any]:
        choice = self.final_choice(text or "", finish_reason)
        return {**self._envelope(self.chunk_object), "choices": [choice]}

    def final_choice(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
