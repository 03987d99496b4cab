"""Config plumbing written once: the strict pydantic base model, YAML files read with errors naming the
file, section-by-section merge, validation messages naming the dotted key, the repository root and the
server's default settings file.

Shared by the server settings, the campaign and gates files and the tests; imports none of our packages.
"""

from configkit.files import REPO_ROOT, RUNTIME_CONFIG, merge, read_yaml
from configkit.model import Strict, validation_message

__all__ = ["REPO_ROOT", "RUNTIME_CONFIG", "Strict", "merge", "read_yaml", "validation_message"]
