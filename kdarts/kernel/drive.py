"""A small Google Drive v3 client: upload files into a folder, list a folder, create subfolders.

Credentials come from a google-auth file: a service account key (`"type": "service_account"`) or
an authorized-user file (`"type": "authorized_user"`, as `gcloud auth application-default login`
writes it). The service account must have been given access to the target folder, which is shared
with its e-mail address. Tokens are only ever held in memory.

Uploads up to `MULTIPART_LIMIT` bytes are one multipart `files.create` request; larger ones use a
resumable upload session, sent in chunks. The API base URL can be changed, which the tests use to
point the client at a local fake of the Drive API.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kdarts.errors import BackendError

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://www.googleapis.com"
DRIVE_SCOPES = ("https://www.googleapis.com/auth/drive",)
FOLDER_MIME_TYPE = "application/vnd.google-apps.folder"
COLAB_MIME_TYPE = "application/vnd.google.colaboratory"
# Google documents multipart uploads for files of up to 5 MB; larger files take a resumable session.
MULTIPART_LIMIT = 5 * 1024 * 1024
# Chunks of a resumable upload must be multiples of 256 KiB.
CHUNK_SIZE = 32 * 256 * 1024
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 4
REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True)
class DriveFile:
    """A file or folder on Google Drive."""

    id: str
    name: str
    mime_type: str = ""
    size: int | None = None


def load_credentials(path: Path, scopes: tuple[str, ...] = DRIVE_SCOPES) -> Any:
    """Read google-auth credentials from a service-account key or an authorized-user file."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    path = Path(path).expanduser()
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise BackendError(f"Google credentials file {path} not found; set KDARTS_DRIVE_CREDENTIALS to a key file") from error
    except (OSError, json.JSONDecodeError) as error:
        raise BackendError(f"cannot read Google credentials file {path}: {error}") from error
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(info, scopes=list(scopes))
        if kind == "authorized_user":
            credentials = user_credentials.Credentials.from_authorized_user_info(info)
            # google-auth replaces the file's token_uri with Google's endpoint; honour the file.
            return credentials.with_token_uri(info["token_uri"]) if info.get("token_uri") else credentials
    except (ValueError, KeyError) as error:
        raise BackendError(f"Google credentials file {path} is incomplete: {error}") from error
    raise BackendError(
        f"Google credentials file {path} has type {kind!r}; expected 'service_account' or 'authorized_user'"
    )


