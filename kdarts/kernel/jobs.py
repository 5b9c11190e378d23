"""Push, follow and pull kernels: the steps the `kdarts-kernel` commands are made of.

Each push is recorded in `runs/<kernel>/pushes.json` (backend, kernel reference, version), so
`status` and `pull` know which version to ask for without talking to the user.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kdarts.data import sample_path
from kdarts.errors import BackendError, CheckpointError
from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends import Backend, KernelStatus, get_backend
from kdarts.kernel.render import write_assets, write_bundle
from kdarts.kernel.wheel import EngineWheel, build_engine_wheel
from kdarts.kernel.specs import SAMPLE_DATASET, SAMPLE_DATASET_SLUG, KernelSpec
from kdarts.runtime import verify_manifest as runtime_verify_manifest

logger = logging.getLogger(__name__)

PUSHES_FILE = "pushes.json"
ASSETS_FILE = "assets.json"
SAMPLE_TITLE = "kdarts CIFAR-10 sample"


@dataclass(frozen=True)
class PushRecord:
    """One push of a kernel: where it went and which version it made."""

    kernel: str
    backend: str
    ref: str
    version: int
    pushed_at: float
    url: str | None = None
    endpoint: str | None = None


def runs_folder(kernel: str, root: Path | None = None) -> Path:
    return (root or Path("runs")) / kernel


def record_push(record: PushRecord, root: Path | None = None) -> None:
    path = runs_folder(record.kernel, root) / PUSHES_FILE
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(record.__dict__)
    write_json_atomic(path, records)


def recorded_versions(kernel: str, root: Path | None = None) -> list[int]:
    """Return the versions recorded in `runs/<kernel>/pushes.json`, oldest first."""
    path = runs_folder(kernel, root) / PUSHES_FILE
    return [record["version"] for record in json.loads(path.read_text())] if path.is_file() else []


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


def backend_for(record: PushRecord) -> Backend:
    """Return the backend a push went to, checking that it still talks to the same server.

    A kernel pushed to the Kaggle-compatible local server exists only there, so asking Kaggle
    itself about it (or the other way round) is refused before any request is sent.
    """
    backend = get_backend(record.backend)
    current = getattr(backend, "endpoint_url", None)
    if record.endpoint and current and current != record.endpoint:
        raise BackendError(
            f"{record.ref} version {record.version} was pushed to {record.endpoint}, but the {record.backend} "
            f"backend now talks to {current}; set KDARTS_KAGGLE_ENDPOINT={record.endpoint} (or unset it when "
            "the push went to Kaggle itself) and run the command again"
        )
    return backend


def ensure_datasets(spec: KernelSpec, backend: Backend) -> None:
    """Publish the bundled sample when the spec searches it and the backend lacks it; check the others exist."""
    if spec.kernel.dataset == SAMPLE_DATASET:
        ref = f"{backend.owner}/{SAMPLE_DATASET_SLUG}"
        if not backend.dataset_exists(ref):
            logger.info("publishing the bundled CIFAR-10 sample as dataset %s", ref)
            backend.publish_dataset(ref, sample_path(), title=SAMPLE_TITLE, message="kdarts bundled sample")
        return
    ref = spec.dataset_ref(backend.owner)
    if not backend.dataset_exists(ref):
        raise BackendError(
            f"{spec.path}: kernel.dataset {spec.kernel.dataset!r}: dataset {ref} not found on the {backend.name} "
            f"backend; publish it first: kdarts-kernel dataset publish PATH --slug {ref.split('/')[1]} "
            f"--backend {backend.name}"
        )


def ensure_assets(spec: KernelSpec, backend: Backend, wheel: EngineWheel, target: str, *, runs_root: Path | None = None) -> None:
    """Publish the spec's assets dataset, unless this folder already published the same files there.

    The SHA-256 of each published file is kept in `runs/<kernel>/assets.json` per backend and
    dataset, so an unchanged set of assets does not make a new dataset version on every push.
    """
    ref = spec.assets_ref(backend.owner)
    if ref is None:
        return
    with tempfile.TemporaryDirectory(prefix="kdarts-assets-") as folder:
        assets = write_assets(spec, wheel, Path(folder), target)  # type: ignore[arg-type]
        if not assets:
            return
        hashes = {asset.name: asset.sha256 for asset in assets}
        record_path = runs_folder(spec.name, runs_root) / ASSETS_FILE
        published = json.loads(record_path.read_text()) if record_path.is_file() else {}
        key = f"{backend.name}:{ref}"
        if published.get(key) == hashes and backend.dataset_exists(ref):
            logger.info("assets dataset %s is up to date (%d files)", ref, len(hashes))
            return
        logger.info("publishing %d asset file(s) as dataset %s", len(hashes), ref)
        version = backend.publish_dataset(ref, Path(folder), title=f"{spec.kernel.slug} assets"[:50], message="kdarts kernel assets")
        backend.wait_dataset_ready(ref, version.version)
    published[key] = hashes
    write_json_atomic(record_path, published)


def push_kernel(spec: KernelSpec, backend: Backend, *, runs_root: Path | None = None) -> PushRecord:
    """Render the spec's bundle for the backend's target, make sure its datasets exist, push it and record the push."""
    target = getattr(backend, "target", "kaggle")
    wheel = build_engine_wheel()
    ensure_datasets(spec, backend)
    ensure_assets(spec, backend, wheel, target, runs_root=runs_root)
    with tempfile.TemporaryDirectory(prefix="kdarts-bundle-") as folder:
        bundle = write_bundle(spec, Path(folder), owner=backend.owner, target=target, wheel=wheel)
        result = backend.push(bundle, session_limit=spec.kernel.session_limit)
    record = PushRecord(
        kernel=spec.name,
        backend=backend.name,
        ref=result.ref,
        version=result.version,
        pushed_at=time.time(),
        url=result.url,
        endpoint=getattr(backend, "endpoint_url", None),
    )
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
    kernel_name: str | None = None,
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
                f"(last status: {status.state}); check again with: kdarts-kernel status {kernel_name or '<kernel>'}"
            )
        time.sleep(poll_seconds)


def output_folder(record: PushRecord, root: Path | None = None) -> Path:
    """Return where a version's output is pulled: `runs/<kernel>/v<N>/`, or `<backend>-v<N>/` off the local backend.

    Version numbers count per backend, so a Kaggle version 1 and a local version 1 need two folders.
    """
    name = f"v{record.version}" if record.backend == "local" else f"{record.backend}-v{record.version}"
    return runs_folder(record.kernel, root) / name


def pull_kernel(backend: Backend, record: PushRecord, target: Path | None = None, *, runs_root: Path | None = None) -> Path:
    """Download a version's output, verify it against its manifest, and only then put it in place.

    The files are downloaded into a `.partial` folder beside the target, which replaces the target
    once the manifest matches, so an interrupted or failed pull never leaves a mix of two pulls.
    """
    target = Path(target) if target is not None else output_folder(record, runs_root)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    backend.download_output(record.ref, record.version, partial)
    verify_manifest(partial)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    logger.info("pulled %s version %d into %s", record.ref, record.version, target)
    return target


def verify_manifest(folder: Path) -> int:
    """Check a pulled output against its manifest (see `kdarts.runtime.verify_manifest`).

    A mismatch raises BackendError, with a request to pull again.
    """
    try:
        return runtime_verify_manifest(folder)
    except CheckpointError as error:
        raise BackendError(f"{error}; pull again") from error
