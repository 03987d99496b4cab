"""Config plumbing written once: the strict pydantic base model, YAML files read with errors naming the
file, section-by-section merge, validation messages naming the dotted key, and the repository root.

Shared by the server settings, the campaign and gates files and the tests; imports none of our packages.
"""

from configkit.files import REPO_ROOT, merge, read_yaml
from configkit.model import Strict, validation_message

__all__ = ["REPO_ROOT", "Strict", "merge", "read_yaml", "validation_message"]