class DriveClient:
    """Upload, list and create files in Google Drive through its REST API."""

    def __init__(self, credentials: Any, *, api_base: str = DEFAULT_API_BASE, timeout: float = REQUEST_TIMEOUT):
        from google.auth.transport.requests import AuthorizedSession

        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.session = AuthorizedSession(credentials)

    # Queries ------------------------------------------------------------------------------------

    def list_folder(self, folder_id: str, *, name: str | None = None, mime_type: str | None = None) -> list[DriveFile]:
        """Return the files in a folder that are not trashed, optionally only those with `name`."""
        clauses = [f"'{_quote(folder_id)}' in parents", "trashed = false"]
        if name is not None:
            clauses.append(f"name = '{_quote(name)}'")
        if mime_type is not None:
            clauses.append(f"mimeType = '{_quote(mime_type)}'")
        files: list[DriveFile] = []
        page_token = None
        while True:
            params = {
                "q": " and ".join(clauses),
                "fields": "nextPageToken, files(id, name, mimeType, size)",
                "pageSize": "1000",
                "supportsAllDrives": "true",
                "includeItemsFromAllDrives": "true",
            }
            if page_token:
                params["pageToken"] = page_token
            body = self._request("GET", "/drive/v3/files", params=params).json()
            files.extend(_drive_file(item) for item in body.get("files", []))
            page_token = body.get("nextPageToken")
            if not page_token:
                return files

    def ensure_folder(self, name: str, parent_id: str) -> str:
        """Return the id of the subfolder `name` of `parent_id`, creating it when it is missing."""
        found = self.list_folder(parent_id, name=name, mime_type=FOLDER_MIME_TYPE)
        if found:
            return found[0].id
        metadata = {"name": name, "mimeType": FOLDER_MIME_TYPE, "parents": [parent_id]}
        response = self._request(
            "POST", "/drive/v3/files", params={"fields": "id", "supportsAllDrives": "true"}, json=metadata
        )
        folder_id = response.json()["id"]
        logger.info("created Drive folder %s (%s) in %s", name, folder_id, parent_id)
        return folder_id

    def trash(self, file_id: str) -> None:
        """Move a file to the trash."""
        self._request("PATCH", f"/drive/v3/files/{file_id}", params={"supportsAllDrives": "true"}, json={"trashed": True})

    # Uploads ------------------------------------------------------------------------------------

    def upload(self, source: Path | bytes, *, name: str, parent_id: str, mime_type: str) -> DriveFile:
        """Upload a file or bytes as a new file `name` in folder `parent_id` and return it."""
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        metadata = {"name": name, "parents": [parent_id], "mimeType": mime_type}
        if size <= MULTIPART_LIMIT:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            uploaded = self._upload_multipart(metadata, data, mime_type)
        elif isinstance(source, bytes):
            import io

            uploaded = self._upload_resumable(metadata, io.BytesIO(source), size, mime_type)
        else:
            with Path(source).open("rb") as stream:
                uploaded = self._upload_resumable(metadata, stream, size, mime_type)
        logger.info("uploaded %s (%d bytes) to Drive folder %s as file %s", name, size, parent_id, uploaded.id)
        return uploaded

    def _upload_multipart(self, metadata: dict[str, Any], data: bytes, mime_type: str) -> DriveFile:
        boundary = f"kdarts-{uuid.uuid4().hex}"
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(metadata).encode("utf-8"),
                f"\r\n--{boundary}\r\nContent-Type: {mime_type}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        response = self._request(
            "POST",
            "/upload/drive/v3/files",
            params={"uploadType": "multipart", "fields": "id, name, mimeType, size", "supportsAllDrives": "true"},
            data=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )
        return _drive_file(response.json())

    def _upload_resumable(self, metadata: dict[str, Any], stream: BinaryIO, size: int, mime_type: str) -> DriveFile:
        response = self._request(
            "POST",
            "/upload/drive/v3/files",
            params={"uploadType": "resumable", "fields": "id, name, mimeType, size", "supportsAllDrives": "true"},
            json=metadata,
            headers={"X-Upload-Content-Type": mime_type, "X-Upload-Content-Length": str(size)},
        )
        session_url = response.headers.get("Location")
        if not session_url:
            raise BackendError("Google Drive started a resumable upload without a session URL; try again")

        offset = 0
        while offset < size:
            chunk = stream.read(CHUNK_SIZE)
            end = offset + len(chunk) - 1
            response = self._request(
                "PUT",
                session_url,
                data=chunk,
                headers={"Content-Range": f"bytes {offset}-{end}/{size}"},
                accept=(200, 201, 308),
            )
            offset = end + 1
            if response.status_code in (200, 201):
                return _drive_file(response.json())
        raise BackendError(f"Google Drive did not confirm the upload of {metadata['name']} after {size} bytes; upload it again")

    # Transport ----------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, accept: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        """Send one request, retrying throttling, server errors and lost connections with a backoff."""
        import requests
        from google.auth.exceptions import RefreshError, TransportError

        url = path if path.startswith("http") else f"{self.api_base}{path}"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except RefreshError as error:
                raise BackendError(f"Google rejected the Drive credentials: {error}; check the credentials file") from error
            except (requests.ConnectionError, requests.Timeout, TransportError) as error:
                if attempt == MAX_ATTEMPTS:
                    raise BackendError(f"{method} {url} failed after {attempt} attempts: {error}; check the network and retry") from error
                logger.warning("%s %s failed (%s); retry %d of %d", method, url, error, attempt, MAX_ATTEMPTS - 1)
            else:
                if response.status_code in accept:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt == MAX_ATTEMPTS:
                    raise BackendError(_describe_failure(method, url, response))
                logger.warning("%s %s returned HTTP %d; retry %d of %d", method, url, response.status_code, attempt, MAX_ATTEMPTS - 1)
            time.sleep(min(2.0 ** (attempt - 1), 8.0))
        raise AssertionError("unreachable")


def _drive_file(item: dict[str, Any]) -> DriveFile:
    size = item.get("size")
    return DriveFile(id=item["id"], name=item.get("name", ""), mime_type=item.get("mimeType", ""), size=int(size) if size else None)


def _quote(text: str) -> str:
    # Drive queries quote strings with single quotes; a quote or backslash inside is escaped.
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _describe_failure(method: str, url: str, response: Any) -> str:
    try:
        message = response.json().get("error", {}).get("message") or response.text
    except ValueError:
        message = response.text
    hint = {
        401: "check the credentials file",
        403: "share the Drive folder with the service account's e-mail address, or use credentials that can write to it",
        404: "check KDARTS_DRIVE_FOLDER_ID and that the folder is shared with these credentials",
    }.get(response.status_code, "try again later")
    return f"Google Drive: {method} {url.split('?')[0]} failed with HTTP {response.status_code}: {message.strip()[:200]}; {hint}"
