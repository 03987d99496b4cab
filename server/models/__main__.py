"""Model specs for the server: the embedded tiny models, built offline, and local or cached models.

`python -m server.models build` builds the embedded model and prints its folder;
`python -m server.models resolve SPEC` prints the folder a spec resolves to.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from server.models.embedded import (
    CACHE_DIR_ENV,
    DEFAULT_EMBEDDED_NAME,
    DEFAULT_MODEL_SPEC,
    EMBEDDED_MODELS,
    ModelNotFoundError,
    build_embedded_model,
)
from server.models.resolve import resolve_model_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build an embedded model and print its folder")
    build.add_argument("--name", default=DEFAULT_EMBEDDED_NAME, choices=sorted(EMBEDDED_MODELS))
    build.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: ${CACHE_DIR_ENV} or .cache/models"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the stamp is current")
    resolve = commands.add_parser("resolve", help="print the folder a model spec resolves to")
    resolve.add_argument("spec", help=f"{DEFAULT_MODEL_SPEC}, a local folder, or a cached owner/name repo id")
    resolve.add_argument("--cache-dir", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "build":
            folder = build_embedded_model(args.name, args.cache_dir, force=args.force)
        else:
            folder = resolve_model_path(args.spec, args.cache_dir)
    except ModelNotFoundError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
