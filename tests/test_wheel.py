"""Wheels: the engine-only wheel that notebooks embed, and the package wheel that ships the specs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kdarts.kernel.wheel import build_engine_wheel

REPO = Path(__file__).resolve().parents[1]


def test_engine_wheel_holds_engine_only():
    names = zipfile.ZipFile(io.BytesIO(build_engine_wheel().data)).namelist()
    assert "kdarts/runtime.py" in names
    assert "kdarts/search/trainer.py" in names
    assert "kdarts/plan/model.py" in names
    assert [name for name in names if name.startswith(("kdarts/kernel/", "kdarts/datasets/", "kdarts/_bundled/"))] == []


def test_engine_wheel_is_reproducible():
    assert build_engine_wheel().sha256 == build_engine_wheel().sha256


def test_engine_wheel_declares_metadata():
    wheel = build_engine_wheel()
    archive = zipfile.ZipFile(io.BytesIO(wheel.data))
    metadata = archive.read(f"kdarts-{wheel.filename.split('-')[1]}.dist-info/METADATA").decode()
    assert "Name: kdarts" in metadata
    assert "Requires-Dist: torch" in metadata


@pytest.mark.slow
def test_package_wheel_ships_and_finds_builtin_specs(tmp_path):
    """Build the package wheel as `pip wheel . --no-deps` does, install it, and render from it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("kdarts-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import json, kdarts\n"
        "from kdarts.kernel.specs import list_specs, load_spec\n"
        "from kdarts.kernel.render import render_notebook\n"
        "notebook = render_notebook(load_spec('search'))\n"
        "print(json.dumps({'package': kdarts.__file__, 'specs': {k: str(v) for k, v in list_specs().items()},"
        " 'cells': len(notebook.cells)}))\n"
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "kdarts_bundled/kernels/search.toml" in names
    assert "kdarts_bundled/templates/search.ipynb.j2" in names
    assert "kdarts_bundled/templates/_common.j2" in names
    assert Path(found["package"]).is_relative_to(site)
    assert found["specs"]["search"] == str(site / "kdarts_bundled" / "kernels" / "search.toml")
    assert found["cells"] > 5
