"""Helpers for code running inside a kernel notebook: where it runs, its folders, its device.

Kaggle mounts attached datasets read-only under `/kaggle/input/<slug>/` and keeps what the notebook
writes to `/kaggle/working`; the notebook's working directory is `/kaggle/working`. The local
backend lays out its run folders the same way (`input/<slug>/` beside `working/`), so `../input`
seen from the working directory is the input root on both. Colab has no input folder: datasets
come from Google Drive or the runtime's disk under `/content`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kdarts.errors import DataError
from kdarts.fileio import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

Platform = Literal["kaggle", "colab", "local"]
MANIFEST_FILE = "manifest.json"
KAGGLE_ROOT = Path("/kaggle")


@dataclass(frozen=True)
class KernelEnvironment:
    """Where a notebook runs and the folders it reads from and writes to."""

    platform: Platform
    input_dir: Path
    working_dir: Path


def detect_environment() -> KernelEnvironment:
    """Detect Kaggle, Colab or a local run and return its input and working folders."""
    if (KAGGLE_ROOT / "input").is_dir() and os.environ.get("KDARTS_LOCAL_RUN") is None:
        return KernelEnvironment("kaggle", KAGGLE_ROOT / "input", KAGGLE_ROOT / "working")
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        return KernelEnvironment("colab", Path("/content/input"), Path("/content/working"))
    working = Path.cwd()
    return KernelEnvironment("local", working.parent / "input", working)


def find_dataset(environment: KernelEnvironment, slug: str) -> Path:
    """Return the folder of the attached dataset `slug`, failing with the folders that do exist."""
    path = environment.input_dir / slug
    if path.is_dir():
        return path
    present = sorted(child.name for child in environment.input_dir.iterdir()) if environment.input_dir.is_dir() else []
    raise DataError(
        f"dataset {slug!r} is not attached: {path} does not exist (attached: {', '.join(present) or 'none'}); "
        "add it to the kernel's datasets"
    )


def describe_device() -> str:
    """Return the accelerator torch sees (GPU names or 'CPU'), for the notebook's log."""
    try:
        import torch
    except ImportError:
        return "unknown (torch is not installed)"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        return f"{len(names)} GPU(s): {', '.join(names)}"
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def write_manifest(folder: Path, *, exclude: tuple[str, ...] = (MANIFEST_FILE,)) -> Path:
    """Write `manifest.json` listing every file under `folder` with its size and SHA-256.

    A puller verifies the files it downloaded against this list, so a partial or corrupted
    download is caught before anyone trusts the output.
    """
    folder = Path(folder)
    entries = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or relative in exclude or path.name.startswith("."):
            continue
        entries.append({"path": relative, "size": path.stat().st_size, "sha256": sha256_file(path)})
    manifest_path = folder / MANIFEST_FILE
    write_json_atomic(manifest_path, {"files": entries})
    logger.info("manifest of %d files written to %s", len(entries), manifest_path)
    return manifest_path


def read_manifest(folder: Path) -> list[dict]:
    """Return the entries of a folder's `manifest.json`."""
    path = Path(folder) / MANIFEST_FILE
    return json.loads(path.read_text())["files"]
