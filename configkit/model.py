"""The strict base model of every config file, and its validation errors as one line a user can act on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored); values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_message(exc: ValidationError) -> str:
    """Every problem, `; `-separated, each naming its dotted key (`'absolute.min_success_rate': ...`)."""
    problems = []
    for item in exc.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        elif not item["loc"]:  # a model-level check: its own sentence says what is wrong
            problems.append(item["msg"].removeprefix("Value error, "))
        else:
            problems.append(f"'{key}': {item['msg']} (got {item.get('input')!r})")
    return "; ".join(problems)
