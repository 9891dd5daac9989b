"""The project keeps its own promises: lint and types clean, README and CI run the same tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    demo = next(c for c in commands if "regimed demo" in c)
    tests = next(c for c in commands if "pytest" in c)
    for command in (demo, tests):
        assert command.startswith("python3.11 -m venv .venv && ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def _tool(name: str) -> list[str]:
    """The command line of a development tool in this virtualenv."""
    if name == "lint-imports":  # import-linter has no `python -m` entry point
        return [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    return [sys.executable, "-m", *name.split()]


@pytest.mark.integration
@pytest.mark.parametrize(
    "tool",
    [
        "ruff check .",
        "mypy",
        # The import-linter contract in pyproject.toml: no module imports a layer above it
        # (cli -> runtime -> consumers | monitor -> report -> evaluation -> training ->
        # registry -> store -> pipeline -> data -> config -> domain -> errors).
        "lint-imports",
    ],
)
def test_the_tree_is_clean(tool):
    done = subprocess.run(
        _tool(tool), cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if tool == "lint-imports":
        assert "1 kept, 0 broken" in done.stdout


def config_keys(obj, prefix=""):
    import dataclasses

    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("named_tables"):  # [models.NAME] tables, documented as such
            continue
        if dataclasses.is_dataclass(value):
            yield from config_keys(value, f"{prefix}{f.name}.")
        else:
            yield prefix, f.name


def test_every_configuration_key_is_documented():
    from daemon.config import Config

    doc = (ROOT / "docs" / "configuration.md").read_text()
    shipped = (ROOT / "config.toml").read_text()
    for prefix, key in config_keys(Config()):
        section = prefix.split(".")[0]
        assert f"[{section}" in doc, section
        documented = f"`{key}`" in doc or f"`{prefix.split('.', 1)[1]}{key}`" in doc
        assert documented, prefix + key
        assert f"\n{key} = " in shipped, prefix + key


def test_every_python_package_is_in_the_distribution():
    """A non-editable `pip install .` (the README's command) ships only the listed packages."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("daemon", "consumers")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"not shipped: {sorted(found - listed)}"
