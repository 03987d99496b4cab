"""Optional record fields a test expects to be filled, narrowed for the type checker."""

from typing import TypeVar

T = TypeVar("T")


def known(value: T | None) -> T:
    """`value` when it is set; an AssertionError (a failed test) when it is None."""
    assert value is not None
    return value
