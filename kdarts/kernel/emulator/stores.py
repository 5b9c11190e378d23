"""The emulated account's state: uploaded blobs and datasets, persisted in `state.json`.

Datasets follow Kaggle's rules. A version contains only the files uploaded with it. An uploaded
`.zip` or `.tar` archive is unpacked into a folder named after it, which is how `dir_mode='zip'`
keeps sub-folders. A new version is `processing` for a while before it is `ready`, and a ready
version is moved into the local backend's dataset store, where pushed kernels find it.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field

from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends.local import LocalBackend
from kdarts.kernel.emulator.faults import FaultPlan

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
DATASET_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{4,48}[a-z0-9]$")
# License names the emulator accepts. NOTE: CC0-1.0 (the client's default) is documented by Kaggle;
# the rest are common identifiers, not checked against Kaggle's own list.
LICENSE_NAMES = frozenset(
    {
        "CC0-1.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "CC-BY-4.0", "CC-BY-NC-4.0",
        "GPL-2.0", "GPL-3.0", "LGPL-3.0", "AGPL-3.0", "ODbL-1.0", "DbCL-1.0", "PDDL", "ODC-BY-1.0",
        "MIT", "Apache-2.0", "BSD-3-Clause", "copyright-authors", "reddit-api", "world-bank",
        "other", "unknown",
    }
)
# Kaggle's DatabundleVersionStatus names: a version being processed reports the first, a ready one the second.
STATUS_PROCESSING = "BLOBS_RECEIVED"
STATUS_READY = "READY"
STATUS_FAILED = "FAILED"


class EmulatorError(Exception):
    """A request the emulator rejects, with the HTTP status and message Kaggle would send."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BlobRecord(BaseModel):
    """An upload started with StartBlobUpload."""

    token: str
    name: str
    content_length: int
    received: int = 0
    created_at: float


class DatasetVersionRecord(BaseModel):
    """One dataset version: processing until `ready_at`, then ready (or failed)."""

    number: int
    notes: str = ""
    created_at: float
    ready_at: float
    state: Literal["processing", "ready", "failed"] = "processing"
    files: list[str] = Field(default_factory=list)
    error: str | None = None


class DatasetRecord(BaseModel):
    """A dataset and its versions."""

    id: int
    owner: str
    slug: str
    title: str
    subtitle: str | None = None
    description: str | None = None
    license_name: str
    is_private: bool = True
    keywords: list[str] = Field(default_factory=list)
    versions: list[DatasetVersionRecord] = Field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"


class KernelVersionRecord(BaseModel):
    """One pushed kernel version and the local backend version that runs it."""

    number: int
    pushed_at: float
    start_at: float
    local_version: int | None = None
    failure: str | None = None
    dataset_sources: list[str] = Field(default_factory=list)
    kernel_sources: list[str] = Field(default_factory=list)
    session_timeout: float
    code_file: str


class KernelRecord(BaseModel):
    """A kernel and its versions."""

    id: int
    owner: str
    slug: str
    title: str
    language: str = "python"
    kernel_type: str = "notebook"
    is_private: bool = True
    enable_internet: bool = True
    machine_shape: str | None = None
    dataset_sources: list[str] = Field(default_factory=list)
    versions: list[KernelVersionRecord] = Field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"


class EmulatorState(BaseModel):
    """Everything the emulator stores about kernels, datasets and uploads, as saved in `state.json`."""

    next_id: int = 1000
    blobs: dict[str, BlobRecord] = Field(default_factory=dict)
    datasets: dict[str, DatasetRecord] = Field(default_factory=dict)
    kernels: dict[str, KernelRecord] = Field(default_factory=dict)


