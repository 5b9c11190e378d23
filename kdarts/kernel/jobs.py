"""Push, follow and pull kernels: the steps the `kdarts-kernel` commands are made of.

Each push is recorded in `runs/<kernel>/pushes.json` (backend, kernel reference, version), so
`status` and `pull` know which version to ask for without talking to the user.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdarts.data import sample_path
from kdarts.errors import BackendError
from kdarts.fileio import sha256_file, write_json_atomic
from kdarts.kernel.backends import Backend, KernelStatus
from kdarts.kernel.render import write_bundle
from kdarts.kernel.specs import SAMPLE_DATASET, SAMPLE_DATASET_SLUG, KernelSpec
from kdarts.runtime import MANIFEST_FILE

logger = logging.getLogger(__name__)

PUSHES_FILE = "pushes.json"
SAMPLE_TITLE = "kdarts CIFAR-10 sample"


@dataclass(frozen=True)
class PushRecord:
    """One push of a kernel: where it went and which version it made."""

    kernel: str
    backend: str
    ref: str
    version: int
    pushed_at: float


def runs_folder(kernel: str, root: Path | None = None) -> Path:
    return (root or Path("runs")) / kernel


def record_push(record: PushRecord, root: Path | None = None) -> None:
    path = runs_folder(record.kernel, root) / PUSHES_FILE
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(record.__dict__)
    write_json_atomic(path, records)


def latest_push(kernel: str, root: Path | None = None, version: int | None = None) -> PushRecord:
    """Return the newest recorded push of `kernel` (or the one of `version`)."""
    path = runs_folder(kernel, root) / PUSHES_FILE
    records = [PushRecord(**record) for record in json.loads(path.read_text())] if path.is_file() else []
    if version is not None:
        records = [record for record in records if record.version == version]
    if not records:
        which = f" version {version}" if version is not None else ""
        raise BackendError(f"kernel {kernel!r}{which} was never pushed from this folder; run: kdarts-kernel push {kernel}")
    return records[-1]


def ensure_datasets(spec: KernelSpec, backend: Backend) -> None:
    """Publish the bundled sample when the spec searches it and the backend does not have it yet."""
    if spec.kernel.dataset != SAMPLE_DATASET:
        return
    ref = f"{backend.owner}/{SAMPLE_DATASET_SLUG}"
    if backend.dataset_exists(ref):
        return
    logger.info("publishing the bundled CIFAR-10 sample as dataset %s", ref)
    backend.publish_dataset(ref, sample_path(), title=SAMPLE_TITLE, message="kdarts bundled sample")


def push_kernel(spec: KernelSpec, backend: Backend, *, runs_root: Path | None = None) -> PushRecord:
    """Render the spec's bundle, make sure its datasets exist, push it and record the push."""
    ensure_datasets(spec, backend)
    with tempfile.TemporaryDirectory(prefix="kdarts-bundle-") as folder:
        bundle = write_bundle(spec, Path(folder), owner=backend.owner, target="kaggle")
        result = backend.push(bundle, session_limit=spec.kernel.session_limit)
    record = PushRecord(kernel=spec.name, backend=backend.name, ref=result.ref, version=result.version, pushed_at=time.time())
    record_push(record, runs_root)
    return record


def wait_for_kernel(
    backend: Backend,
    ref: str,
    version: int,
    *,
    timeout: float | None = None,
    poll_seconds: float = 2.0,
    on_status: Callable[[KernelStatus], None] | None = None,
) -> KernelStatus:
    """Poll a version's status until it is terminal; raise when `timeout` seconds pass first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = backend.status(ref, version)
        if on_status is not None:
            on_status(status)
        if status.terminal:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"timed out after {timeout:.0f} s waiting for {ref} version {version} to finish "
                f"(last status: {status.state}); check again with: kdarts-kernel status"
            )
        time.sleep(poll_seconds)


def pull_kernel(backend: Backend, record: PushRecord, target: Path | None = None, *, runs_root: Path | None = None) -> Path:
    """Download a version's output into `runs/<kernel>/v<N>/` and verify it against its manifest."""
    target = Path(target) if target is not None else runs_folder(record.kernel, runs_root) / f"v{record.version}"
    backend.download_output(record.ref, record.version, target)
    verify_manifest(target)
    logger.info("pulled %s version %d into %s", record.ref, record.version, target)
    return target


def verify_manifest(folder: Path) -> int:
    """Check every file listed in the output's manifest: present, same size, same SHA-256.

    Returns the number of verified files. An output without a manifest (a notebook that failed
    before writing it) is accepted with a warning, since its partial files are still useful.
    """
    manifest_path = Path(folder) / MANIFEST_FILE
    if not manifest_path.is_file():
        logger.warning("%s has no %s; the files were not verified", folder, MANIFEST_FILE)
        return 0
    entries = json.loads(manifest_path.read_text())["files"]
    problems = []
    for entry in entries:
        path = Path(folder) / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{entry['path']} has {path.stat().st_size} bytes, expected {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']} has a different SHA-256 than the manifest")
    if problems:
        raise BackendError(f"the output in {folder} does not match its manifest: " + "; ".join(problems) + "; pull again")
    return len(entries)
