"""The systemd unit: its contract, `systemd-analyze verify`, its exposure rating, and the ML
libraries under MemoryDenyWriteExecute."""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "regimed.service"
EXEC_START = "/opt/regimed/venv/bin/regimed run --config /etc/regimed/config.toml"

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def directives(text: str) -> dict[str, list[str]]:
    """'Section.Key' -> values in order (a unit may repeat a key)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_unit_keeps_its_contract():
    unit = directives(UNIT.read_text())
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.ExecStart": [EXEC_START],
        "Service.Restart": ["on-failure"],
        "Service.RestartPreventExitStatus": ["2"],
        "Service.User": ["regimed"],
        "Service.StateDirectory": ["regimed"],
        "Service.ConfigurationDirectory": ["regimed"],
        "Service.WorkingDirectory": ["/var/lib/regimed"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    # The daemon pings at half the watchdog timeout from a loop that turns at least every 10 s.
    (watchdog,) = unit["Service.WatchdogSec"]
    assert int(watchdog) >= 30


def copy_with_existing_exec_start(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this environment's `regimed`, which exists.

    verify checks that ExecStart's binary exists and is executable; /opt/regimed is not
    installed here, so the copy names the same console script from the test interpreter's
    environment, and everything else in the unit is verified as shipped.
    """
    regimed = Path(sys.executable).with_name("regimed")
    assert regimed.is_file(), f"{regimed}: the regimed console script is not installed"
    assert text.count("ExecStart=/opt/regimed/venv/bin/regimed ") == 1
    path = tmp_path / "regimed.service"
    path.write_text(
        text.replace("ExecStart=/opt/regimed/venv/bin/regimed ", f"ExecStart={regimed} ")
    )
    return path


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
@needs_systemd_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    done = verify(copy_with_existing_exec_start(tmp_path, UNIT.read_text()))
    assert done.returncode == 0, done.stderr
    # verify exits 0 on unknown keys and bad values too, and only warns: silence is the pass.
    assert done.stdout + done.stderr == ""


@pytest.mark.integration
@needs_systemd_analyze
def test_systemd_analyze_verify_would_report_a_mistake(tmp_path):
    text = (
        UNIT.read_text().replace("Type=notify", "Type=notfy").replace("ProtectHome=", "ProtecHome=")
    )
    done = verify(copy_with_existing_exec_start(tmp_path, text))
    assert "Failed to parse service type" in done.stderr
    assert "Unknown key 'ProtecHome'" in done.stderr


@pytest.mark.integration
@needs_systemd_analyze
def test_exposure_rating_is_at_most_2():
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for regimed\.service: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match[1]) <= 2.0, done.stdout


