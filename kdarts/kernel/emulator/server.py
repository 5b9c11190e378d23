"""The HTTP side of the emulator: Kaggle's RPC paths, blob uploads, output downloads, fault control.

The `kaggle` client (2.2.5) sends every call as `POST <endpoint>/api/v1/<service>/<Method>` with a
JSON body and reads a JSON response. A response whose `code` is 400 or more is an error even
with HTTP 200. The server also accepts absolute-form requests (`POST http://localhost/api/v1/...`), so a
client can reach it as its HTTP proxy. It listens on 127.0.0.1 only.

Besides the RPCs, it serves:
    PUT  /_upload/<token>                   resumable blob uploads (Content-Range, 308)
    GET  /_output/<owner>/<slug>/<N>/<path>  signed output file downloads
    GET  /_emulator/health                  readiness check, no credentials needed
    POST /_emulator/faults                  inject faults (a Fault or a list of them)
    GET|DELETE /_emulator/faults            list or clear the faults still pending
    GET|DELETE /_emulator/requests          read or clear the request log
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, ValidationError

from kdarts.kernel.backends.local import LocalBackend
from kdarts.kernel.emulator.faults import FAULT_HELP, TRANSPORT_KINDS, Fault, FaultPlan, RequestRecord
from kdarts.kernel.emulator.kernels import KernelStore
from kdarts.kernel.emulator.stores import BlobStore, DatasetStore, EmulatorError, Registry

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
RPC_PREFIX = "/api/v1/"
CHUNK_SIZE = 1 << 20
UNAUTHENTICATED = "Unauthenticated: missing or invalid credentials."


class EmulatorSettings(BaseModel):
    """Emulator settings: the state folder, the port and the users it accepts."""

    root: Path
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    users: dict[str, str] = Field(description="username -> API key; the key is also accepted as an access token")
    processing_seconds: float = Field(1.0, ge=0, description="how long a new dataset version stays processing")


class _DropConnection(Exception):
    """Close the connection without a response."""


class KaggleEmulator:
    """A Kaggle-compatible server that runs pushed kernels with the local backend."""

    def __init__(self, settings: EmulatorSettings):
        if not settings.users:
            raise ValueError("the emulator needs at least one user")
        self.settings = settings
        self.root = settings.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.faults = FaultPlan()
        self.registry = Registry(self.root)
        self.local = LocalBackend(self.root / "local")
        self.blobs = BlobStore(self.registry, self._base_url)
        self.datasets = DatasetStore(self.registry, self.blobs, self.local, self.faults, settings.processing_seconds, self._base_url)
        self.kernels = KernelStore(self.registry, self.datasets, self.local, self.faults, self._base_url)
        self._server = ThreadingHTTPServer((HOST, settings.port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _base_url(self) -> str:
        return self.url

    def start(self) -> KaggleEmulator:
        """Serve in a background thread and return at once."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="kaggle-emulator", daemon=True)
        self._thread.start()
        logger.info("Kaggle emulator listening on %s (state in %s)", self.url, self.root)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted, then stop."""
        logger.info("Kaggle emulator listening on %s (state in %s)", self.url, self.root)
        try:
            self._server.serve_forever()
        finally:
            self.stop()

    def interrupt(self) -> None:
        """Make `serve_forever` return; safe to call from a signal handler in the serving thread."""
        # shutdown() waits for serve_forever to return, so it must not run in the serving thread.
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    def stop(self) -> None:
        """Stop serving, cancel queued kernel starts and stop the workers this emulator started."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()
        self.kernels.shutdown()
        logger.info("Kaggle emulator on %s stopped", self.url)

    def __enter__(self) -> KaggleEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def authenticate(self, header: str | None) -> str:
        """Return the user an Authorization header names, or raise HTTP 401."""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, key = base64.b64decode(value).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user, key = "", ""
                if user in self.settings.users and self.settings.users[user] == key:
                    return user
            elif scheme.lower() == "bearer":
                for user, key in self.settings.users.items():
                    if key == value.strip():
                        return user
        raise EmulatorError(401, UNAUTHENTICATED)

    def introspect(self, body: dict[str, Any]) -> dict[str, Any]:
        for user, key in self.settings.users.items():
            if key == body.get("token"):
                return {"active": True, "username": user}
        return {"active": False}

    def rpc(self, method: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
        """Run one RPC for an authenticated user and return its JSON response."""
        kernels, datasets = self.kernels, self.datasets
        owner, slug = body.get("userName") or body.get("ownerSlug") or "", body.get("kernelSlug") or body.get("datasetSlug") or ""
        label = body.get("versionLabel")
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "SaveKernel": lambda: kernels.save(user, body),
            "GetKernelSessionStatus": lambda: kernels.status(user, owner, slug, label),
            "ListKernelSessionOutput": lambda: kernels.output(user, owner, slug, label, body.get("pageSize"), body.get("pageToken")),
            "GetKernel": lambda: kernels.get(user, owner, slug, label),
            "StartBlobUpload": lambda: self.blobs.start(str(body.get("name") or ""), int(body.get("contentLength") or 0)),
            "GetDatasetStatus": lambda: datasets.status(user, owner, slug),
            "GetDatasetMetadata": lambda: datasets.metadata(user, owner, slug),
            "GetDataset": lambda: datasets.describe(user, owner, slug),
            "CreateDataset": lambda: datasets.create(user, body),
            "CreateDatasetVersion": lambda: datasets.create_version(user, owner, slug, body.get("body") or {}),
        }
        if method not in handlers:
            raise EmulatorError(404, f"The emulator does not implement {method}.")
        return handlers[method]()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kdarts-kaggle-emulator"
    # Headers and body go out in separate writes. With Nagle's algorithm on, each response on a
    # kept-alive connection would then wait for the client's delayed ACK (about 40 ms).
    disable_nagle_algorithm = True

    @property
    def emulator(self) -> KaggleEmulator:
        return self.server.emulator  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    # Dispatch -----------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        # A proxy request names the whole URL; only its path and query matter here.
        target = urlsplit(self.path)
        path, query = unquote(target.path), parse_qs(target.query)
        record = RequestRecord(time=time.time(), method=self.command, target=path, path=path, status=None)
        self._chunked: bytes | None = None
        try:
            if path.startswith(RPC_PREFIX) and self.command == "POST":
                self._rpc(path, record)
            elif path.startswith("/_upload/") and self.command == "PUT":
                self._upload(path.removeprefix("/_upload/"), record)
            elif path.startswith("/_output/") and self.command == "GET":
                self._download(path.removeprefix("/_output/"), query.get("sig", [""])[0], record)
            elif path.startswith("/_extra/") and self.command == "GET":
                self._send_bytes(200, self.emulator.kernels.extra_file(path.removeprefix("/_extra/")), record)
            elif path.startswith("/_emulator/"):
                self._admin(path.removeprefix("/_emulator/"), record)
            else:
                raise EmulatorError(404, f"No such path: {self.command} {path}")
        except _DropConnection:
            record.status = None
            self.close_connection = True
        except _RateLimited as error:
            headers = {"Retry-After": f"{error.retry_after:g}"}
            self._send_json(429, {"code": 429, "message": error.message}, record, headers=headers)
        except EmulatorError as error:
            self._send_json(error.status, {"code": error.status, "message": error.message}, record)
        except Exception as error:  # an emulator bug still gets a response, like a server's 500
            logger.exception("emulator failed on %s %s", self.command, path)
            self._send_json(500, {"code": 500, "message": f"Internal emulator error: {type(error).__name__}: {error}"}, record)
        finally:
            if not path.startswith("/_emulator/"):
                self.emulator.faults.record(record)

    def _rpc(self, path: str, record: RequestRecord) -> None:
        parts = path.removeprefix(RPC_PREFIX).split("/")
        if len(parts) != 2:
            raise EmulatorError(404, f"No such RPC path: {path}")
        service, method = parts
        record.target = method
        body = self._read_json()
        record.version_label = body.get("versionLabel")
        self._inject(method, record)
        if method == "IntrospectToken":
            self._send_json(200, self.emulator.introspect(body), record)
            return
        user = self.emulator.authenticate(self.headers.get("Authorization"))
        self._send_json(200, self.emulator.rpc(method, user, body), record)

    def _inject(self, target: str, record: RequestRecord, *, drain: bool = False) -> None:
        """Respond with an injected fault for `target`, if one is pending."""
        fault = self.emulator.faults.take(target, TRANSPORT_KINDS)
        if fault is None:
            return
        record.fault = fault.kind
        logger.info("injecting %s into %s %s", fault.kind, self.command, record.path)
        if drain:
            self._drain_body()
        if fault.kind == "drop":
            raise _DropConnection
        if fault.kind == "rate_limit":
            raise _RateLimited(fault.retry_after)
        if fault.kind == "reject_credentials":
            raise EmulatorError(401, UNAUTHENTICATED)
        raise EmulatorError(fault.status, f"Injected server error on {target}.")

    def _upload(self, token: str, record: RequestRecord) -> None:
        record.target = "upload"
        record.content_range = self.headers.get("Content-Range")
        fault = self.emulator.faults.take("upload", TRANSPORT_KINDS)
        length = self._body_length()
        read = io.BytesIO(self._chunked).read if self._chunked is not None else self.rfile.read
        keep = (fault.after_bytes or 0) if fault is not None else None
        status, headers = self.emulator.blobs.receive(token, record.content_range, length, read, keep=keep)
        if fault is not None:
            record.fault = fault.kind
            logger.info("injecting %s into an upload after %d bytes", fault.kind, keep)
            if fault.kind == "drop":
                raise _DropConnection
            if self._chunked is None:
                self._drain_body(length - (keep or 0))
            if fault.kind == "rate_limit":
                raise _RateLimited(fault.retry_after)
            if fault.kind == "reject_credentials":
                raise EmulatorError(401, UNAUTHENTICATED)
            raise EmulatorError(fault.status, "Injected server error on upload.")
        self._send_bytes(status, b"" if status == 308 else b"{}", record, headers=headers)

    def _download(self, rest: str, signature: str, record: RequestRecord) -> None:
        record.target = "download"
        self._inject("download", record)
        parts = rest.split("/", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            raise EmulatorError(404, "Not found.")
        owner, slug, number, name = parts
        path = self.emulator.kernels.output_file(owner, slug, int(number), name, signature)
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                self.wfile.write(chunk)
        record.status = 200

    def _admin(self, name: str, record: RequestRecord) -> None:
        if name == "health":
            self._send_json(200, {"ok": True, "url": self.emulator.url}, record)
            return
        self.emulator.authenticate(self.headers.get("Authorization"))
        faults = self.emulator.faults
        if name == "faults" and self.command == "POST":
            body = self._read_json_value()
            items = body if isinstance(body, list) else [body]
            try:
                added = [Fault.model_validate(item) for item in items]
            except ValidationError as error:
                raise EmulatorError(400, f"Invalid fault: {error}") from error
            for fault in added:
                faults.add(fault)
            self._send_json(200, {"pending": [fault.model_dump() for fault in faults.pending()]}, record)
        elif name == "faults" and self.command in ("GET", "DELETE"):
            if self.command == "DELETE":
                faults.clear()
            pending = [fault.model_dump() for fault in faults.pending()]
            self._send_json(200, {"pending": pending, "kinds": FAULT_HELP}, record)
        elif name == "requests" and self.command in ("GET", "DELETE"):
            if self.command == "DELETE":
                faults.clear_requests()
            self._send_json(200, {"requests": [item.model_dump() for item in faults.requests()]}, record)
        else:
            raise EmulatorError(404, f"No such emulator path: {self.command} /_emulator/{name}")

    # Bodies -------------------------------------------------------------------------------------

    def _body_length(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._chunked = self._read_chunked()
            return len(self._chunked)
        return int(self.headers.get("Content-Length") or 0)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return bytes(data)
            data += self.rfile.read(size)
            self.rfile.readline()

    def _read_body(self) -> bytes:
        length = self._body_length()
        if self._chunked is not None:
            return self._chunked
        return self.rfile.read(length) if length else b""

    def _drain_body(self, length: int | None = None) -> None:
        if length is None:
            length = self._body_length()
            if self._chunked is not None:
                return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_json_value(self) -> Any:
        raw = self._read_body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise EmulatorError(400, f"Invalid JSON body: {error}") from error

    def _read_json(self) -> dict[str, Any]:
        value = self._read_json_value()
        if not isinstance(value, dict):
            raise EmulatorError(400, "The request body must be a JSON object.")
        return value

    # Answers ------------------------------------------------------------------------------------

    def _send_json(self, status: int, value: dict[str, Any], record: RequestRecord, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(value).encode("utf-8"), record, headers=headers, content_type="application/json")

    def _send_bytes(
        self, status: int, data: bytes, record: RequestRecord, *, headers: dict[str, str] | None = None, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        record.status = status


class _RateLimited(EmulatorError):
    """HTTP 429 with a Retry-After header."""

    def __init__(self, retry_after: float):
        super().__init__(429, "Too many requests.")
        self.retry_after = retry_after
