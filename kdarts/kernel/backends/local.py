"""The local backend: runs kernel bundles on this machine the way Kaggle runs them.

Everything lives under a store folder (`$KDARTS_HOME/local`, by default `~/.kdarts/local`):

    datasets/<owner>/<slug>/v<N>/...          one folder per dataset version, with only its own files
    kernels/<owner>/<slug>/v<N>/
        bundle/                               the pushed bundle, as pushed
        run/input/<dataset-slug>/             attached datasets (links to their newest version)
        run/working/                          the notebook's working directory: its output
        run/python/                           the virtual environment the notebook runs in
        status.json                           queued, running, complete or error
        executed.ipynb                        the notebook with outputs, saved after every cell
        log.txt                               everything the cells printed

A push copies the bundle, writes `queued` and starts a worker process (`local_worker.py`) in the
background, so it returns at once, as a Kaggle push does. The worker runs the notebook with
nbclient in a fresh virtual environment that sees this interpreter's packages but not kdarts
itself, so the notebook has to install its embedded engine wheel, as it would on Kaggle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from kdarts.errors import BackendError
from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends.base import (
    Backend,
    DatasetVersion,
    KernelStatus,
    PushResult,
    register_backend,
)
from kdarts.kernel.render import METADATA_FILE, Bundle

logger = logging.getLogger(__name__)

DEFAULT_OWNER = "local"
STATUS_FILE = "status.json"
EXECUTED_NOTEBOOK = "executed.ipynb"
LOG_FILE = "log.txt"
DEFAULT_CELL_TIMEOUT = 6 * 3600.0
CELL_TIMEOUT_VARIABLE = "KDARTS_LOCAL_CELL_TIMEOUT"


def default_home() -> Path:
    """Return the kdarts state folder: `$KDARTS_HOME`, or `~/.kdarts`."""
    return Path(os.environ.get("KDARTS_HOME") or Path.home() / ".kdarts")


@register_backend
class LocalBackend(Backend):
    """Run bundles with nbclient in Kaggle-like run folders under a local store."""

    name = "local"

    def __init__(self, root: Path | None = None, *, owner: str = DEFAULT_OWNER, cell_timeout: float | None = None):
        self.root = Path(root) if root is not None else default_home() / "local"
        self._owner = owner
        self.cell_timeout = cell_timeout if cell_timeout is not None else _cell_timeout_from_environment()

    @property
    def owner(self) -> str:
        return self._owner

    # Kernels ------------------------------------------------------------------------------------

    def kernel_folder(self, ref: str) -> Path:
        owner, slug = _split_ref(ref)
        return self.root / "kernels" / owner / slug

    def version_folder(self, ref: str, version: int) -> Path:
        return self.kernel_folder(ref) / f"v{version}"

    def versions(self, ref: str) -> list[int]:
        """Return the pushed versions of a kernel, oldest first."""
        return _numbered_versions(self.kernel_folder(ref))

    def push(self, bundle: Bundle, *, session_limit: float | None = None) -> PushResult:
        metadata = json.loads((bundle.folder / METADATA_FILE).read_text())
        ref = metadata["id"]
        missing = [source for source in metadata.get("dataset_sources", []) if not self.dataset_exists(source)]
        if missing:
            raise BackendError(
                f"cannot push {ref}: dataset(s) {', '.join(missing)} not found in the local store {self.root}; "
                "publish them first (kdarts-kernel dataset publish PATH --slug SLUG)"
            )
        for source in metadata.get("kernel_sources", []):
            self.kernel_output_path(source)

        version, folder = self._allocate_version(ref)
        shutil.copytree(bundle.folder, folder / "bundle")
        write_json_atomic(
            folder / STATUS_FILE,
            {
                "ref": ref,
                "version": version,
                "state": "queued",
                "pushed_at": time.time(),
                "session_limit": session_limit,
                "cell_timeout": self.cell_timeout,
            },
        )
        self._start_worker(folder)
        logger.info("pushed %s as version %d to the local backend (%s)", ref, version, folder)
        return PushResult(ref=ref, version=version, url=str(folder))

    def _allocate_version(self, ref: str) -> tuple[int, Path]:
        folder = self.kernel_folder(ref)
        folder.mkdir(parents=True, exist_ok=True)
        version = (self.versions(ref) or [0])[-1] + 1
        while True:
            try:
                (folder / f"v{version}").mkdir()
                return version, folder / f"v{version}"
            except FileExistsError:  # another push took this number first
                version += 1

    def _start_worker(self, folder: Path) -> None:
        environment = kernel_environment(os.environ)
        environment["KDARTS_LOCAL_STORE"] = str(self.root)
        with (folder / "worker.log").open("ab") as worker_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "kdarts.kernel.backends.local_worker", str(folder)],
                stdin=subprocess.DEVNULL,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )
        (folder / "worker.pid").write_text(f"{process.pid}\n")

    def status(self, ref: str, version: int | None = None) -> KernelStatus:
        version = version if version is not None else self._latest_version(ref)
        folder = self.version_folder(ref, version)
        path = folder / STATUS_FILE
        if not path.is_file():
            raise BackendError(f"{ref} has no version {version} in the local store {self.root}")
        raw = json.loads(path.read_text())
        status = KernelStatus.model_validate({key: raw.get(key) for key in KernelStatus.model_fields if key in raw})

        if not status.terminal and not _worker_alive(folder):
            # The worker writes a terminal state before it exits, so a dead worker with a
            # non-terminal state was killed or crashed.
            if status.state == "queued" and time.time() - raw.get("pushed_at", 0) < 30:
                return status
            status = status.model_copy(
                update={"state": "error", "message": "the local worker process died before the notebook finished"}
            )
        return status

    def latest_version(self, ref: str) -> int | None:
        versions = self.versions(ref)
        return versions[-1] if versions else None

    def latest_dataset_version(self, ref: str) -> int | None:
        versions = self.dataset_versions(ref)
        return versions[-1] if versions else None

    def _latest_version(self, ref: str) -> int:
        versions = self.versions(ref)
        if not versions:
            raise BackendError(f"kernel {ref} was never pushed to the local backend ({self.root})")
        return versions[-1]

    def download_output(self, ref: str, version: int, target: Path) -> list[Path]:
        folder = self.version_folder(ref, version)
        working = folder / "run" / "working"
        if not folder.is_dir():
            raise BackendError(f"{ref} has no version {version} in the local store {self.root}")
        target = Path(target)
        target.mkdir(parents=True, exist_ok=True)
        copied = []
        if working.is_dir():
            for path in sorted(working.rglob("*")):
                if path.is_file():
                    destination = target / path.relative_to(working)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, destination)
                    copied.append(destination)
        _, slug = _split_ref(ref)
        for name, destination_name in ((EXECUTED_NOTEBOOK, f"{slug}.ipynb"), (LOG_FILE, LOG_FILE)):
            if (folder / name).is_file():
                shutil.copy2(folder / name, target / destination_name)
                copied.append(target / destination_name)
        return copied

    def kernel_output_path(self, ref: str) -> Path:
        """Return the output folder of a kernel's newest complete version, which other kernels attach."""
        for version in reversed(self.versions(ref)):
            if self.status(ref, version).state == "complete":
                return self.version_folder(ref, version) / "run" / "working"
        raise BackendError(
            f"kernel source {ref} has no complete version in the local store {self.root}; push it and let it finish first"
        )

    def log_path(self, ref: str, version: int) -> Path:
        return self.version_folder(ref, version) / LOG_FILE

    # Datasets -----------------------------------------------------------------------------------

    def dataset_folder(self, ref: str) -> Path:
        owner, slug = _split_ref(ref)
        return self.root / "datasets" / owner / slug

    def dataset_versions(self, ref: str) -> list[int]:
        return _numbered_versions(self.dataset_folder(ref))

    def dataset_exists(self, ref: str) -> bool:
        return bool(self.dataset_versions(ref))

    def dataset_path(self, ref: str, version: int | None = None) -> Path:
        """Return the folder of a dataset version (the newest when `version` is None)."""
        versions = self.dataset_versions(ref)
        if not versions:
            raise BackendError(f"dataset {ref} not found in the local store {self.root}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise BackendError(f"dataset {ref} has no version {chosen}; versions: {versions}")
        return self.dataset_folder(ref) / f"v{chosen}"

    def publish_dataset(self, ref: str, folder: Path, *, title: str, message: str = "") -> DatasetVersion:
        source = Path(folder)
        if not source.is_dir():
            raise BackendError(f"cannot publish {ref}: {source} is not a folder")
        dataset_folder = self.dataset_folder(ref)
        dataset_folder.mkdir(parents=True, exist_ok=True)
        version = (self.dataset_versions(ref) or [0])[-1] + 1

        # Copy into a hidden folder first and rename it, so a version folder is always complete.
        staging = dataset_folder / f".v{version}.{os.getpid()}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(".*"))
        write_json_atomic(staging.parent / f".v{version}.json", {"title": title, "message": message, "created_at": time.time()})
        try:
            staging.rename(dataset_folder / f"v{version}")
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise BackendError(f"dataset {ref} version {version} was created concurrently; publish again") from error
        _make_read_only(dataset_folder / f"v{version}")
        logger.info("published dataset %s version %d from %s", ref, version, source)
        return DatasetVersion(ref=ref, version=version, status="ready")


def _cell_timeout_from_environment() -> float:
    """Return `KDARTS_LOCAL_CELL_TIMEOUT` (a duration such as 600 or "2h"), or the default of 6 hours."""
    from kdarts.kernel.specs import parse_duration

    text = os.environ.get(CELL_TIMEOUT_VARIABLE)
    if not text:
        return DEFAULT_CELL_TIMEOUT
    try:
        return parse_duration(text)
    except ValueError as error:
        raise BackendError(f"{CELL_TIMEOUT_VARIABLE}={text!r} is invalid: {error}") from error


def _make_read_only(folder: Path) -> None:
    # Kaggle mounts inputs read-only. Clearing the write bits gives the same error to a notebook
    # that writes into its input, except when it runs as root, which ignores them.
    for path in sorted(folder.rglob("*"), reverse=True):
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


# A Kaggle kernel never gets its pusher's environment variables, so the local backend drops
# every variable that looks like a credential.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
_SECRET_PREFIXES = ("KAGGLE_", "AWS_", "GOOGLE_", "AZURE_", "GH_", "GITHUB_")


def kernel_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """Return the environment for a worker and its kernel, without the variables that hold credentials."""
    return {
        name: value
        for name, value in environment.items()
        if not _SECRET_NAME.search(name) and not name.upper().startswith(_SECRET_PREFIXES)
    }


def _numbered_versions(folder: Path) -> list[int]:
    """Return N for every `v<N>` folder in `folder`, oldest first; staging folders start with a dot."""
    if not folder.is_dir():
        return []
    return sorted(int(path.name[1:]) for path in folder.iterdir() if path.name[:1] == "v" and path.name[1:].isdigit())


def _split_ref(ref: str) -> tuple[str, str]:
    parts = ref.split("/")
    if len(parts) != 2 or not all(parts):
        raise BackendError(f"invalid reference {ref!r}; expected 'owner/slug'")
    return parts[0], parts[1]


def _worker_alive(folder: Path) -> bool:
    pid_file = folder / "worker.pid"
    if not pid_file.is_file():
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    # A finished child that no process has waited for stays a zombie, which counts as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True
