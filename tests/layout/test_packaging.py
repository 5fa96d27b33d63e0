"""One installed package: the wheel holds ``tradetree`` alone, and no module loads under two names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tradetree

REPO = Path(tradetree.__file__).resolve().parent.parent
FOLDERS = ["actors", "adapters", "core", "execution", "ml", "risk", "sim", "strategies", "supervisor", "telemetry"]


def _run(code: str, *, cwd: Path, path: list[str]) -> subprocess.CompletedProcess[str]:
    # -I: no user site, no PYTHONPATH, no cwd on sys.path; the path is exactly what the test says.
    prelude = f"import sys; sys.path[:0] = {path!r}\n"
    return subprocess.run([sys.executable, "-I", "-c", prelude + code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_root_folder_cannot_load_under_its_bare_name(folder, tmp_path):
    # The repository root on sys.path (as `python -m pytest` or a script there gives) would let
    # `import core` load a second copy of tradetree.core, with its own classes and state.
    result = _run(f"import {folder}", cwd=tmp_path, path=[str(REPO)])
    assert result.returncode != 0
    assert f"import tradetree.{folder}, not {folder}" in result.stderr


def test_every_module_has_one_name(tmp_path):
    code = """
import importlib, pkgutil, sys, tradetree
names = [i.name for i in pkgutil.walk_packages(tradetree.__path__, "tradetree.")]
for n in names:
    importlib.import_module(n)
bare = sorted(m for m in sys.modules if m.split(".")[0] in %r)
files = {}
for name, mod in list(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if name.startswith("tradetree") and f:
        files.setdefault(str(__import__("pathlib").Path(f).resolve()), []).append(name)
twice = {f: n for f, n in files.items() if len(n) > 1}
print(len(names), bare, twice)
assert not bare and not twice, (bare, twice)
""".replace("%r", repr(FOLDERS))
    result = _run(code, cwd=REPO, path=[str(REPO)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[0]) > 100


@pytest.mark.integration
def test_the_wheel_installs_tradetree_alone(tmp_path):
    # Built from a copy: setuptools keeps a build/ beside the sources, whose stale files a wheel would carry.
    source = tmp_path / "src"
    for name in [*FOLDERS, "tradetree"]:
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("tradetree-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top_level).decode().split() == ["tradetree"]
        entry_points = z.read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert {n.split("/")[0] for n in names} == {"tradetree", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                                                + ".dist-info"}
    for folder in FOLDERS:
        assert f"tradetree/{folder}/__init__.py" in names, folder
    assert "tradetree/core/lua/apply_fill.lua" in names
    assert "tradetree/py.typed" in names
    assert "tradetree = tradetree.cli:main" in entry_points
    # Every module of a root folder is in the wheel, under tradetree/.
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            assert f"tradetree/{path.relative_to(REPO).as_posix()}" in names, path
