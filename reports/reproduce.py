"""`python -m reports.reproduce`: forwards to `python -m orchestrate.reproduce` (campaigns start servers and
Locust, which is orchestration's job), so the documented command keeps working. The one module in reports/
allowed to reach orchestrate/, and only inside main(), so importing reports never loads it."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from orchestrate.reproduce import main as reproduce_main

    return reproduce_main(argv)


if __name__ == "__main__":
    sys.exit(main())
