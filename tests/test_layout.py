"""The layout keeps its rules: imports point down the data flow with no exception, every
exception lives in daemon/errors.py, an underscore module is imported only inside its own
package, and every package's `__init__` lists its public names."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_ignores_no_import():
    """tests/test_project.py runs the contract; this keeps it whole: an upward import is
    inverted, never listed as an exception."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in settings["contracts"] if c["type"] == "layers"]
    assert layers.get("ignore_imports", []) == []
    assert "unmatched_ignore_imports_alerting" not in layers


def _modules() -> list[tuple[str, Path]]:
    """(dotted name, file) of every module of the two packages."""
    found = []
    for top in ("daemon", "consumers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def test_every_exception_class_lives_in_daemon_errors():
    import importlib
    import inspect

    elsewhere = []
    for name, _ in _modules():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == name and issubclass(cls, BaseException):
                elsewhere.append(f"{name}.{cls_name}")
    assert [c for c in elsewhere if not c.startswith("daemon.errors.")] == []
    assert "daemon.errors.RegimedError" in elsewhere


def test_every_package_lists_its_public_names_in_all():
    import ast

    missing = []
    for name, path in _modules():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        names = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        if "__all__" not in names:
            missing.append(name)
    assert missing == []


def _imports(path: Path) -> list[str]:
    """The modules (and the names, as `module.name`) that the file `path` imports."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert not node.level, f"{path}: a relative import ({node.module}); write it whole"
            base = node.module
            out.append(base)
            out += [f"{base}.{alias.name}" for alias in node.names]
    return out


def test_an_underscore_module_is_imported_only_inside_its_own_package():
    """Code outside a package uses the names its `__init__` hands on; the package's own tests
    (tests/<package>/) may look inside it."""
    private = {
        name
        for name, path in _modules()
        if path.stem.startswith("_") and not path.stem.startswith("__")
    }
    assert private, "no underscore module left: the check checks nothing"
    offenders = []
    importers = [(n, p) for n, p in _modules()] + [
        (".".join(p.relative_to(ROOT).with_suffix("").parts), p)
        for top in ("tests", "benchmarks")
        for p in sorted((ROOT / top).rglob("*.py"))
    ]
    for importer, path in importers:
        for imported in _imports(path):
            if imported not in private:
                continue
            owner = imported.rsplit(".", 1)[0]
            inside = importer == owner or importer.startswith(f"{owner}.")
            own_tests = importer.startswith(f"tests.{owner}.")
            if not (inside or own_tests):
                offenders.append(f"{importer} imports {imported}")
    assert offenders == []


def test_no_test_module_imports_another():
    """A helper or fixture two test modules share lives in tests/factories.py or a conftest.py,
    so that tests/<package>/test_<x>.py stands on its own: importing a test module couples one
    module's tests to another's helpers and hides fixtures behind `noqa` imports."""
    tests = ROOT / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        importer = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for imported in _imports(path):
            parts = imported.split(".")
            if parts[0] != "tests":
                continue
            for depth in range(2, len(parts) + 1):
                target = ROOT.joinpath(*parts[:depth]).with_suffix(".py")
                if target.name.startswith("test_") and target.is_file():
                    offenders.append(f"{importer} imports {'.'.join(parts[:depth])}")
                    break
    assert sorted(set(offenders)) == []
