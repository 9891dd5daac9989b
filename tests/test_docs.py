"""The documentation keeps up with the code: docs/architecture.md names every module there is,
and no module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("daemon", "consumers")


def documented_tree() -> set[str]:
    """The files named in the tree block of docs/architecture.md, as paths from the root.

    The block is the first ```text fence after "## The tree"; a line is a name (a folder ends
    in "/") indented two spaces per level, then its description.
    """
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## The tree\n", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, flags=re.S)
    assert block is not None, "docs/architecture.md: no ```text block under '## The tree'"
    folders: list[str] = []
    files = set()
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"docs/architecture.md tree: odd indentation in {line!r}"
        depth, name = indent // 2, line.split()[0]
        assert depth <= len(folders), f"docs/architecture.md tree: {name} has no parent folder"
        del folders[depth:]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            files.add("/".join([*folders, name]))
    return files


def test_the_architecture_tree_names_every_module_and_only_modules_that_exist():
    modules = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    documented = documented_tree()
    assert sorted(modules - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - modules) == [], "docs/architecture.md names modules that are gone"


def test_the_readme_points_to_the_architecture():
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    assert "docs/architecture.md" in layout
