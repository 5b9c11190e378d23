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
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kdarts.errors import CheckpointError, DataError
from kdarts.fileio import sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

Platform = Literal["kaggle", "colab", "local"]
MANIFEST_FILE = "manifest.json"
DATASET_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".npz")
KAGGLE_ROOT = Path("/kaggle")


@dataclass(frozen=True)
class KernelEnvironment:
    """Platform of a running notebook and the folders it reads from and writes to."""

    platform: Platform
    input_dir: Path
    working_dir: Path


def detect_environment() -> KernelEnvironment:
    """Detect Kaggle, Colab or a local run and return its input and working folders."""
    if (KAGGLE_ROOT / "input").is_dir() and os.environ.get("KDARTS_LOCAL_RUN") is None:
        return KernelEnvironment("kaggle", KAGGLE_ROOT / "input", KAGGLE_ROOT / "working")
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG"):
        root = colab_root()
        return KernelEnvironment("colab", root / "input", root / "working")
    working = Path.cwd()
    return KernelEnvironment("local", working.parent / "input", working)


def find_dataset(environment: KernelEnvironment, slug: str, *, drive_datasets: Path | None = None) -> Path:
    """Return the folder of the attached dataset `slug`, failing with the folders that do exist.

    On Colab, nothing is attached: with `drive_datasets` (the `datasets` folder in the run's Drive
    folder), a folder `<slug>` there is used as it is, and an archive `<slug>.tar.gz`, `.tgz` or
    `.zip` is unpacked once into `input/<slug>` on the runtime's disk.
    """
    path = environment.input_dir / slug
    if path.is_dir():
        return path
    if drive_datasets is not None:
        found = _dataset_from_drive(Path(drive_datasets), slug, path)
        if found is not None:
            return found
    present = sorted(child.name for child in environment.input_dir.iterdir()) if environment.input_dir.is_dir() else []
    raise DataError(
        f"dataset {slug!r} is not attached: {path} does not exist (attached: {', '.join(present) or 'none'}); "
        "add it to the kernel's datasets"
    )


def dataset_input(folder: Path) -> Path:
    """Return what the engine should read from a dataset folder: the folder, or its one archive.

    A dataset published from an archive (`kdarts-kernel dataset publish cifar10.tar.gz`) holds that
    single file, which the engine reads directly.
    """
    folder = Path(folder)
    entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    archives = [entry for entry in entries if entry.is_file() and entry.name.endswith(DATASET_ARCHIVE_SUFFIXES)]
    if len(entries) == 1 and len(archives) == 1:
        return archives[0]
    return folder


def describe_device() -> str:
    """Return the accelerator torch finds (GPU names or 'CPU'), for the notebook's log."""
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


def verify_manifest(folder: Path, *, required: bool = False) -> int:
    """Check every file listed in a folder's manifest: present, same size, same SHA-256.

    Returns the number of verified files. Without a manifest, the folder is accepted with a
    warning (a notebook that failed early writes none), unless `required` is set.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        if required:
            raise CheckpointError(f"{folder} has no {MANIFEST_FILE}, so its files cannot be verified")
        logger.warning("%s has no %s; the files were not verified", folder, MANIFEST_FILE)
        return 0
    problems = []
    entries = read_manifest(folder)
    for entry in entries:
        path = folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{entry['path']} has {path.stat().st_size} bytes, expected {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']} has a different SHA-256 than the manifest")
    if problems:
        raise CheckpointError(f"the files in {folder} do not match its manifest: " + "; ".join(problems))
    return len(entries)


# Colab ---------------------------------------------------------------------------------------------

COLAB_ROOT = Path("/content")
# Google Drive's mount point on Colab; "My Drive" appears as MyDrive inside it.
DRIVE_MOUNT = "drive"
MY_DRIVE = "MyDrive"
DRIVE_DATASET_SUFFIXES = (".tar.gz", ".tgz", ".zip")


def colab_root() -> Path:
    """Return Colab's content folder, `/content` (`KDARTS_COLAB_ROOT` replaces it in tests)."""
    return Path(os.environ.get("KDARTS_COLAB_ROOT") or COLAB_ROOT)


