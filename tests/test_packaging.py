"""The package declares its data folders: building it prints no setuptools warning (a first
`make run` printed ~150 lines of "Package 'api.static' is absent from the `packages`
configuration"), and the wheel carries the migrations, the policy and the web bundle."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import ROOT


def _source_copy(to: Path) -> Path:
    """The files a build reads, copied: setuptools writes build/ beside its sources."""
    src = to / "src"
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("api", "camera_registry", "geo", "health", "ingest"):
        shutil.copytree(ROOT / package, src / package, ignore=skip)
    return src


def test_building_the_package_warns_about_nothing_and_ships_its_data(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", str(src), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "absent from the `packages` configuration" not in out
    assert "BuildBackendWarning" not in out
    [wheel] = tmp_path.glob("camera_registry-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "camera_registry/store/migrations/0001_registry.sql" in names
    assert "camera_registry/data/policy.default.toml" in names
    assert {"api/static/app.js", "api/static/app.css"} <= names
    assert not [n for n in names if n.startswith(("tests/", "web/", "bench/"))]
