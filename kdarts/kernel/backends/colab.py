"""The `colab` backend: uploads a kernel's Colab notebook to a Google Drive folder.

Colab has no API that starts a notebook, so a push uploads `<slug>-v<N>.ipynb` into the Drive
folder and returns the link that opens it in Colab; the user runs it there by hand. The notebook
mounts Drive and writes its outputs and checkpoints to `<drive_folder>/runs/<slug>` in that same
folder, so the results are read from Drive, not pulled.

Datasets are archives in the folder's `datasets` subfolder: publishing one uploads `<slug>.tar.gz`
and moves older copies to the trash, and the notebook unpacks it on the runtime's disk.

Settings come from the environment:

    KDARTS_DRIVE_CREDENTIALS   google-auth file: service-account key or authorized-user credentials
                               (GOOGLE_APPLICATION_CREDENTIALS is used when this is unset)
    KDARTS_DRIVE_FOLDER_ID     id of the Drive folder that the spec's drive_folder names
    KDARTS_DRIVE_API           API base URL (default https://www.googleapis.com)
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import tempfile
import time
from pathlib import Path

from kdarts.errors import BackendError
from kdarts.fileio import write_json_atomic
from kdarts.kernel.backends.base import Backend, DatasetVersion, KernelStatus, PushResult, register_backend
from kdarts.kernel.drive import COLAB_MIME_TYPE, DEFAULT_API_BASE, DriveClient, load_credentials
from kdarts.kernel.render import Bundle

logger = logging.getLogger(__name__)

COLAB_URL = "https://colab.research.google.com/drive/{file_id}"
DATASETS_FOLDER = "datasets"
ARCHIVE_SUFFIX = ".tar.gz"
ARCHIVE_MIME_TYPE = "application/gzip"
DRIVE_OWNER = "drive"


def colab_link(file_id: str) -> str:
    """Return the URL that opens a Drive notebook in Colab."""
    return COLAB_URL.format(file_id=file_id)


@register_backend
class ColabBackend(Backend):
    """Upload Colab notebooks and dataset archives to a Google Drive folder."""

    name = "colab"
    target = "colab"

    def __init__(
        self,
        *,
        credentials_file: Path | None = None,
        folder_id: str | None = None,
        api_base: str | None = None,
        state_root: Path | None = None,
    ):
        from kdarts.kernel.backends.local import default_home

        credentials_file = credentials_file or os.environ.get("KDARTS_DRIVE_CREDENTIALS") or os.environ.get(
            "GOOGLE_APPLICATION_CREDENTIALS"
        )
        if not credentials_file:
            raise BackendError(
                "the colab backend needs Google credentials: set KDARTS_DRIVE_CREDENTIALS to a service-account "
                "key or an authorized-user credentials file"
            )
        self.folder_id = folder_id or os.environ.get("KDARTS_DRIVE_FOLDER_ID")
        if not self.folder_id:
            raise BackendError(
                "the colab backend needs the Drive folder to upload into: set KDARTS_DRIVE_FOLDER_ID to the id "
                "of the folder that the spec's drive_folder names (the last part of the folder's URL)"
            )
        self.credentials_file = Path(credentials_file)
        self.api_base = api_base or os.environ.get("KDARTS_DRIVE_API") or DEFAULT_API_BASE
        self.state_root = Path(state_root) if state_root is not None else default_home() / "colab"
        self._client: DriveClient | None = None

    @property
    def owner(self) -> str:
        return DRIVE_OWNER

    @property
    def client(self) -> DriveClient:
        if self._client is None:
            self._client = DriveClient(load_credentials(self.credentials_file), api_base=self.api_base)
        return self._client

    # Kernels ------------------------------------------------------------------------------------

    def push(self, bundle: Bundle, *, session_limit: float | None = None) -> PushResult:
        ref = bundle.ref
        slug = ref.split("/")[1]
        records = self._records(ref)
        version = (records[-1]["version"] if records else 0) + 1
        uploaded = self.client.upload(
            bundle.notebook.read_bytes(), name=f"{slug}-v{version}.ipynb", parent_id=self.folder_id, mime_type=COLAB_MIME_TYPE
        )
        url = colab_link(uploaded.id)
        records.append({"version": version, "file_id": uploaded.id, "url": url, "pushed_at": time.time()})
        write_json_atomic(self._record_path(ref), records)
        logger.info("uploaded %s version %d to Drive as %s", ref, version, uploaded.id)
        return PushResult(ref=ref, version=version, url=url)

    def status(self, ref: str, version: int | None = None) -> KernelStatus:
        record = self._record(ref, version)
        return KernelStatus(
            ref=ref,
            version=record["version"],
            state="queued",
            message=f"uploaded to Google Drive; run it by hand in Colab: {record['url']}",
        )

    def download_output(self, ref: str, version: int, target: Path) -> list[Path]:
        record = self._record(ref, version)
        raise BackendError(
            f"{ref} v{version} runs in Colab, which writes its outputs to Google Drive (runs/{ref.split('/')[1]} in the "
            f"upload folder); open {record['url']} to run it and read the results from Drive"
        )

    # Datasets -----------------------------------------------------------------------------------

    def dataset_exists(self, ref: str) -> bool:
        slug = ref.split("/")[-1]
        datasets = self.client.list_folder(self.folder_id, name=DATASETS_FOLDER)
        if not datasets:
            return False
        return any(item.name in (slug, f"{slug}{ARCHIVE_SUFFIX}") for item in self.client.list_folder(datasets[0].id))

    def publish_dataset(self, ref: str, folder: Path, *, title: str, message: str = "") -> DatasetVersion:
        slug = ref.split("/")[-1]
        source = Path(folder)
        if not source.is_dir():
            raise BackendError(f"cannot publish {ref}: {source} is not a folder")
        datasets_id = self.client.ensure_folder(DATASETS_FOLDER, self.folder_id)
        previous = self.client.list_folder(datasets_id, name=f"{slug}{ARCHIVE_SUFFIX}")

        files = [path for path in source.iterdir() if not path.name.startswith(".")]
        with tempfile.TemporaryDirectory(prefix="kdarts-drive-") as staging:
            if len(files) == 1 and files[0].is_file() and files[0].name.endswith((".tar.gz", ".tgz")):
                archive = files[0]  # already an archive: uploaded as it is
            else:
                archive = Path(staging) / f"{slug}{ARCHIVE_SUFFIX}"
                _pack(source, archive)
            self.client.upload(archive, name=f"{slug}{ARCHIVE_SUFFIX}", parent_id=datasets_id, mime_type=ARCHIVE_MIME_TYPE)
        # A new version replaces the archive: the notebook finds datasets by name.
        for item in previous:
            self.client.trash(item.id)
        version = len(previous) + 1
        logger.info("published dataset %s to Drive (%d older archive(s) moved to the trash)", ref, len(previous))
        return DatasetVersion(ref=f"{DRIVE_OWNER}/{slug}", version=version, status="ready")

    # Local records of pushes --------------------------------------------------------------------

    def _record_path(self, ref: str) -> Path:
        return self.state_root / f"{ref.replace('/', '__')}.json"

    def _records(self, ref: str) -> list[dict]:
        path = self._record_path(ref)
        return json.loads(path.read_text()) if path.is_file() else []

    def _record(self, ref: str, version: int | None) -> dict:
        records = self._records(ref)
        if version is not None:
            records = [record for record in records if record["version"] == version]
        if not records:
            raise BackendError(f"{ref} version {version or 'any'} was never uploaded with the colab backend from this machine")
        return records[-1]


def _pack(source: Path, archive: Path) -> None:
    # Entries are relative to the folder, so the archive unpacks to its contents; hidden files stay out.
    with tarfile.open(archive, "w:gz") as bundle:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            bundle.add(path, arcname=relative.as_posix(), recursive=False)
