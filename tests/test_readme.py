"""The README is the front door: short, and every command and link in it points at something that exists."""

from __future__ import annotations

import importlib.util
import re

from configkit import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_it_opens_with_the_two_fresh_machine_commands():
    first = [line.split("#")[0].strip() for line in BLOCKS[0].splitlines() if line.strip()]
    assert first == ["scripts/main", "scripts/test"]


def test_every_script_and_module_it_runs_exists():
    commands = [line.split("#")[0].strip() for block in BLOCKS for line in block.splitlines() if line.strip()]
    for command in commands:
        words = command.split()
        if words[0].startswith("scripts/"):
            assert (REPO_ROOT / words[0]).is_file(), command
        if words[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(words[2]) is not None, command
        if words[:2] == ["locust", "-f"]:
            assert (REPO_ROOT / words[2]).is_dir(), command


def test_every_link_resolves():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (REPO_ROOT / target).exists(), target
