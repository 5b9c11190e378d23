"""Build the engine-only kdarts wheel that notebooks embed.

The wheel holds the engine's Python modules and nothing else: not the kernel generator, not the
bundled sample dataset, so a notebook that embeds it stays far below Kaggle's 1 MB source limit.
It is packed from the imported `kdarts` package itself, which is the working tree in an editable
install and site-packages otherwise, so a change to the engine reaches the next render.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wheel.wheelfile import WheelFile

import kdarts

# Parts of the package that notebooks never need.
EXCLUDED_FOLDERS = ("kernel", "datasets", "_bundled", "__pycache__")
ENGINE_REQUIREMENTS = ("numpy", "pillow", "pydantic>=2", "typer", "rich", "matplotlib", "torch")
# Zip entries carry timestamps; a fixed one makes the wheel, and so the notebook, reproducible.
FIXED_TIMESTAMP = "1704067200"  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class EngineWheel:
    """A built wheel: its file name, bytes and SHA-256."""

    filename: str
    data: bytes
    sha256: str

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def engine_files(package_dir: Path | None = None) -> list[Path]:
    """List the engine's source files, relative to the folder that contains the package."""
    package_dir = Path(package_dir or Path(kdarts.__file__).parent)
    files = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if relative.parts[0] in EXCLUDED_FOLDERS or "__pycache__" in relative.parts:
            continue
        files.append(Path(package_dir.name) / relative)
    return files


def build_engine_wheel(version: str | None = None) -> EngineWheel:
    """Pack the engine into a pure-Python wheel and return it with its SHA-256."""
    version = version or kdarts.__version__
    package_dir = Path(kdarts.__file__).parent
    filename = f"kdarts-{version}-py3-none-any.whl"
    dist_info = f"kdarts-{version}.dist-info"

    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: kdarts",
            f"Version: {version}",
            "Summary: kdarts engine (DARTS search and plans), embedded in a kernel notebook",
            "Requires-Python: >=3.10",
            *(f"Requires-Dist: {requirement}" for requirement in ENGINE_REQUIREMENTS),
            "",
        ]
    )
    wheel_info = "Wheel-Version: 1.0\nGenerator: kdarts\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entry_points = "[console_scripts]\nkdarts = kdarts.cli:main\n"

    previous_epoch = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = FIXED_TIMESTAMP
    try:
        with tempfile.TemporaryDirectory(prefix="kdarts-wheel-") as folder:
            path = Path(folder) / filename
            with WheelFile(path, "w") as wheel:
                for relative in engine_files(package_dir):
                    source = package_dir.parent / relative
                    wheel.writestr(relative.as_posix(), source.read_bytes())
                wheel.writestr(f"{dist_info}/METADATA", metadata)
                wheel.writestr(f"{dist_info}/WHEEL", wheel_info)
                wheel.writestr(f"{dist_info}/entry_points.txt", entry_points)
            data = path.read_bytes()
    finally:
        if previous_epoch is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous_epoch

    return EngineWheel(filename=filename, data=data, sha256=hashlib.sha256(data).hexdigest())
