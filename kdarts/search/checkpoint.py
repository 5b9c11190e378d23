"""Search checkpoints: written atomically with a SHA-256 beside them, verified when loaded.

A checkpoint is `checkpoints/step-<global step>.pt` (a `torch.save` dictionary) plus
`step-<global step>.pt.sha256`. Loading takes the newest checkpoint whose checksum matches and falls
back to an older one, with a warning, when the newest is corrupt or incomplete. The newest
`KEEP` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import torch

from kdarts.errors import CheckpointError
from kdarts.fileio import write_bytes_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_FOLDER = "checkpoints"
KEEP = 2
_NAME = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_folder(output: Path) -> Path:
    """Return the checkpoint folder of a search output folder."""
    return Path(output) / CHECKPOINT_FOLDER


def checkpoint_path(folder: Path, global_step: int) -> Path:
    """Return the path of the checkpoint of `global_step` in `folder`."""
    return Path(folder) / f"step-{global_step:08d}.pt"


def save_checkpoint(folder: Path, global_step: int, state: dict[str, Any]) -> Path:
    """Write `state` as the checkpoint of `global_step` and drop all but the newest `KEEP`."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()

    path = checkpoint_path(folder, global_step)
    write_bytes_atomic(path, data)
    # The checksum is written last: a checkpoint without one was interrupted and is never loaded.
    write_bytes_atomic(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode() + b"\n")

    for old in list_checkpoints(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Return the checkpoint files in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def load_latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """Return the newest valid checkpoint in `folder` and its state, or None when there is none."""
    candidates = list_checkpoints(folder)
    problems = []
    for path in reversed(candidates):
        try:
            state = read_checkpoint(path)
        except CheckpointError as error:
            logger.warning("skipping checkpoint: %s", error)
            problems.append(str(error))
            continue
        if problems:
            logger.warning("resuming from the older checkpoint %s", path.name)
        return path, state
    if candidates:
        raise CheckpointError(
            f"no valid checkpoint in {folder}: " + "; ".join(problems) + ". Delete the folder to start the search again"
        )
    return None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read and verify one checkpoint file against its `.sha256` file."""
    checksum_path = path.with_name(path.name + ".sha256")
    if not checksum_path.is_file():
        raise CheckpointError(f"{path} has no checksum file {checksum_path.name}; it was not written completely")
    data = path.read_bytes()
    expected = checksum_path.read_text().strip()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CheckpointError(f"{path} is corrupt: SHA-256 {actual[:12]}... does not match {expected[:12]}...")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a malformed file
        raise CheckpointError(f"{path} cannot be read: {error}") from error