def mount_drive(mount_point: Path | None = None) -> Path | None:
    """Mount Google Drive on Colab and return its My Drive folder, or None with a visible warning.

    An existing mount is reused: mounting again into a folder that holds files fails, so the mount
    point is checked with `os.path.ismount` first. Without Drive, whatever the notebook writes stays
    on the runtime's disk and is lost when the runtime ends.
    """
    mount_point = Path(mount_point or colab_root() / DRIVE_MOUNT)
    if os.path.ismount(mount_point):
        logger.info("Google Drive is already mounted at %s", mount_point)
        return mount_point / MY_DRIVE
    if mount_point.is_dir() and any(mount_point.iterdir()):
        warn_visibly(
            f"{mount_point} holds files but is not a mount, so Google Drive cannot be mounted there; "
            "move those files away and run this cell again"
        )
        return None
    try:
        from google.colab import drive  # type: ignore[import-not-found]
    except ImportError:
        warn_visibly("google.colab is not available, so Google Drive is not mounted")
        return None
    try:
        drive.mount(str(mount_point))
    except Exception as error:  # the user may refuse access or the mount may time out
        warn_visibly(f"mounting Google Drive at {mount_point} failed: {type(error).__name__}: {error}")
        return None
    if not (mount_point / MY_DRIVE).is_dir():
        warn_visibly(f"Google Drive was mounted at {mount_point}, but {mount_point / MY_DRIVE} is missing")
        return None
    logger.info("Google Drive mounted at %s", mount_point)
    return mount_point / MY_DRIVE


def warn_visibly(message: str) -> None:
    """Log a warning and print it to stderr in a banner, which notebooks show in red."""
    logger.warning(message)
    banner = "!" * 80
    print(f"{banner}\nWARNING: {message}\n{banner}", file=sys.stderr, flush=True)


def colab_run_folder(environment: KernelEnvironment, my_drive: Path | None, drive_folder: str, run_name: str) -> Path:
    """Return the folder a Colab run writes to: `<My Drive>/<drive_folder>/runs/<run_name>`.

    Without Drive, the run writes under the runtime's working folder and a warning says that its
    checkpoints will be lost with the runtime. Running the notebook again from the top resumes from
    the newest checkpoint in this folder.
    """
    if my_drive is None:
        folder = environment.working_dir / run_name
        warn_visibly(
            f"Google Drive is not mounted: checkpoints go to {folder} on the runtime's disk and are lost "
            "when the runtime ends; mount Drive to keep them and to resume"
        )
    else:
        folder = Path(my_drive) / drive_folder / "runs" / run_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dataset_from_drive(drive_datasets: Path, slug: str, target: Path) -> Path | None:
    folder = drive_datasets / slug
    if folder.is_dir():
        logger.info("dataset %s found on Google Drive at %s", slug, folder)
        return folder
    for suffix in DRIVE_DATASET_SUFFIXES:
        archive = drive_datasets / f"{slug}{suffix}"
        if archive.is_file():
            return unpack_dataset(archive, target)
    return None


def unpack_dataset(archive: Path, target: Path) -> Path:
    """Unpack a `.tar.gz`, `.tgz` or `.zip` dataset archive into `target` once, and return `target`.

    A marker file records the archive's size, so a later call with the same archive skips the work.
    """
    marker = target / ".kdarts-unpacked"
    stamp = f"{archive.name} {archive.stat().st_size}"
    if marker.is_file() and marker.read_text() == stamp:
        return target
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    logger.info("unpacking %s into %s", archive, target)
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            for name in bundle.namelist():
                if Path(name).is_absolute() or ".." in Path(name).parts:
                    raise DataError(f"{archive} contains an unsafe path {name!r}; rebuild the archive without absolute or .. paths")
            bundle.extractall(staging)
    else:
        with tarfile.open(archive, "r:*") as bundle:
            bundle.extractall(staging, filter="data")
    # An archive of one top folder (`cifar10/train/...`) is unpacked as that folder's contents,
    # unless that folder is itself a split of an image-folder dataset.
    entries = list(staging.iterdir())
    single = len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test")
    root = entries[0] if single else staging
    shutil.rmtree(target, ignore_errors=True)
    root.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    (target / marker.name).write_text(stamp)
    return target
