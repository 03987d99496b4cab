"""YAML config files: read with errors that name the file, merged section by section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The checkout: config/, .cache/ and the launchers' working directory are found from here.
REPO_ROOT = Path(__file__).resolve().parent.parent
# The reference server's settings file when none is named (`python -m server`, campaigns, benchmarks).
RUNTIME_CONFIG = REPO_ROOT / "config" / "runtime.yaml"


def read_yaml(path: Path, what: str, error: type[Exception]) -> dict[str, Any]:
    """A YAML file whose top level is a mapping ({} when empty); `error` naming the file otherwise.

    `what` names the file's kind in messages ("config file", "gates file"); `error` is the caller's own
    exception, which carries the exit code (2) its command line uses.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(
            f"{path}: the top level of a {what} must be a mapping "
            f"(expected a mapping of sections, not a {type(raw).__name__})"
        )
    return raw


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, section by section: nested mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