class Registry:
    """The state, its lock and its file; every store shares one."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.RLock()
        path = root / STATE_FILE
        self.state = EmulatorState.model_validate_json(path.read_text()) if path.is_file() else EmulatorState()

    def save(self) -> None:
        with self.lock:
            write_json_atomic(self.root / STATE_FILE, json.loads(self.state.model_dump_json()))

    def new_id(self) -> int:
        with self.lock:
            self.state.next_id += 1
            return self.state.next_id


class BlobStore:
    """Resumable uploads: the client PUTs bytes to a URL, in one piece or resumed with Content-Range."""

    def __init__(self, registry: Registry, base_url: Callable[[], str]):
        self.registry = registry
        self.folder = registry.root / "blobs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._base_url = base_url

    def start(self, name: str, content_length: int) -> dict[str, str]:
        """Open an upload and return its token and the URL to PUT the bytes to."""
        if not name or "/" in name or name in (".", ".."):
            raise EmulatorError(400, f"Invalid blob name {name!r}.")
        if content_length < 0:
            raise EmulatorError(400, f"Invalid content length {content_length}.")
        token = secrets.token_urlsafe(18)
        (self.folder / token).write_bytes(b"")
        with self.registry.lock:
            self.registry.state.blobs[token] = BlobRecord(token=token, name=name, content_length=content_length, created_at=time.time())
            self.registry.save()
        logger.info("blob upload %s started: %s, %d bytes", token[:8], name, content_length)
        return {"token": token, "createUrl": f"{self._base_url()}/_upload/{token}"}

    def receive(
        self, token: str, content_range: str | None, length: int, read: Callable[[int], bytes], keep: int | None = None
    ) -> tuple[int, dict[str, str]]:
        """Store the body of an upload PUT; return the HTTP status and headers to respond with.

        200 means the upload is complete; 308 (Resume Incomplete) carries `Range: bytes=0-<last>`
        with the last byte received, as Google Cloud Storage responds; 404 means the upload is unknown.
        With `keep`, only that many bytes of the body are read and stored, so an injected fault can
        leave a partial upload behind; the caller reads or drops the rest.
        """
        with self.registry.lock:
            record = self.registry.state.blobs.get(token)
        if record is None:
            return 404, {}
        total = record.content_length
        start, query = _parse_content_range(content_range, total, length)

        if query:
            return self._progress(record)
        if start > record.received:
            raise EmulatorError(400, f"Content-Range starts at byte {start}, but only {record.received} bytes were received.")
        if start + length > total:
            raise EmulatorError(400, f"The body ends at byte {start + length}, past the declared size of {total} bytes.")

        limit = length if keep is None else min(length, keep)
        written = 0
        with (self.folder / token).open("r+b") as file:
            file.seek(start)
            while written < limit:
                chunk = read(min(1 << 20, limit - written))
                if not chunk:
                    break
                file.write(chunk)
                written += len(chunk)
            file.truncate(start + written)
        with self.registry.lock:
            record.received = start + written
            self.registry.save()
        return self._progress(record)

    def _progress(self, record: BlobRecord) -> tuple[int, dict[str, str]]:
        if record.received >= record.content_length:
            return 200, {}
        if record.received == 0:
            return 308, {}
        return 308, {"Range": f"bytes=0-{record.received - 1}"}

    def complete_blob(self, token: str) -> tuple[BlobRecord, Path]:
        """Return a fully uploaded blob and its file, or raise when it is unknown or incomplete."""
        with self.registry.lock:
            record = self.registry.state.blobs.get(token)
        if record is None:
            raise EmulatorError(400, f"Unknown upload token {token[:8]}...; upload the file again.")
        if record.received != record.content_length:
            raise EmulatorError(400, f"The upload of {record.name} is incomplete ({record.received} of {record.content_length} bytes).")
        return record, self.folder / token


def _parse_content_range(value: str | None, total: int, length: int) -> tuple[int, bool]:
    """Return (first byte, whether this is a progress query) for a Content-Range header."""
    if value is None:
        return 0, False
    match = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\d+|\*)", value.strip())
    if not match:
        raise EmulatorError(400, f"Invalid Content-Range {value!r}.")
    if match.group(4) != "*" and int(match.group(4)) != total:
        raise EmulatorError(400, f"Content-Range total {match.group(4)} does not match the declared size {total}.")
    if match.group(1) == "*":
        return 0, True
    first, last = int(match.group(2)), int(match.group(3))
    if last - first + 1 != length:
        raise EmulatorError(400, f"Content-Range {value!r} does not match a body of {length} bytes.")
    return first, False


class DatasetStore:
    """Datasets and their versions; ready versions live in the local backend's dataset store."""

    def __init__(self, registry: Registry, blobs: BlobStore, local: LocalBackend, faults: FaultPlan, processing_seconds: float, base_url: Callable[[], str]):
        self.registry = registry
        self.blobs = blobs
        self.local = local
        self.faults = faults
        self.processing_seconds = processing_seconds
        self.staging = registry.root / "staging"
        self._base_url = base_url

    # Reading ------------------------------------------------------------------------------------

    def get(self, user: str, owner: str, slug: str) -> DatasetRecord:
        """Return a dataset the user may see, after promoting versions whose processing ended."""
        self.promote()
        with self.registry.lock:
            record = self.registry.state.datasets.get(f"{owner}/{slug}")
        if record is None or (record.is_private and record.owner != user):
            raise EmulatorError(404, f"Dataset {owner}/{slug} not found.")
        return record

    def status(self, user: str, owner: str, slug: str) -> dict[str, Any]:
        record = self.get(user, owner, slug)
        state = record.versions[-1].state
        name = {"processing": STATUS_PROCESSING, "ready": STATUS_READY, "failed": STATUS_FAILED}[state]
        return {"status": name}

    def metadata(self, user: str, owner: str, slug: str) -> dict[str, Any]:
        record = self.get(user, owner, slug)
        info = {
            "datasetId": record.id,
            "datasetSlug": record.slug,
            "ownerUser": record.owner,
            "title": record.title,
            "subtitle": record.subtitle,
            "description": record.description,
            "isPrivate": record.is_private,
            "keywords": record.keywords,
            "licenses": [{"name": record.license_name}],
            "collaborators": [],
            "data": [],
        }
        return {"info": {key: value for key, value in info.items() if value is not None}}

    def describe(self, user: str, owner: str, slug: str) -> dict[str, Any]:
        """Return the GetDataset response, with the current version's number and files."""
        record = self.get(user, owner, slug)
        ready = [version for version in record.versions if version.state == "ready"]
        current = record.versions[-1]
        return {
            "id": record.id,
            "ref": record.ref,
            "title": record.title,
            "url": f"{self._base_url()}/datasets/{record.ref}",
            "isPrivate": record.is_private,
            "licenseName": record.license_name,
            "ownerName": record.owner,
            "ownerRef": record.owner,
            "currentVersionNumber": current.number,
            "files": [{"ref": name, "name": name} for name in (ready[-1].files if ready else [])],
            "versions": [{"versionNumber": version.number, "status": version.state} for version in record.versions],
        }

    # Writing ------------------------------------------------------------------------------------

    def create(self, user: str, request: dict[str, Any]) -> dict[str, Any]:
        """Create a dataset and its first version from uploaded blobs (CreateDataset)."""
        owner = request.get("ownerSlug") or user
        slug = request.get("slug") or ""
        title = request.get("title") or ""
        license_name = request.get("licenseName") or ""
        if owner != user:
            raise EmulatorError(403, f"User {user} may not create datasets owned by {owner}.")
        problem = _dataset_problem(slug, title, license_name)
        if problem:
            return {"status": "error", "error": problem}
        with self.registry.lock:
            if f"{owner}/{slug}" in self.registry.state.datasets:
                return {"status": "error", "error": f'The requested slug "{slug}" is already in use by a dataset. Please choose another slug.'}
            files = self._resolve_files(request.get("files") or [])
            record = DatasetRecord(
                id=self.registry.new_id(),
                owner=owner,
                slug=slug,
                title=title,
                subtitle=request.get("subtitle"),
                description=request.get("description"),
                license_name=license_name,
                is_private=bool(request.get("isPrivate", False)),
                keywords=list(request.get("categoryIds") or []),
            )
            self.registry.state.datasets[record.ref] = record
            self._add_version(record, files, notes="Initial release")
        logger.info("dataset %s created", record.ref)
        return {"status": "ok", "ref": record.ref, "url": f"{self._base_url()}/datasets/{record.ref}"}

    def create_version(self, user: str, owner: str, slug: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add a version holding exactly the uploaded files (CreateDatasetVersion)."""
        record = self.get(user, owner, slug)
        if record.owner != user:
            raise EmulatorError(403, f"User {user} may not add versions to {record.ref}.")
        with self.registry.lock:
            if record.versions[-1].state == "processing":
                raise EmulatorError(403, f"The previous version of {record.ref} is still being processed; wait until its status is ready.")
            files = self._resolve_files(body.get("files") or [])
            version = self._add_version(record, files, notes=body.get("versionNotes") or "")
        logger.info("dataset %s version %d created", record.ref, version.number)
        return {"status": "ok", "ref": record.ref, "url": f"{self._base_url()}/datasets/{record.ref}"}

    def _resolve_files(self, files: list[dict[str, Any]]) -> list[tuple[str, Path]]:
        if not files:
            raise EmulatorError(400, "A dataset version needs at least one file.")
        resolved = []
        for item in files:
            record, path = self.blobs.complete_blob(str(item.get("token") or ""))
            resolved.append((record.name, path))
        return resolved

    def _add_version(self, record: DatasetRecord, files: list[tuple[str, Path]], notes: str) -> DatasetVersionRecord:
        number = len(record.versions) + 1
        folder = self.staging / record.owner / record.slug / f"v{number}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        processing = self.processing_seconds
        slow = self.faults.take("CreateDataset", {"slow_processing"}) or self.faults.take("CreateDatasetVersion", {"slow_processing"})
        if slow is not None:
            processing = slow.seconds
        version = DatasetVersionRecord(number=number, notes=notes, created_at=time.time(), ready_at=time.time() + processing)
        try:
            for name, path in files:
                _unpack(name, path, folder)
        except EmulatorError as error:
            version.state = "failed"
            version.error = error.message
            logger.warning("dataset %s version %d failed: %s", record.ref, number, error.message)
        version.files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
        record.versions.append(version)
        self.registry.save()
        return version

    def promote(self) -> None:
        """Move versions whose processing time has passed into the local store, oldest first."""
        now = time.time()
        with self.registry.lock:
            changed = False
            for record in self.registry.state.datasets.values():
                for version in record.versions:
                    if version.state != "processing" or version.ready_at > now:
                        continue
                    source = self.staging / record.owner / record.slug / f"v{version.number}"
                    target = self.local.dataset_folder(record.ref) / f"v{version.number}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.rmtree(target, ignore_errors=True)
                    source.rename(target)
                    _make_read_only(target)
                    version.state = "ready"
                    changed = True
                    logger.info("dataset %s version %d is ready", record.ref, version.number)
            if changed:
                self.registry.save()

    def ready_version(self, ref: str) -> int | None:
        """Return the newest ready version of a dataset, or None."""
        self.promote()
        with self.registry.lock:
            record = self.registry.state.datasets.get(ref)
            if record is None:
                return None
            ready = [version.number for version in record.versions if version.state == "ready"]
        return ready[-1] if ready else None


def _make_read_only(folder: Path) -> None:
    # Kaggle mounts datasets read-only. Clearing the write bits makes a notebook that writes into
    # its input fail here too, unless it runs as root, which ignores them.
    for path in sorted(folder.rglob("*"), reverse=True):
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)
    folder.chmod(0o555)


def _dataset_problem(slug: str, title: str, license_name: str) -> str | None:
    if not DATASET_SLUG.match(slug):
        return f"The dataset slug {slug!r} is invalid: use 6 to 50 lowercase letters, digits and dashes."
    if not 6 <= len(title) <= 50:
        return f"The dataset title {title!r} must be between 6 and 50 characters."
    if license_name not in LICENSE_NAMES:
        return f"Unknown license {license_name!r}."
    return None


def _unpack(name: str, blob: Path, folder: Path) -> None:
    """Store one uploaded file in a version folder; archives become a folder named after them."""
    lowered = name.lower()
    if lowered.endswith(".zip"):
        target = folder / name[: -len(".zip")]
        with zipfile.ZipFile(blob) as archive:
            for member in archive.infolist():
                _check_member(name, member.filename)
            target.mkdir(parents=True, exist_ok=True)
            archive.extractall(target)
    elif lowered.endswith(".tar"):
        target = folder / name[: -len(".tar")]
        with tarfile.open(blob) as archive:
            for member in archive.getmembers():
                _check_member(name, member.name)
                if not (member.isfile() or member.isdir()):
                    raise EmulatorError(400, f"{name} contains {member.name}, which is neither a file nor a folder.")
            target.mkdir(parents=True, exist_ok=True)
            archive.extractall(target, filter="data")
    else:
        shutil.copyfile(blob, folder / name)


def _check_member(archive: str, member: str) -> None:
    path = PurePosixPath(member)
    if path.is_absolute() or ".." in path.parts:
        raise EmulatorError(400, f"{archive} contains the unsafe path {member!r}.")

