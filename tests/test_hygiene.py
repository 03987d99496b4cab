"""Code hygiene read from the source: no comment or docstring cites one of our tickets (the word "issue"
and its number). A ticket number tells a reader nothing the code does not; the reason belongs in the
comment itself, and the history in git. (A third-party tracker's reference, e.g. "locust issue #2917",
says where to look: allowed.)
"""

from __future__ import annotations

import re
import subprocess

from configkit import REPO_ROOT as REPO

TICKET = re.compile(r"\b[Ii]ssues? \d+")
# Files that still cite tickets while their owners rewrite them; an entry goes once its file is clean
# (the test fails for an entry that no longer needs to be here).
BEING_REWORDED: set[str] = set()


def source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py", "scripts/*"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [name for name in listed if (REPO / name).is_file()]


def test_no_source_file_cites_a_ticket_number():
    citing = {}
    for name in source_files():
        lines = (REPO / name).read_text(encoding="utf-8", errors="replace").splitlines()
        hits = [f"{number}: {line.strip()}" for number, line in enumerate(lines, 1) if TICKET.search(line)]
        if hits:
            citing[name] = hits
    assert set(citing) <= BEING_REWORDED, {n: h for n, h in citing.items() if n not in BEING_REWORDED}
    assert set(citing) >= BEING_REWORDED, (
        f"clean now, take them off BEING_REWORDED: {BEING_REWORDED - set(citing)}"
    )