# systemd implements MemoryDenyWriteExecute= as a seccomp filter (seccomp-util.c): mmap with
# PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC and shmat with SHM_EXEC fail
# with EPERM. The child installs the same filter on itself, proves it is active, then imports
# and fits with the libraries the trainer uses.
MDWE_CHILD = r"""
import ctypes, mmap, struct

ALLOW, EPERM = 0x7FFF0000, 0x00050000 | 1
LD, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
ARG2 = 16 + 8 * 2  # seccomp_data.args[2]: prot for mmap/mprotect, shmflg for shmat

def assemble(program):
    labels, position = {}, 0
    for ins in program:
        if ins[0] == "label":
            labels[ins[1]] = position
        else:
            position += 1
    code = [ins for ins in program if ins[0] != "label"]
    out = []
    for i, ins in enumerate(code):
        if ins[0] == "jeq":
            to = lambda target: 0 if target is None else labels[target] - i - 1
            out.append(struct.pack("HBBI", JEQ, to(ins[2]), to(ins[3]), ins[1]))
        else:
            out.append(struct.pack("HBBI", ins[0], 0, 0, ins[1]))
    return b"".join(out)

program = assemble([
    (LD, 4), ("jeq", 0xC000003E, None, "allow"),  # AUDIT_ARCH_X86_64
    (LD, 0),
    ("jeq", 9, "mmap", None), ("jeq", 10, "exec", None), ("jeq", 329, "exec", None),
    ("jeq", 30, "shm", None), (RET, ALLOW),
    ("label", "mmap"), (LD, ARG2), (AND, 6), ("jeq", 6, "deny", "allow"),
    ("label", "exec"), (LD, ARG2), (AND, 4), ("jeq", 4, "deny", "allow"),
    ("label", "shm"), (LD, ARG2), (AND, 0o100000), ("jeq", 0o100000, "deny", "allow"),
    ("label", "allow"), (RET, ALLOW),
    ("label", "deny"), (RET, EPERM),
])

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

libc = ctypes.CDLL(None, use_errno=True)
code = ctypes.create_string_buffer(program)
fprog = SockFprog(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER

try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("filter active")
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE)
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
if libc.mprotect(address, 4096, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
    print("mprotect exec refused")

import numpy as np
import pandas
import lightgbm
import sklearn.ensemble
import sklearn.linear_model
import sklearn.neural_network
import sklearn.svm
import xgboost
from threadpoolctl import threadpool_limits

rng = np.random.default_rng(0)
x = rng.normal(size=(300, 6))
y = (x[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
models = [
    sklearn.ensemble.RandomForestClassifier(n_estimators=10, n_jobs=2, random_state=0),
    sklearn.ensemble.ExtraTreesClassifier(n_estimators=10, random_state=0),
    sklearn.ensemble.GradientBoostingClassifier(n_estimators=10, random_state=0),
    sklearn.linear_model.LogisticRegression(),
    sklearn.neural_network.MLPClassifier(hidden_layer_sizes=(8,), max_iter=500, random_state=0),
    sklearn.svm.SVC(random_state=0),
    xgboost.XGBClassifier(n_estimators=10, n_jobs=2, random_state=0),
    lightgbm.LGBMClassifier(n_estimators=10, n_jobs=2, random_state=0, verbose=-1),
]
for model in models:
    with threadpool_limits(limits=2):  # as the trainer fits
        model.fit(x, y)
    assert (model.predict(x) == y).mean() > 0.7, type(model).__name__
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda v: v + 1)
assert callback(41) == 42
print("fitted", len(models))
"""


@pytest.mark.integration
@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="x86-64 Linux filter"
)
def test_ml_libraries_import_and_fit_under_memory_deny_write_execute(tmp_path):
    unit = directives(UNIT.read_text())
    assert unit["Service.MemoryDenyWriteExecute"] == ["yes"]
    done = subprocess.run(
        [sys.executable, "-W", "ignore::UserWarning", "-c", MDWE_CHILD],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["filter", "active", "mprotect", "exec", "refused", "fitted", "8"]


def needs_executable_stack(path: Path) -> bool:
    """True if the ELF file's PT_GNU_STACK header asks for an executable stack (or is absent)."""
    with path.open("rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF" or ident[4] != 2:  # 64-bit ELF only
            return False
        end = "<" if ident[5] == 1 else ">"
        f.seek(0x20)
        (phoff,) = struct.unpack(end + "Q", f.read(8))
        f.seek(0x36)
        phentsize, phnum = struct.unpack(end + "HH", f.read(4))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, p_flags = struct.unpack(end + "II", f.read(8))
            if p_type == 0x6474E551:  # PT_GNU_STACK
                return bool(p_flags & 1)  # PF_X
    return True  # no PT_GNU_STACK: the loader assumes an executable stack


def test_no_shared_object_of_the_ml_stack_needs_an_executable_stack():
    """glibc would mprotect the stack PROT_EXEC to load such a library: refused under MDWE."""
    checked = 0
    for package in ("numpy", "scipy", "pandas", "sklearn", "xgboost", "lightgbm"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        for folder in spec.submodule_search_locations:
            for library in Path(folder).rglob("*.so*"):
                assert not needs_executable_stack(library), library
                checked += 1
    libs = Path(importlib.util.find_spec("numpy").origin).parents[1]  # type: ignore[arg-type]
    for library in libs.glob("*.libs/*.so*"):  # auditwheel's vendored libraries
        assert not needs_executable_stack(library), library
        checked += 1
    assert checked > 50
