"""Emulated kernels: SaveKernel starts a version, which the local backend executes.

Each pushed version gets its own bundle folder and its own local backend version, so a push while
an older version still runs starts a new version beside it, as on Kaggle. Attached datasets are
mounted under `input/<slug>/` by the local backend from their newest ready version.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from slugify import slugify

from kdarts.errors import BackendError
from kdarts.kernel.backends.base import KernelStatus
from kdarts.kernel.backends.local import EXECUTED_NOTEBOOK, LocalBackend
from kdarts.kernel.emulator.faults import FaultPlan
from kdarts.kernel.emulator.stores import DatasetStore, EmulatorError, KernelRecord, KernelVersionRecord, Registry
from kdarts.kernel.render import KAGGLE_SOURCE_LIMIT, KERNELSPEC, METADATA_FILE, Bundle

logger = logging.getLogger(__name__)

# Kaggle's error message for a kernel source of 1 MB or more (HTTP 400).
SOURCE_TOO_LARGE = "The kernel source must be less than 1 megabytes in size."
# Kaggle's error message for a kernel the user cannot see, including one that does not exist.
KERNEL_DENIED = "Permission 'kernels.get' was denied"
# papermill's error for a notebook without `metadata.kernelspec.name`; Kaggle runs notebooks with papermill.
NO_KERNEL_NAME = "No kernel name found in notebook and no override provided."
SOURCE_PREFIXES = ("datasets/", "code/", "kernels/", "c/", "competitions/", "models/")
DEFAULT_SESSION_SECONDS = 12 * 3600.0
TPU_SESSION_SECONDS = 9 * 3600.0
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
STATE_NAMES = {"queued": "QUEUED", "running": "RUNNING", "complete": "COMPLETE", "error": "ERROR", "cancelled": "CANCEL_ACKNOWLEDGED"}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class KernelStore:
    """Kernels, their versions, their status and their output."""

    def __init__(self, registry: Registry, datasets: DatasetStore, local: LocalBackend, faults: FaultPlan, base_url: Callable[[], str]):
        self.registry = registry
        self.datasets = datasets
        self.local = local
        self.faults = faults
        self.folder = registry.root / "kernels"
        self._base_url = base_url
        self._secret = secrets.token_bytes(32)
        self._timers: list[threading.Timer] = []
        self._started: list[tuple[str, int]] = []
        self._extra: dict[str, bytes] = {}

    # SaveKernel ---------------------------------------------------------------------------------

    def save(self, user: str, request: dict[str, Any]) -> dict[str, Any]:
        """Store a new kernel version and start it (or queue it); return the SaveKernel response."""
        text = request.get("text") or ""
        if len(text.encode("utf-8")) >= KAGGLE_SOURCE_LIMIT:
            raise EmulatorError(400, SOURCE_TOO_LARGE)
        owner, slug = self._target(user, request)
        if owner != user:
            return {"error": f"User {user} may not push kernels owned by {owner}."}
        language = request.get("language") or "python"
        kernel_type = request.get("kernelType") or "notebook"
        if language != "python" or kernel_type not in ("notebook", "script"):
            return {"error": f"The emulator runs only python notebooks and scripts, not {language} {kernel_type}s."}
        notebook, failure = _notebook_from_source(text, kernel_type)

        valid, invalid = self._check_dataset_sources(user, request.get("datasetDataSources") or [])
        kernel_sources, invalid_kernels = self._check_kernel_sources(user, request.get("kernelDataSources") or [])
        invalid_competitions = list(request.get("competitionDataSources") or [])
        invalid_models = list(request.get("modelDataSources") or [])

        with self.registry.lock:
            ref = f"{owner}/{slug}"
            record = self.registry.state.kernels.get(ref)
            if record is None:
                record = KernelRecord(id=self.registry.new_id(), owner=owner, slug=slug, title=request.get("newTitle") or slug)
                self.registry.state.kernels[ref] = record
            elif request.get("newTitle"):
                record.title = request["newTitle"]
            record.is_private = bool(request.get("isPrivate", record.is_private))
            record.enable_internet = bool(request.get("enableInternet", False))
            record.machine_shape = request.get("machineShape")
            record.dataset_sources = valid
            number = len(record.versions) + 1
            timeout = request.get("sessionTimeoutSeconds")
            default_timeout = TPU_SESSION_SECONDS if (record.machine_shape or "").lower().startswith("tpu") else DEFAULT_SESSION_SECONDS
            queue = self.faults.take("SaveKernel", {"queue"})
            version = KernelVersionRecord(
                number=number,
                pushed_at=time.time(),
                start_at=time.time() + (queue.seconds if queue else 0.0),
                failure=failure,
                dataset_sources=valid,
                kernel_sources=kernel_sources,
                session_timeout=float(timeout) if timeout else default_timeout,
                code_file=f"{slug}.ipynb",
            )
            self._write_bundle(record, version, notebook)
            record.versions.append(version)
            self.registry.save()

        logger.info("kernel %s version %d pushed by %s", ref, number, user)
        if queue is not None:
            timer = threading.Timer(queue.seconds, self._start_quietly, args=(ref, number))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
        else:
            self._start(ref, number)
        answer: dict[str, Any] = {
            "ref": f"/code/{ref}",
            "url": f"{self._base_url()}/code/{ref}",
            "versionNumber": number,
            "kernelId": record.id,
            "invalidDatasetSources": invalid,
            "invalidKernelSources": invalid_kernels,
            "invalidCompetitionSources": invalid_competitions,
            "invalidModelSources": invalid_models,
        }
        return answer

    def _target(self, user: str, request: dict[str, Any]) -> tuple[str, str]:
        """Return the owner and slug a push goes to; a new kernel is filed under its title's slug."""
        if request.get("id"):
            with self.registry.lock:
                for record in self.registry.state.kernels.values():
                    if record.id == int(request["id"]):
                        return record.owner, record.slug
            raise EmulatorError(404, f"Kernel id {request['id']} not found.")
        parts = str(request.get("slug") or "").split("/")
        if len(parts) != 2 or not all(parts):
            raise EmulatorError(400, f"Invalid kernel slug {request.get('slug')!r}; expected owner/slug.")
        owner, slug = parts
        title = request.get("newTitle")
        with self.registry.lock:
            exists = f"{owner}/{slug}" in self.registry.state.kernels
        if title and not exists and slugify(title) != slug:
            logger.info("kernel %s/%s is filed under its title's slug %s", owner, slug, slugify(title))
            slug = slugify(title)
        return owner, slug

    def _check_dataset_sources(self, user: str, sources: list[str]) -> tuple[list[str], list[str]]:
        valid, invalid = [], []
        for source in sources:
            parts = source.split("/")
            pinned = len(parts) == 3 and parts[2].isdigit()
            ref = "/".join(parts[:2])
            well_formed = (len(parts) == 2 or pinned) and all(parts) and not source.startswith(SOURCE_PREFIXES)
            # NOTE: a pinned source (owner/slug/N) is mounted at the newest ready version, not version N.
            if well_formed and self._dataset_visible(user, ref):
                valid.append(ref)
            else:
                invalid.append(source)
        return valid, invalid

    def _check_kernel_sources(self, user: str, sources: list[str]) -> tuple[list[str], list[str]]:
        """Accept kernels the user can see that have a complete version, whose output gets mounted."""
        valid, invalid = [], []
        for source in sources:
            parts = source.split("/")
            if len(parts) == 2 and all(parts) and self._has_complete_version(user, parts[0], parts[1]):
                valid.append(source)
            else:
                invalid.append(source)
        return valid, invalid

    def _has_complete_version(self, user: str, owner: str, slug: str) -> bool:
        try:
            record = self.find(user, owner, slug)
        except EmulatorError:
            return False
        for version in record.versions:
            status = self.local_status(record, version)
            if status is not None and status.state == "complete":
                return True
        return False

    def _dataset_visible(self, user: str, ref: str) -> bool:
        owner, slug = ref.split("/")
        try:
            self.datasets.get(user, owner, slug)
        except EmulatorError:
            return False
        return self.datasets.ready_version(ref) is not None

    def _write_bundle(self, record: KernelRecord, version: KernelVersionRecord, notebook: nbformat.NotebookNode) -> None:
        folder = self.bundle_folder(record.ref, version.number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / version.code_file).write_text(nbformat.writes(notebook), encoding="utf-8")
        metadata = {
            "id": record.ref,
            "title": record.title,
            "code_file": version.code_file,
            "language": "python",
            "kernel_type": "notebook",
            "is_private": record.is_private,
            "enable_internet": record.enable_internet,
            "dataset_sources": version.dataset_sources,
            "kernel_sources": version.kernel_sources,
        }
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")

    def bundle_folder(self, ref: str, number: int) -> Path:
        return self.folder / ref / f"v{number}"

    def _start_quietly(self, ref: str, number: int) -> None:
        try:
            self._start(ref, number)
        except Exception:  # a timer thread has no caller to raise to
            logger.exception("could not start kernel %s version %d", ref, number)

    def _start(self, ref: str, number: int) -> None:
        with self.registry.lock:
            version = self.registry.state.kernels[ref].versions[number - 1]
            if version.local_version is not None or version.failure is not None or version.start_at > time.time():
                return
            folder = self.bundle_folder(ref, number)
            metadata = json.loads((folder / METADATA_FILE).read_text())
            notebook = folder / version.code_file
            bundle = Bundle(folder=folder, notebook=notebook, metadata=metadata, size=notebook.stat().st_size)
            try:
                result = self.local.push(bundle, session_limit=version.session_timeout)
            except BackendError as error:
                version.failure = str(error)
            else:
                version.local_version = result.version
                self._started.append((ref, result.version))
            self.registry.save()

    # Status -------------------------------------------------------------------------------------

    def find(self, user: str, owner: str, slug: str) -> KernelRecord:
        with self.registry.lock:
            record = self.registry.state.kernels.get(f"{owner}/{slug}")
        if record is None or (record.is_private and record.owner != user):
            raise EmulatorError(403, KERNEL_DENIED)
        return record

    def version(self, record: KernelRecord, label: str | None) -> KernelVersionRecord:
        if not label:
            return record.versions[-1]
        match = re.fullmatch(r"v?(\d+)", label)
        if not match:
            raise EmulatorError(400, f"Invalid version label {label!r}; expected v<N>.")
        number = int(match.group(1))
        if not 1 <= number <= len(record.versions):
            raise EmulatorError(404, f"Kernel {record.ref} has no version {number}.")
        return record.versions[number - 1]

    def status(self, user: str, owner: str, slug: str, label: str | None) -> dict[str, Any]:
        """Return GetKernelSessionStatus for a version; unpinned requests may get a stale answer."""
        record = self.find(user, owner, slug)
        version = self.version(record, label)
        if not label and version.number > 1 and self.faults.take("GetKernelSessionStatus", {"stale_status"}):
            logger.info("responding to an unpinned status of %s with version %d's status", record.ref, version.number - 1)
            version = record.versions[version.number - 2]
        status = self.local_status(record, version)
        answer: dict[str, Any] = {"status": STATE_NAMES[status.state] if status else "QUEUED"}
        if version.failure:
            answer = {"status": "ERROR", "failureMessage": version.failure}
        elif status is not None and status.state == "error":
            answer["failureMessage"] = status.message or "The notebook failed."
        return answer

    def local_status(self, record: KernelRecord, version: KernelVersionRecord) -> KernelStatus | None:
        """Return the local backend's status of a version, starting it when its queue time is over."""
        if version.local_version is None and version.failure is None:
            self._start(record.ref, version.number)
        if version.local_version is None:
            return None
        return self.local.status(record.ref, version.local_version)

    # Output -------------------------------------------------------------------------------------

    def output(self, user: str, owner: str, slug: str, label: str | None, page_size: int | None, page_token: str | None) -> dict[str, Any]:
        """Return one page of a version's output files; the first page also carries the log."""
        record = self.find(user, owner, slug)
        version = self.version(record, label)
        offset = _decode_token(page_token)
        size = min(max(page_size or DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE)
        names = self._output_names(record, version)

        entries = [
            {"fileName": name, "url": self._file_url(record.ref, version.number, name)} for name in names[offset : offset + size]
        ]
        answer: dict[str, Any] = {"files": entries}
        if offset == 0:
            extra = self.faults.take("ListKernelSessionOutput", {"extra_output"})
            if extra is not None and extra.file_name:
                key = secrets.token_urlsafe(12)
                self._extra[key] = extra.content.encode("utf-8")
                entries.append({"fileName": extra.file_name, "url": f"{self._base_url()}/_extra/{key}"})
            answer["log"] = self._kaggle_log(record, version)
        if offset + size < len(names):
            answer["nextPageToken"] = _encode_token(offset + size)
        return answer

    def _working(self, record: KernelRecord, version: KernelVersionRecord) -> Path | None:
        if version.local_version is None:
            return None
        return self.local.version_folder(record.ref, version.local_version) / "run" / "working"

    def _output_names(self, record: KernelRecord, version: KernelVersionRecord) -> list[str]:
        working = self._working(record, version)
        if working is None or not working.is_dir():
            return []
        return sorted(path.relative_to(working).as_posix() for path in working.rglob("*") if path.is_file())

    def _file_url(self, ref: str, number: int, name: str) -> str:
        return f"{self._base_url()}/_output/{ref}/{number}/{quote(name)}?sig={self._sign(ref, number, name)}"

    def _sign(self, ref: str, number: int, name: str) -> str:
        return hmac.new(self._secret, f"{ref}/{number}/{name}".encode(), hashlib.sha256).hexdigest()[:32]

    def output_file(self, owner: str, slug: str, number: int, name: str, signature: str) -> Path:
        """Return the file behind a signed output URL."""
        ref = f"{owner}/{slug}"
        if not hmac.compare_digest(self._sign(ref, number, name), signature):
            raise EmulatorError(403, "Invalid or expired download signature.")
        with self.registry.lock:
            record = self.registry.state.kernels.get(ref)
        if record is None or not 1 <= number <= len(record.versions):
            raise EmulatorError(404, "Not found.")
        working = self._working(record, record.versions[number - 1])
        relative = PurePosixPath(name)
        if working is None or relative.is_absolute() or ".." in relative.parts:
            raise EmulatorError(404, "Not found.")
        path = working / relative
        if not path.is_file():
            raise EmulatorError(404, "Not found.")
        return path

    def extra_file(self, key: str) -> bytes:
        if key not in self._extra:
            raise EmulatorError(404, "Not found.")
        return self._extra[key]

    def _kaggle_log(self, record: KernelRecord, version: KernelVersionRecord) -> str:
        """Return the version's log the way Kaggle stores it: a JSON list of stream entries."""
        if version.failure is not None:
            return _log_text([("stderr", f"{version.failure}\n")])
        if version.local_version is None:
            return ""
        log_path = self.local.log_path(record.ref, version.local_version)
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
        # NOTE: the local backend does not time each line, so every entry has time 0.
        entries = [("stdout", line) for line in text.splitlines(keepends=True)]
        status = self.local.status(record.ref, version.local_version)
        if status.state == "error" and status.failing_cell is not None:
            executed = self.local.version_folder(record.ref, version.local_version) / EXECUTED_NOTEBOOK
            entries.append(("stderr", _papermill_error(executed, status)))
        return _log_text(entries)

    def get(self, user: str, owner: str, slug: str, label: str | None) -> dict[str, Any]:
        """Return GetKernel: the kernel's metadata and the source of a version."""
        record = self.find(user, owner, slug)
        version = self.version(record, label)
        source = (self.bundle_folder(record.ref, version.number) / version.code_file).read_text(encoding="utf-8")
        metadata = {
            "id": record.id,
            "ref": record.ref,
            "title": record.title,
            "author": record.owner,
            "slug": record.slug,
            "language": record.language,
            "kernelType": record.kernel_type,
            "isPrivate": record.is_private,
            "enableInternet": record.enable_internet,
            "datasetDataSources": record.dataset_sources,
            "currentVersionNumber": len(record.versions),
            "machineShape": record.machine_shape,
        }
        blob = {"source": source, "language": record.language, "kernelType": record.kernel_type, "slug": record.slug}
        return {"metadata": {key: value for key, value in metadata.items() if value is not None}, "blob": blob}

    def shutdown(self) -> None:
        """Cancel queued starts and stop the workers this emulator started that are still running."""
        for timer in self._timers:
            timer.cancel()
        for ref, local_version in self._started:
            pid_file = self.local.version_folder(ref, local_version) / "worker.pid"
            try:
                if self.local.status(ref, local_version).terminal:
                    continue
                pid = int(pid_file.read_text().strip())
                # The worker leads its own session, so its process group is its pid.
                os.killpg(pid, signal.SIGTERM)
                logger.info("stopped the worker of %s local version %d (pid %d)", ref, local_version, pid)
            except (OSError, ValueError, BackendError) as error:
                logger.debug("worker of %s local version %d not stopped: %s", ref, local_version, error)


def _notebook_from_source(text: str, kernel_type: str) -> tuple[nbformat.NotebookNode, str | None]:
    """Return the notebook to run and the failure papermill would report before running it."""
    if kernel_type == "script":
        notebook = new_notebook(cells=[new_code_cell(text)])
        notebook.metadata["kernelspec"] = dict(KERNELSPEC)
        return notebook, None
    try:
        notebook = nbformat.reads(text, as_version=4)
    except (ValueError, nbformat.reader.NotJSONError) as error:
        raise EmulatorError(400, f"The kernel source is not a valid notebook: {error}") from error
    if not notebook.metadata.get("kernelspec", {}).get("name"):
        return notebook, NO_KERNEL_NAME
    return notebook, None


def _papermill_error(executed: Path, status: KernelStatus) -> str:
    """Return the message papermill ends a failed run with, naming the cell by its execution count."""
    execution_count = None
    traceback_lines: list[str] = []
    try:
        notebook = nbformat.read(executed, as_version=4)
        cell = notebook.cells[status.failing_cell or 0]
        execution_count = cell.get("execution_count")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                traceback_lines = [_ANSI.sub("", line) for line in output.get("traceback", [])]
    except (OSError, ValueError, IndexError) as error:
        logger.debug("executed notebook %s unreadable: %s", executed, error)
    if not traceback_lines:
        traceback_lines = [f"{status.error_name}: {status.error_value}"]
    return (
        "Traceback (most recent call last):\n"
        "papermill.exceptions.PapermillExecutionError: \n"
        + "-" * 75
        + f'\nException encountered at "In [{execution_count if execution_count is not None else "?"}]":\n'
        + "\n".join(traceback_lines)
        + "\n"
    )


def _log_text(entries: list[tuple[str, str]]) -> str:
    lines = [json.dumps({"stream_name": stream, "time": 0.0, "data": data}) for stream, data in entries]
    return "[" + "\n,".join(lines) + "]"


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise EmulatorError(400, f"Invalid page token {token!r}.") from error
    match = re.fullmatch(r"offset:(\d+)", text)
    if not match:
        raise EmulatorError(400, f"Invalid page token {token!r}.")
    return int(match.group(1))
