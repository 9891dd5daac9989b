"""deploy/install.sh into a temporary prefix: unprivileged, idempotent, config kept."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"

pytestmark = pytest.mark.integration


def copy_source(tmp_path: Path) -> Path:
    """A copy of the source tree, so that the test can change the code without touching ours."""
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "tests"),
    )
    return source


def install(source: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    """Run the script as a user would, skipping the dependencies this environment has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIMED_", "PIP_"))}
    return subprocess.run(
        # --no-deps: regimed's dependencies take a minute or more to install and are pip's
        # business; the script's own steps are what this test checks.
        [
            "bash",
            str(source / "deploy/install.sh"),
            "--prefix",
            str(prefix),
            "--python",
            sys.executable,
            "--pip-args",
            "--no-deps",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
        cwd=prefix.parent,
    )


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and directory below root (bytecode caches aside): digest and mode."""
    seen = {}
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(info.st_mode):
            digest = "-> " + os.readlink(path)
        else:
            digest = "dir"
        seen[str(path.relative_to(root))] = (digest, stat.S_IMODE(info.st_mode))
    return seen


def run_installed(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A program of the installed venv; dependencies from the test environment (--no-deps)."""
    import sysconfig

    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIMED_")}
    env["PYTHONPATH"] = os.pathsep.join(sorted(paths))
    return subprocess.run(
        [str(prefix / "opt/regimed/venv/bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=prefix,
    )


def test_install_is_idempotent_keeps_the_config_and_upgrades_the_code(tmp_path):
    source = copy_source(tmp_path)
    untouched = snapshot(source)
    prefix = tmp_path / "root"
    first = install(source, prefix)
    assert first.returncode == 0, first.stdout + first.stderr
    config = prefix / "etc/regimed/config.toml"
    unit = prefix / "etc/systemd/system/regimed.service"
    assert f"{config} created" in " ".join(first.stdout.split())
    assert unit.read_bytes() == (ROOT / "deploy/systemd/regimed.service").read_bytes()
    assert (prefix / "var/lib/regimed").is_dir()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    # store.path points into the state directory; the rest is the shipped default config.
    shipped = (ROOT / "config.toml").read_text().splitlines()
    installed = config.read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b]
    assert changed == [('path = "regimed.db"', f'path = "{prefix}/var/lib/regimed/regimed.db"')]
    # pip built from a staging copy: nothing left in the source tree or beside the venv.
    assert snapshot(source) == untouched
    assert sorted(p.name for p in (prefix / "opt/regimed").iterdir()) == ["venv"]

    # The second run changes nothing, and leaves the configuration file itself alone.
    before = snapshot(prefix)
    config_stat = config.stat()
    second = install(source, prefix)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "created" not in second.stdout
    words = " ".join(second.stdout.split())
    assert f"{config} kept" in words
    assert f"{unit} unchanged" in words
    assert snapshot(prefix) == before
    assert (config.stat().st_ino, config.stat().st_mtime_ns) == (
        config_stat.st_ino,
        config_stat.st_mtime_ns,
    )

    # The installed command works, from the venv's own copy of the code.
    helped = run_installed(prefix, "regimed", "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("run", "status", "check-config"):
        assert command in helped.stdout
    checked = run_installed(prefix, "regimed", "check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"{prefix}/var/lib/regimed/regimed.db" in checked.stdout
    where = run_installed(prefix, "python", "-c", "import daemon; print(daemon.__file__)")
    assert where.stdout.startswith(str(prefix / "opt/regimed/venv/lib/")), where.stdout

    # An operator's edit survives a reinstall; changed code is installed.
    edited = config.read_text().replace("port = 9108", "port = 9200")
    config.write_text(edited)
    with (source / "daemon/__init__.py").open("a") as f:
        f.write("\nINSTALL_TEST_MARK = 1\n")
    third = install(source, prefix)
    assert third.returncode == 0, third.stdout + third.stderr
    assert config.read_text() == edited
    (code,) = (prefix / "opt/regimed/venv/lib").glob("python3*/site-packages/daemon/__init__.py")
    assert "INSTALL_TEST_MARK = 1" in code.read_text()


def test_unknown_options_and_a_bad_python_exit_2_with_a_message(tmp_path):
    bogus = subprocess.run(
        ["bash", str(INSTALL), "--prefix", str(tmp_path), "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bogus.returncode == 2
    assert "unknown argument: --bogus" in bogus.stderr
    old = subprocess.run(
        ["bash", str(INSTALL), "--prefix", str(tmp_path), "--python", "/bin/false"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert old.returncode == 2
    assert "/bin/false: Python 3.11 or newer is needed" in old.stderr
    assert not (tmp_path / "opt").exists()


def test_shell_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (Debian package shellcheck)")
    done = subprocess.run(
        [shellcheck, str(INSTALL), str(ROOT / ".ci" / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
