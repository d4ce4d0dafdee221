"""The README documents every CLI command and every evaluation command."""

from __future__ import annotations

from assistant.cli import cli
from assistant.config import REPO_DIR

README = (REPO_DIR / "README.md").read_text(encoding="utf-8")


def test_every_cli_command_is_in_the_readme():
    for name, command in cli.commands.items():
        assert f"assistant {name}" in README, name
        assert command.help, name
        sub = getattr(command, "commands", {})
        for child in sub:
            assert f"assistant {name} {child}" in README, f"{name} {child}"


def test_every_evaluation_command_is_in_the_readme():
    for path in (REPO_DIR / "evaluation").glob("*.py"):
        if path.stem in ("__init__", "es_server") or "def main" not in path.read_text():
            continue
        assert f"python -m evaluation.{path.stem}" in README, path.stem


def test_the_readme_opens_with_the_two_commands():
    head = README[:1500]
    assert "assistant serve --index-if-empty" in head and "scripts/test" in head
