"""Shared fixtures: isolated kdarts state folders and small real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kdarts.data import Dataset, load_dataset


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give every test its own HOME, KDARTS_HOME and TMPDIR, so no test reads another's state."""
    home = tmp_path / "home"
    home.mkdir()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KDARTS_HOME", str(home / ".kdarts"))
    monkeypatch.setenv("TMPDIR", str(temporary))
    return home


@pytest.fixture(scope="session")
def sample_dataset() -> Dataset:
    """The bundled CIFAR-10 sample, read once per test session."""
    return load_dataset("sample")


@pytest.fixture(scope="session")
def torch_threads() -> int:
    """Keep torch to the machine's cores; CI machines have two."""
    import torch

    threads = min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def random_images(count: int, seed: int = 0) -> np.ndarray:
    """Return `count` random 32x32 RGB uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
