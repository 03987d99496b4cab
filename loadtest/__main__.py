"""`python -m loadtest [locust options]`: Locust with this folder as the locustfile and our options loaded.

Locust 2.47 prints `--help` before it imports locustfiles (locust issue #2917), so `locust -f loadtest
--help` cannot list our options; `python -m loadtest --help` does, and otherwise behaves like
`locust -f loadtest ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    from locust.main import main as locust_main

    import loadgen.user  # noqa: F401  registers the options before Locust builds its parser

    args = sys.argv[1:]
    if not any(a in ("-f", "--locustfile") or a.startswith("--locustfile=") for a in args):
        args = ["-f", str(Path(__file__).resolve().parent), *args]
    sys.argv = ["locust", *args]
    locust_main()


if __name__ == "__main__":
    main()
